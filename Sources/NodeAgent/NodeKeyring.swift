import Audit
import Crypto
import Foundation
import NIOConcurrencyHelpers
import PKCS11

/// What a regional node holds: each tenant's L2, in wiped memory, under a lease; application
/// encryption under data keys derived from it; and the purge that drops a revoked link's keys
/// and signs the acknowledgement. Memory only: nothing here is ever written to disk.
public final class NodeKeyring: Sendable {
    public enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        /// The tenant's L1 link was revoked: its keys were dropped and will not come back.
        case keyRevoked(tenant: String)
        /// No key held (never unsealed, or the lease ended without renewal: fail closed).
        case keyUnavailable(tenant: String)
        /// Not a ciphertext of this format, altered, or made under another key.
        case invalidCiphertext

        public var code: String {
            switch self {
            case .keyRevoked: "key_revoked"
            case .keyUnavailable: "key_unavailable"
            case .invalidCiphertext: "invalid_ciphertext"
            }
        }

        public var description: String {
            switch self {
            case .keyRevoked(let tenant): "the L1 link of tenant \(tenant) was revoked: its keys were dropped"
            case .keyUnavailable(let tenant): "no key is held for tenant \(tenant) (not unsealed, or the lease ended)"
            case .invalidCiphertext: "the ciphertext is malformed, altered, or not made under this tenant's key"
            }
        }
    }

    struct Held {
        var l2Ref: String
        var link: String?
        var key: SecretBytes
        var leaseExpiresAt: Date
    }

    struct State {
        var held: [String: Held] = [:]
        /// Tenants whose link was revoked: refused with `key_revoked`, never re-installed.
        var revoked: Set<String> = []
    }

    public let nodeID: String
    private let signingKey: Curve25519.Signing.PrivateKey
    private let state = NIOLockedValueBox(State())
    private let now: @Sendable () -> Date

    public init(nodeID: String, signingKey: Curve25519.Signing.PrivateKey, now: @escaping @Sendable () -> Date = { Date() }) {
        self.nodeID = nodeID
        self.signingKey = signingKey
        self.now = now
    }

    /// Installs an unsealed L2 (replacing the tenant's previous one) until `leaseExpiresAt`.
    public func install(tenant: String, l2Ref: String, link: String? = nil, key: SecretBytes, leaseExpiresAt: Date) throws {
        try state.withLockedValue { state in
            guard !state.revoked.contains(tenant) else { throw Failure.keyRevoked(tenant: tenant) }
            state.held[tenant] = Held(l2Ref: l2Ref, link: link, key: key, leaseExpiresAt: leaseExpiresAt)
        }
    }

    /// Drops every key whose lease has ended; returns the tenants dropped (to log, and to tell
    /// the gateway on reconnect).
    @discardableResult
    public func expireLeases() -> [String] {
        let now = now()
        return state.withLockedValue { state in
            let ended = state.held.filter { $0.value.leaseExpiresAt <= now }.map(\.key)
            for tenant in ended { state.held[tenant] = nil }  // SecretBytes wipes on release
            return ended.sorted()
        }
    }

    /// Counts only, for the dashboard.
    public var keysHeld: Int { state.withLockedValue { $0.held.count } }

    // MARK: Application crypto

    /// Format: 0x01 ‖ salt (16) ‖ nonce (12) ‖ AES-256-GCM ciphertext ‖ tag (16). The data key
    /// is HKDF-SHA256(L2, salt, "openkcm/data-key/v1|tenant|l2Ref"): fresh per message, so no
    /// GCM nonce is ever reused under one key. The tenant and L2Ref are authenticated too.
    public func encrypt(tenant: String, _ plaintext: [UInt8]) throws -> [UInt8] {
        let (l2Ref, dataKeyMaterial) = try key(for: tenant)
        let salt = (0..<16).map { _ in UInt8.random(in: 0...255) }
        let dataKey = Self.dataKey(dataKeyMaterial, salt: salt, tenant: tenant, l2Ref: l2Ref)
        let sealed = try AES.GCM.seal(plaintext, using: dataKey, authenticating: Self.aad(tenant: tenant, l2Ref: l2Ref))
        return [0x01] + salt + Array(sealed.nonce) + Array(sealed.ciphertext) + Array(sealed.tag)
    }

    public func decrypt(tenant: String, _ ciphertext: [UInt8]) throws -> [UInt8] {
        let (l2Ref, dataKeyMaterial) = try key(for: tenant)
        guard ciphertext.count >= 1 + 16 + 12 + 16, ciphertext[0] == 0x01 else { throw Failure.invalidCiphertext }
        let salt = Array(ciphertext[1..<17])
        do {
            let box = try AES.GCM.SealedBox(nonce: AES.GCM.Nonce(data: ciphertext[17..<29]), ciphertext: ciphertext[29..<(ciphertext.count - 16)],
                                            tag: ciphertext[(ciphertext.count - 16)...])
            let dataKey = Self.dataKey(dataKeyMaterial, salt: salt, tenant: tenant, l2Ref: l2Ref)
            return Array(try AES.GCM.open(box, using: dataKey, authenticating: Self.aad(tenant: tenant, l2Ref: l2Ref)))
        } catch {
            throw Failure.invalidCiphertext
        }
    }

    private func key(for tenant: String) throws -> (String, SecretBytes) {
        try state.withLockedValue { state in
            if state.revoked.contains(tenant) { throw Failure.keyRevoked(tenant: tenant) }
            guard let held = state.held[tenant], held.leaseExpiresAt > now() else { throw Failure.keyUnavailable(tenant: tenant) }
            return (held.l2Ref, held.key)
        }
    }

    static func dataKey(_ l2: SecretBytes, salt: [UInt8], tenant: String, l2Ref: String) -> SymmetricKey {
        l2.withUnsafeBytes { bytes in
            HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: bytes), salt: salt,
                                   info: Array("openkcm/data-key/v1|\(tenant)|\(l2Ref)".utf8), outputByteCount: 32)
        }
    }

    static func aad(tenant: String, l2Ref: String) -> [UInt8] { Array("openkcm/data/v1|\(tenant)|\(l2Ref)".utf8) }

    // MARK: Purge

    /// Drops the tenant's keys for a revocation event (the buffers are wiped as they are
    /// released), refuses them from now on, and returns the signed acknowledgement statement
    /// (canonical JSON) and its signature, as `POST /node/v1/acks` takes them.
    public func purge(tenant: String, link: String, event: String) throws -> (statement: String, signature: Data) {
        let dropped = state.withLockedValue { state -> Int in
            state.revoked.insert(tenant)
            return state.held.removeValue(forKey: tenant) == nil ? 0 : 1
        }
        let statement = try JSONValue.object([
            "type": .string("openkcm-purge-ack/v1"), "event": .string(event), "link": .string(link), "node": .string(nodeID),
            "keysDropped": .integer(Int64(dropped)), "time": .string(RFC3339.format(now())),
        ]).canonicalBytes()
        return (String(decoding: statement, as: UTF8.self), try signingKey.signature(for: statement))
    }
}
