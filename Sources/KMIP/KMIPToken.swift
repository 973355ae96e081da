public import CloudKMS
public import CMKCore
import Crypto
import Foundation
public import KSI
import NIOConcurrencyHelpers

/// A KMIP server as a token (KMIP 1.0–1.4 over mutual TLS): the L1 key is a symmetric AES key
/// on the customer's server, named `kmip:<unique identifier>`. A wrap is a KMIP Encrypt of the
/// L2 under it, an unwrap a KMIP Decrypt; the key's State is read before each, and a key that
/// is not Active (the owner revoked, deactivated or destroyed it) is refused, whatever the
/// server would still allow (KMIP permits Decrypt with a Deactivated key): the owner's
/// revocation at their server is their kill-switch, and the gateway fails closed on it (D111).
///
/// Two constructions, recorded in `WrappedKey.mechanism` (D110):
/// - `KMIP_AES_GCM`: AES-GCM with a 16-byte tag and the binding as additional data, where the
///   server returns an Authenticated Encryption Tag (KMIP 1.4); blob = IV(12) ‖ tag(16) ‖ C.
/// - `KMIP_AES_CBC_PAD_SHA256`: where the server has no authenticated mode (KMIP before 1.4,
///   or a server that answers GCM without a tag), AES-CBC with PKCS#5 padding under a fresh random IV of
///   `L2 ‖ SHA-256(domain ‖ binding ‖ L2)`, the digest checked after Decrypt; blob = IV(16) ‖ C.
public final class KMIPToken: ContextBindingKeystore, Sendable {
    public struct Configuration: Sendable, Codable, Equatable {
        public var host: String
        /// 5696 (KMIP's IANA port) unless set.
        public var port: Int?
        /// The name the server's certificate must carry (host when absent).
        public var serverName: String?
        /// The CA bundle (PEM) the server's certificate must chain to.
        public var caFile: String
        /// This gateway's client certificate chain (PEM) and its private key (PEM, unencrypted, mode 0600).
        public var clientCertificateFile: String
        public var clientKeyFile: String
        /// `"1.0"`…`"1.4"`; when absent, the highest the server offers (Discover Versions).
        public var protocolVersion: String?
        public var connectTimeoutMilliseconds: Int?
        public var requestTimeoutMilliseconds: Int?

        public init(host: String, port: Int? = nil, serverName: String? = nil, caFile: String, clientCertificateFile: String, clientKeyFile: String,
                    protocolVersion: String? = nil, connectTimeoutMilliseconds: Int? = nil, requestTimeoutMilliseconds: Int? = nil) {
            (self.host, self.port, self.serverName, self.caFile) = (host, port, serverName, caFile)
            (self.clientCertificateFile, self.clientKeyFile, self.protocolVersion) = (clientCertificateFile, clientKeyFile, protocolVersion)
            (self.connectTimeoutMilliseconds, self.requestTimeoutMilliseconds) = (connectTimeoutMilliseconds, requestTimeoutMilliseconds)
        }
    }

    /// How a blob was made (the `WrappedKey.mechanism`).
    public enum Construction: String, Sendable, CaseIterable {
        case gcm = "KMIP_AES_GCM"
        case cbcDigest = "KMIP_AES_CBC_PAD_SHA256"
    }

    public let name: String
    public var provider: Provider { .kmip }
    public let configuration: Configuration
    public let client: KMIPClient
    let health = KeystoreHealth()
    let configuredVersion: KMIP.ProtocolVersion?
    /// The version in use: the configured one, or the one Discover Versions chose (once).
    let negotiated = NIOLockedValueBox<KMIP.ProtocolVersion?>(nil)
    /// The construction new wraps use, found once per token (GCM only if the server tags it).
    let construction = NIOLockedValueBox<Construction?>(nil)

    public init(name: String, configuration: Configuration) throws {
        self.name = name
        self.configuration = configuration
        let host = configuration.host.trimmingCharacters(in: .whitespaces)
        guard !host.isEmpty, host.count <= 253, !host.contains("/"), !host.contains(" ") else {
            throw KeystoreError(.invalidInput, "keystore \(name): the KMIP host \"\(configuration.host)\" is not a host name or address")
        }
        let port = configuration.port ?? 5696
        guard (1...65535).contains(port) else { throw KeystoreError(.invalidInput, "keystore \(name): the KMIP port \(port) is not 1-65535") }
        if let text = configuration.protocolVersion {
            guard let version = KMIP.ProtocolVersion(text: text), KMIP.ProtocolVersion.supported.contains(version) else {
                throw KeystoreError(.unsupported, "keystore \(name): KMIP protocol version \"\(text)\" is not one this driver speaks "
                                    + "(\(KMIP.ProtocolVersion.supported.reversed().map(\.description).joined(separator: ", ")); KMIP 2.0 is not built: Docs/KMIP.md)")
            }
            configuredVersion = version
        } else {
            configuredVersion = nil
        }
        func milliseconds(_ value: Int?, _ fallback: Int, _ what: String) throws -> Duration {
            let value = value ?? fallback
            guard (1...600_000).contains(value) else { throw KeystoreError(.invalidInput, "keystore \(name): \(what) must be 1-600000 ms") }
            return .milliseconds(value)
        }
        let endpoint = KMIPClient.Endpoint(host: host, port: port, serverName: configuration.serverName,
                                           connectTimeout: try milliseconds(configuration.connectTimeoutMilliseconds, 5000, "connectTimeoutMilliseconds"),
                                           requestTimeout: try milliseconds(configuration.requestTimeoutMilliseconds, 10000, "requestTimeoutMilliseconds"))
        do {
            client = try KMIPClient(endpoint: endpoint, caFile: configuration.caFile, certificateFile: configuration.clientCertificateFile,
                                    keyFile: configuration.clientKeyFile)
        } catch let error as KMIPError {
            throw KeystoreError(.invalidInput, "keystore \(name): \(error.message)")
        }
    }

    var server: String { client.endpoint.description }

    // MARK: Token

    public func status() async -> TokenStatus {
        health.status(name: name, provider: .kmip, credentials: {}, label: server, manufacturer: "KMIP",
                      model: "KMIP \(negotiated.withLockedValue { $0 } ?? configuredVersion ?? .init(1, 4))",
                      mechanisms: construction.withLockedValue { $0 }.map { [$0.rawValue] } ?? Construction.allCases.map(\.rawValue))
    }

    public func wrap(_ key: SecretBytes, with kek: KeyReference) async throws -> WrappedKey {
        try await wrap(key, with: kek, additionalData: [])
    }

    public func unwrap(_ wrapped: WrappedKey, with kek: KeyReference) async throws -> SecretBytes {
        try await unwrap(wrapped, with: kek, additionalData: [])
    }

    /// A new L2 is made here, in wiped memory, and wrapped at once: KMIP offers no Encrypt of
    /// a server-made key, and Create+Get-wrapped would leave objects on the customer's server
    /// (D112). Its plaintext reaches the gateway anyway, as with every provider (the active
    /// binding is made from it).
    public func generateWrappedKey(with kek: KeyReference, context: BindingContext) async throws -> WrappedKey {
        try await wrap(SecretBytes.random(count: 32), with: kek, additionalData: context.additionalData)
    }

    public func wrap(_ key: SecretBytes, with kek: KeyReference, context: BindingContext) async throws -> WrappedKey {
        try await wrap(key, with: kek, additionalData: context.additionalData)
    }

    public func unwrap(_ wrapped: WrappedKey, with kek: KeyReference, context: BindingContext) async throws -> SecretBytes {
        try await unwrap(wrapped, with: kek, additionalData: context.additionalData)
    }

    /// KMIP Revoke, as the key's owner would (the tests do; the gateway's own kill-switch
    /// revokes its link and never touches the customer's key). `keyCompromise` makes the key
    /// Compromised, anything else Deactivated.
    public func revoke(_ key: KeyReference, reason: KMIP.RevocationReasonCode = .cessationOfOperation) async throws {
        let id = try identifier(key)
        try await kmip { try await client.revoke(id, reason: reason, message: "revoked through OpenKCM CMK keystore \(name)", version: $0) }
    }

    // MARK: The constructions

    static let cbcDomain = Array("openkcm/kmip-cbc-pad-sha256/v1".utf8)
    static let gcmDomain = Array("openkcm/kmip-gcm/v1|".utf8)

    /// The CBC construction's digest: SHA-256 over a domain, the binding's length and bytes,
    /// and the key. Keyed by nothing but the plaintext itself, which an attacker without the
    /// L1 key does not know (D110 says what this does and does not protect).
    static func digest(_ key: SecretBytes, additionalData: [UInt8]) -> [UInt8] {
        var hash = SHA256()
        hash.update(data: cbcDomain)
        var length = UInt32(additionalData.count).bigEndian
        withUnsafeBytes(of: &length) { hash.update(bufferPointer: $0) }
        hash.update(data: additionalData)
        key.withUnsafeBytes { hash.update(bufferPointer: $0) }
        return Array(hash.finalize())
    }

    func wrap(_ key: SecretBytes, with kek: KeyReference, additionalData: [UInt8]) async throws -> WrappedKey {
        guard (16...64).contains(key.count) else { throw KeystoreError(.invalidInput, "a wrapped key must be 16 to 64 bytes, not \(key.count)") }
        let id = try identifier(kek)
        return try await kmip { version in
            try await requireActive(id, version: version)
            switch try await construction(for: id, version: version) {
            case .gcm:
                let iv = Self.random(12)
                let out = try await client.encrypt(id, key, parameters: .gcm, iv: iv, aad: Self.gcmDomain + additionalData, version: version)
                guard let tag = out.tag, tag.count == 16, out.data.count == key.count else {
                    throw KMIPError(.malformed, "the server answered a GCM Encrypt without a 16-byte tag")
                }
                return WrappedKey(mechanism: Construction.gcm.rawValue, blob: iv + tag + out.data)
            case .cbcDigest:
                let payload = SecretBytes(count: key.count + 32)
                let digest = Self.digest(key, additionalData: additionalData)
                payload.withUnsafeMutableBytes { out in
                    key.withUnsafeBytes { out.copyMemory(from: $0) }
                    for (index, byte) in digest.enumerated() { out[key.count + index] = byte }
                }
                let iv = Self.random(16)
                let out = try await client.encrypt(id, payload, parameters: .cbcPad, iv: iv, aad: nil, version: version)
                guard out.data.count == (payload.count / 16 + 1) * 16 else {
                    throw KMIPError(.malformed, "the server answered a CBC Encrypt with \(out.data.count) bytes, not the padded length")
                }
                return WrappedKey(mechanism: Construction.cbcDigest.rawValue, blob: iv + out.data)
            }
        }
    }

    func unwrap(_ wrapped: WrappedKey, with kek: KeyReference, additionalData: [UInt8]) async throws -> SecretBytes {
        guard let construction = Construction(rawValue: wrapped.mechanism) else {
            throw KeystoreError(.invalidInput, "this blob was wrapped with \(wrapped.mechanism), not by a KMIP keystore")
        }
        let id = try identifier(kek)
        let blob = wrapped.blob
        switch construction {
        case .gcm:
            guard blob.count >= 12 + 16 + 16, blob.count <= 12 + 16 + 64 else { throw Self.tampered }
        case .cbcDigest:
            guard blob.count >= 16 + 48, blob.count <= 16 + 112, blob.count % 16 == 0 else { throw Self.tampered }
        }
        return try await kmip { version in
            try await requireActive(id, version: version)
            switch construction {
            case .gcm:
                do {
                    return try await client.decrypt(id, Array(blob[28...]), parameters: .gcm, iv: Array(blob[0..<12]), aad: Self.gcmDomain + additionalData,
                                                    tag: Array(blob[12..<28]), version: version)
                } catch let error as KMIPError where Self.isBadData(error) {
                    throw Self.tampered
                }
            case .cbcDigest:
                let payload: SecretBytes
                do {
                    payload = try await client.decrypt(id, Array(blob[16...]), parameters: .cbcPad, iv: Array(blob[0..<16]), aad: nil, tag: nil, version: version)
                } catch let error as KMIPError where Self.isBadData(error) {
                    throw Self.tampered
                }
                guard payload.count > 32 else { throw Self.tampered }
                let key = SecretBytes(count: payload.count - 32)
                let found = SecretBytes(count: 32)
                payload.withUnsafeBytes { bytes in
                    key.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<(payload.count - 32)])) }
                    found.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[(payload.count - 32)...])) }
                }
                guard found.isEqual(to: SecretBytes(copying: Self.digest(key, additionalData: additionalData))) else { throw Self.tampered }
                return key
            }
        }
    }

    static let tampered = KeystoreError(.invalidInput, "the blob was altered, or was wrapped by another key or for another tenant or L2 key: it does not unwrap")

    /// A Decrypt that failed on the data (a bad padding or tag), not on the key's state or the
    /// connection: Cryptographic Failure, Invalid Field or Invalid Message, and General Failure,
    /// which is what PyKMIP answers for a bad padding and a bad GCM tag. Reached only after the
    /// key's State was read Active just before, so a General Failure here is the blob's (D110).
    static func isBadData(_ error: KMIPError) -> Bool {
        if case .operationFailed(_, let reason) = error.kind {
            return [.cryptographicFailure, .invalidField, .invalidMessage, .generalFailure].contains(reason)
        }
        return false
    }

    static func random(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in generator.next() }
    }

    /// GCM if the server returns a tag for it and opens its own output (KMIP 1.4+), else CBC
    /// with the digest; found with a random test value, once per token.
    func construction(for id: String, version: KMIP.ProtocolVersion) async throws -> Construction {
        if let known = construction.withLockedValue({ $0 }) { return known }
        var found = Construction.cbcDigest
        if version >= .init(1, 4) {
            let test = SecretBytes.random(count: 32)
            let iv = Self.random(12)
            let aad = Self.gcmDomain + Array("probe".utf8)
            do {
                let out = try await client.encrypt(id, test, parameters: .gcm, iv: iv, aad: aad, version: version)
                if let tag = out.tag, tag.count == 16, out.data.count == 32,
                   try await client.decrypt(id, out.data, parameters: .gcm, iv: iv, aad: aad, tag: tag, version: version).isEqual(to: test) {
                    found = .gcm
                }
            } catch let error as KMIPError where error.isOperationFailure {
                // The server does not do GCM with this key: CBC it is.
            }
        }
        construction.withLockedValue { $0 = found }
        return found
    }

    // MARK: Calls

    func identifier(_ key: KeyReference) throws -> String {
        guard case .kmip(let reference) = key else { throw KeystoreError(.invalidInput, "not a KMIP key reference (kmip:<unique identifier>): \(key)") }
        return reference.uniqueIdentifier
    }

    /// The protocol version: configured, or the highest both speak (Discover Versions, once).
    func version() async throws -> KMIP.ProtocolVersion {
        if let configuredVersion { return configuredVersion }
        if let known = negotiated.withLockedValue({ $0 }) { return known }
        let offered: [KMIP.ProtocolVersion]
        do {
            offered = try await client.discoverVersions(KMIP.ProtocolVersion.supported)
        } catch let error as KMIPError where error.kind == .operationFailed(.discoverVersions, .operationNotSupported) {
            offered = [.init(1, 0)]  // A KMIP 1.0 server has no Discover Versions.
        }
        guard let chosen = offered.first(where: { KMIP.ProtocolVersion.supported.contains($0) }) else {
            throw KeystoreError(.unsupported, "the KMIP server \(server) speaks none of KMIP \(KMIP.ProtocolVersion.supported.map(\.description).joined(separator: ", ")) "
                                + "(it offers \(offered.map(\.description).joined(separator: ", "))); KMIP 2.0 is not built: Docs/KMIP.md")
        }
        negotiated.withLockedValue { $0 = chosen }
        return chosen
    }

    /// Runs KMIP calls, translating their errors once and keeping the keystore's health.
    func kmip<T>(_ body: (KMIP.ProtocolVersion) async throws -> T) async throws -> T {
        do {
            let result = try await body(try await version())
            health.succeeded()
            return result
        } catch let error as KMIPError {
            let translated = KeystoreError(error, server: server)
            let keystoreWide: Bool
            switch error.kind {
            case .operationFailed(_, let reason): keystoreWide = reason == .authenticationNotSuccessful
            case .configuration: keystoreWide = false
            default: keystoreWide = true
            }
            health.failed(translated, keystoreWide: keystoreWide)
            throw translated
        } catch let error as KeystoreError {
            if error.code != .conflict && error.code != .invalidInput { health.succeeded() }
            throw error
        }
    }

    static let stateAttributes = ["Object Type", "Cryptographic Algorithm", "Cryptographic Length", "Cryptographic Usage Mask", "State", "Name"]

    /// Refuses a key that is not Active, in the owner's terms.
    func requireActive(_ id: String, version: KMIP.ProtocolVersion) async throws {
        let attributes = try await client.attributes(of: id, ["State"], version: version)
        guard let raw = attributes["State"]?.enumeration else { throw KMIPError(.malformed, "Get Attributes answered without the key's State") }
        let state = KMIP.State(rawValue: raw)
        guard state == .active else { throw Self.stateError(state, raw: raw) }
    }

    static func stateError(_ state: KMIP.State?, raw: UInt32) -> KeystoreError {
        switch state {
        case .preActive?:
            return KeystoreError(.conflict, "the key is Pre-Active at the KMIP server: its owner must activate it (KMIP Activate) before it is used")
        case .deactivated?:
            return KeystoreError(.conflict, "the key is Deactivated at the KMIP server (its owner revoked it): the gateway refuses to use it")
        case .compromised?:
            return KeystoreError(.conflict, "the key is Compromised at the KMIP server (its owner revoked it as compromised): the gateway refuses to use it")
        case .destroyed?, .destroyedCompromised?:
            return KeystoreError(.conflict, "the key was destroyed at the KMIP server: nothing it wrapped can be unwrapped again")
        case .active?, nil:
            return KeystoreError(.conflict, "the key is in KMIP state \(raw), not Active: the gateway refuses to use it")
        }
    }
}
