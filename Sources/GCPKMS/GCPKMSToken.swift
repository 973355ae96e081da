public import CloudKMS
public import CMKCore
import Crypto
import _CryptoExtras
import Foundation
public import KSI
import NIOConcurrencyHelpers
import NIOHTTP1

/// GCP Cloud KMS as a token: REST v1 `:encrypt` / `:decrypt` with additional authenticated
/// data binding tenant and L2Ref, and the CRC32C integrity fields checked both ways (sent with
/// every request, verified on every answer). OAuth2 access tokens come from a service-account
/// key (a signed JWT grant, RFC 7523) at a configurable token endpoint.
public final class GCPKMSToken: ContextBindingKeystore, Sendable {
    public struct Configuration: Sendable, Codable, Equatable {
        /// Keys must be in this project.
        public var project: String
        /// `https://cloudkms.googleapis.com` unless set.
        public var endpoint: String?
        /// The service account's JSON key file; when absent, `GOOGLE_APPLICATION_CREDENTIALS`.
        public var serviceAccountKeyFile: String?
        /// Where the JWT grant is exchanged; the key file's `token_uri` unless set.
        public var tokenEndpoint: String?
        public var timeoutMilliseconds: Int?
        public var maxAttempts: Int?
        /// Where key listings look for key rings (`europe-west3`, `global`, …); when absent, every
        /// location the project has (`projects.locations.list`). Handshakes name any location.
        public var locations: [String]?

        public init(project: String, endpoint: String? = nil, serviceAccountKeyFile: String? = nil, tokenEndpoint: String? = nil,
                    timeoutMilliseconds: Int? = nil, maxAttempts: Int? = nil, locations: [String]? = nil) {
            self.project = project
            self.locations = locations
            self.endpoint = endpoint
            self.serviceAccountKeyFile = serviceAccountKeyFile
            self.tokenEndpoint = tokenEndpoint
            self.timeoutMilliseconds = timeoutMilliseconds
            self.maxAttempts = maxAttempts
        }
    }

    struct ServiceAccount {
        var email: String
        var keyID: String?
        var privateKey: _RSA.Signing.PrivateKey
        var tokenURI: String
    }

    public let name: String
    public var provider: Provider { .gcpKMS }
    public let configuration: Configuration
    let endpoint: String
    let transport: HTTPTransport
    let accessToken: BearerCache
    let health = KeystoreHealth()
    /// The time the JWT grant's `iat` and `exp` and the token cache read.
    let clock: any WallClock
    public static let mechanism = "GOOGLE_SYMMETRIC_ENCRYPTION"
    static let scope = "https://www.googleapis.com/auth/cloudkms"

    public init(name: String, configuration: Configuration, clock: any WallClock = SystemWallClock()) throws {
        self.clock = clock
        accessToken = BearerCache(clock: clock)
        guard configuration.project.range(of: #"^[a-z][a-z0-9-]{4,28}[a-z0-9]$|^[A-Za-z0-9_-]{1,63}$"#, options: .regularExpression) != nil else {
            throw KeystoreError(.invalidInput, "GCP project \"\(configuration.project)\" is not a project id")
        }
        for location in configuration.locations ?? [] where location.range(of: #"^[a-z0-9-]{1,63}$"#, options: .regularExpression) == nil {
            throw KeystoreError(.invalidInput, "GCP location \"\(location)\" is not a location id (europe-west3, global, …)")
        }
        self.name = name
        self.configuration = configuration
        endpoint = try checkedEndpoint(configuration.endpoint ?? "https://cloudkms.googleapis.com", what: "the Cloud KMS endpoint")
        transport = try HTTPTransport(provider: .gcpKMS, timeoutMilliseconds: configuration.timeoutMilliseconds, maxAttempts: configuration.maxAttempts)
        _ = try serviceAccount()
    }

    func serviceAccount() throws -> ServiceAccount {
        let source = configuration.serviceAccountKeyFile.map(SecretSource.file) ?? .environment("GOOGLE_APPLICATION_CREDENTIALS")
        let path: String
        switch source {
        case .file(let file): path = file
        case .environment: path = try source.read()
        }
        guard let data = FileManager.default.contents(atPath: path),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw KeystoreError(.invalidInput, "cannot read the service account key file \(path)")
        }
        guard json["type"] as? String == "service_account", let email = json["client_email"] as? String,
              let pem = json["private_key"] as? String else {
            throw KeystoreError(.invalidInput, "\(path) is not a service account key (type, client_email and private_key are needed)")
        }
        let key: _RSA.Signing.PrivateKey
        do { key = try _RSA.Signing.PrivateKey(pemRepresentation: pem) } catch {
            throw KeystoreError(.invalidInput, "the private key in \(path) is not an RSA key in PEM")
        }
        let tokenURI = try checkedEndpoint(configuration.tokenEndpoint ?? (json["token_uri"] as? String) ?? "https://oauth2.googleapis.com/token",
                                           what: "the OAuth2 token endpoint")
        return ServiceAccount(email: email, keyID: json["private_key_id"] as? String, privateKey: key, tokenURI: tokenURI)
    }

    // MARK: OAuth2

    /// A cached access token, renewed a minute before it expires.
    func bearer() async throws -> String {
        try await accessToken.token {
            let account = try serviceAccount()
            let now = Int(clock.now.timeIntervalSince1970)
            var header: [String: Any] = ["alg": "RS256", "typ": "JWT"]
            if let kid = account.keyID { header["kid"] = kid }
            let claims: [String: Any] = ["iss": account.email, "scope": Self.scope, "aud": account.tokenURI, "iat": now, "exp": now + 3600]
            let signingInput = try [header, claims].map { try JSONSerialization.data(withJSONObject: $0, options: [.sortedKeys]).base64URLEncoded }
                .joined(separator: ".")
            let signature = try account.privateKey.signature(for: Data(signingInput.utf8), padding: .insecurePKCS1v1_5)
            let assertion = signingInput + "." + signature.rawRepresentation.base64URLEncoded
            let form = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=\(assertion)"
            let response = try await transport.send("the OAuth2 token request", throttled: { $0.status == 429 }) {
                CloudRequest(method: .POST, url: account.tokenURI, headers: [("Content-Type", "application/x-www-form-urlencoded")], body: Array(form.utf8))
            }
            guard response.status == 200, let json = response.json, let token = json["access_token"] as? String else {
                let reason = (response.json?["error_description"] as? String) ?? (response.json?["error"] as? String) ?? "HTTP \(response.status)"
                throw KeystoreError(.permissionDenied, "the token endpoint refused the service account \(account.email): \(reason)",
                                    detail: "token endpoint: HTTP \(response.status)")
            }
            return (token, (json["expires_in"] as? Int) ?? 3600)
        }
    }

    // MARK: Token

    public func status() async -> TokenStatus {
        health.status(name: name, provider: .gcpKMS, credentials: { _ = try serviceAccount() }, label: configuration.project,
                      manufacturer: "Google Cloud", model: "Cloud KMS", mechanisms: [Self.mechanism])
    }

    func keyName(_ key: KeyReference) throws -> GCPKeyName {
        guard case .gcpKMS(let name) = key else { throw KeystoreError(.invalidInput, "not a GCP CryptoKey name: \(key)") }
        guard name.project == configuration.project else {
            throw KeystoreError(.invalidInput, "the key is in project \(name.project), but keystore \(self.name) is project \(configuration.project)")
        }
        return name
    }

    func encrypt(_ plaintext: SecretBytes, with key: KeyReference, aad: [UInt8]) async throws -> WrappedKey {
        let name = try keyName(key)
        let (text, crc) = plaintext.withUnsafeBytes { (Data($0).base64EncodedString(), CRC32C.checksum($0)) }
        var body: [String: Any] = ["plaintext": text, "plaintextCrc32c": String(crc)]
        if !aad.isEmpty {
            body["additionalAuthenticatedData"] = Data(aad).base64EncodedString()
            body["additionalAuthenticatedDataCrc32c"] = String(CRC32C.checksum(aad))
        }
        let answer = try await call("encrypt", "\(name):encrypt", body)
        guard answer["verifiedPlaintextCrc32c"] as? Bool == true, aad.isEmpty || answer["verifiedAdditionalAuthenticatedDataCrc32c"] as? Bool == true else {
            throw Self.integrity("Cloud KMS did not confirm the checksum of what it encrypted")
        }
        guard let ciphertext = (answer["ciphertext"] as? String).flatMap({ Data(base64Encoded: $0) }) else {
            throw KeystoreError(.internal, "Cloud KMS answered encrypt without a ciphertext")
        }
        guard (answer["ciphertextCrc32c"] as? String).flatMap(UInt32.init) == CRC32C.checksum(ciphertext) else {
            throw Self.integrity("the ciphertext's CRC32C does not match the ciphertext received")
        }
        return WrappedKey(mechanism: Self.mechanism, blob: Array(ciphertext))
    }

    func decrypt(_ wrapped: WrappedKey, with key: KeyReference, aad: [UInt8]) async throws -> SecretBytes {
        guard wrapped.mechanism == Self.mechanism else {
            throw KeystoreError(.invalidInput, "this blob was wrapped with \(wrapped.mechanism), not by Cloud KMS")
        }
        let name = try keyName(key)
        var body: [String: Any] = ["ciphertext": Data(wrapped.blob).base64EncodedString(), "ciphertextCrc32c": String(CRC32C.checksum(wrapped.blob))]
        if !aad.isEmpty {
            body["additionalAuthenticatedData"] = Data(aad).base64EncodedString()
            body["additionalAuthenticatedDataCrc32c"] = String(CRC32C.checksum(aad))
        }
        let answer = try await call("decrypt", "\(name):decrypt", body)
        guard let text = answer["plaintext"] as? String else { throw KeystoreError(.internal, "Cloud KMS answered decrypt without plaintext") }
        let plaintext = try SecretBytes.decodingBase64(text, what: "plaintext")
        guard (answer["plaintextCrc32c"] as? String).flatMap(UInt32.init) == plaintext.withUnsafeBytes({ CRC32C.checksum($0) }) else {
            throw Self.integrity("the plaintext's CRC32C does not match the plaintext received")
        }
        return plaintext
    }

    static func integrity(_ what: String) -> KeystoreError {
        KeystoreError(.unavailable, "integrity check failed: \(what); the request or the answer was corrupted on the way, try again")
    }

    public func wrap(_ key: SecretBytes, with kek: KeyReference) async throws -> WrappedKey { try await encrypt(key, with: kek, aad: []) }
    public func unwrap(_ wrapped: WrappedKey, with kek: KeyReference) async throws -> SecretBytes { try await decrypt(wrapped, with: kek, aad: []) }

    /// Cloud KMS cannot make a data key: the L2 is drawn here into wiped memory, encrypted
    /// with the binding as AAD, and wiped (the caller unwraps it once for the IVK binding).
    public func generateWrappedKey(with kek: KeyReference, context: BindingContext) async throws -> WrappedKey {
        try await encrypt(SecretBytes.random(count: 32), with: kek, aad: context.additionalData)
    }

    public func unwrap(_ wrapped: WrappedKey, with kek: KeyReference, context: BindingContext) async throws -> SecretBytes {
        try await decrypt(wrapped, with: kek, aad: context.additionalData)
    }

    public func wrap(_ key: SecretBytes, with kek: KeyReference, context: BindingContext) async throws -> WrappedKey {
        try await encrypt(key, with: kek, aad: context.additionalData)
    }

    // MARK: Probe

    /// The CryptoKey (ENCRYPT_DECRYPT, primary version ENABLED, GOOGLE_SYMMETRIC_ENCRYPTION),
    /// then an encrypt/decrypt round trip of a random test key with random AAD, and a decrypt
    /// with other AAD that must fail. Nothing is created in Cloud KMS.
    public func probe(_ key: KeyReference) async -> ProbeReport {
        var probe = ProbeBuilder(key: key.description, token: name, provider: .gcpKMS)
        let keyName: GCPKeyName
        do {
            keyName = try self.keyName(key)
            probe.pass("key_reference", "CryptoKey \(keyName.cryptoKey) in key ring \(keyName.keyRing), \(keyName.location)")
        } catch { return probe.failed("key_reference", error) }
        do {
            _ = try await bearer()
            probe.pass("credentials", "an access token for the service account")
        } catch { return probe.failed("credentials", error) }
        let cryptoKey: [String: Any]
        do {
            cryptoKey = try await call("get", keyName.description, nil)
            probe.pass("key_found", "found \(keyName.description)")
        } catch { return probe.failed("key_found", error) }
        let primary = cryptoKey["primary"] as? [String: Any] ?? [:]
        let state = primary["state"] as? String ?? "none"
        guard state == "ENABLED" else {
            return probe.failed("key_state", KeystoreError(.conflict, state == "none"
                ? "the key has no primary version: set one before linking it"
                : "the key's primary version is \(state): enable it (or make an enabled version primary)"))
        }
        probe.pass("key_state", "primary version enabled")
        let purpose = cryptoKey["purpose"] as? String ?? "?"
        guard purpose == "ENCRYPT_DECRYPT" else {
            return probe.failed("key_usage", KeystoreError(.unsupported, "the key's purpose is \(purpose); an L1 key must be ENCRYPT_DECRYPT"))
        }
        probe.pass("key_usage", "ENCRYPT_DECRYPT")
        let algorithm = primary["algorithm"] as? String ?? "?"
        guard algorithm == Self.mechanism else {
            return probe.failed("key_type", KeystoreError(.unsupported, "the key's algorithm is \(algorithm); an L1 key must be GOOGLE_SYMMETRIC_ENCRYPTION"))
        }
        probe.pass("key_type", "\(algorithm), protection level \(primary["protectionLevel"] as? String ?? "?")")
        probe.mechanism = Self.mechanism
        let aad = Array("openkcm/probe|\(UUID().uuidString)".utf8)
        return await probe.roundTrip(
            wrapped: { "encrypt with AAD, CRC32C verified both ways (\($0.blob.count)-byte ciphertext)" },
            unwrapped: "decrypt with the same AAD, CRC32C verified",
            wrap: { try await self.encrypt($0, with: key, aad: aad) }, unwrap: { try await self.decrypt($0, with: key, aad: aad) },
            otherBinding: ("context", "decrypt with other AAD is refused",
                           "decrypt accepted other AAD: the binding to tenant and L2Ref would not hold",
                           { _ = try await self.decrypt($0, with: key, aad: Array("another".utf8)) }),
            kms: "Cloud KMS")
    }

    // MARK: Calls

    func call(_ what: String, _ path: String, _ body: [String: Any]?) async throws -> [String: Any] {
        let token = try await bearer()
        let payload = try body.map { Array(try JSONSerialization.data(withJSONObject: $0, options: [.sortedKeys])) } ?? []
        do {
            let response = try await transport.send(what, throttled: { $0.status == 429 || $0.status == 503 }) {
                CloudRequest(method: body == nil ? .GET : .POST, url: "\(endpoint)/v1/\(path)",
                             headers: [("Authorization", "Bearer \(token)"), ("Content-Type", "application/json")], body: payload)
            }
            guard response.status == 200 else { throw Self.error(what, response) }
            health.succeeded()
            return response.json ?? [:]
        } catch let error as KeystoreError {
            health.failed(error, keystoreWide: error.code == .unavailable || (error.code == .permissionDenied && error.reason.contains("token")))
            throw error
        }
    }

    /// Google's error statuses in words an administrator can act on.
    public static func error(_ what: String, _ response: CloudResponse) -> KeystoreError {
        let error = response.json?["error"] as? [String: Any]
        let status = error?["status"] as? String ?? ""
        let message = error?["message"] as? String ?? ""
        let detail = "\(what): HTTP \(response.status) \(status)" + (message.isEmpty ? "" : ": \(message)")
        switch (status, response.status) {
        case ("NOT_FOUND", _) where what == "list locations", (_, 404) where what == "list locations":
            return KeystoreError(.notFound, "Cloud KMS does not know this project, or the service account cannot see it", detail: detail)
        case ("NOT_FOUND", _), (_, 404):
            return KeystoreError(.notFound, "Cloud KMS has no such CryptoKey, or the service account cannot see it", detail: detail)
        case ("PERMISSION_DENIED", _), (_, 403):
            if let permission = Self.listPermissions[what] {
                return KeystoreError(.permissionDenied, "the service account lacks \(permission) in this project (grant roles/cloudkms.viewer to list keys)", detail: detail)
            }
            let permission = what == "decrypt" ? "cloudkms.cryptoKeyVersions.useToDecrypt" : what == "encrypt" ? "cloudkms.cryptoKeyVersions.useToEncrypt" : "cloudkms.cryptoKeys.get"
            return KeystoreError(.permissionDenied, "the service account lacks \(permission) on this key (grant roles/cloudkms.cryptoKeyEncrypterDecrypter)", detail: detail)
        case ("UNAUTHENTICATED", _), (_, 401):
            return KeystoreError(.permissionDenied, "Cloud KMS refused the access token: check the service account key", detail: detail)
        case ("FAILED_PRECONDITION", _):
            return KeystoreError(.conflict, "the key version's state does not allow \(what) (disabled, destroyed or scheduled for destruction)", detail: detail)
        case ("RESOURCE_EXHAUSTED", _), (_, 429):
            return KeystoreError(.unavailable, "Cloud KMS is throttling requests: try again shortly", detail: detail)
        case ("INVALID_ARGUMENT", _) where message.lowercased().contains("checksum") || message.lowercased().contains("crc32c"):
            return integrity("Cloud KMS found a checksum mismatch in the request")
        case ("INVALID_ARGUMENT", _):
            return KeystoreError(.invalidInput, what == "decrypt"
                ? "the blob does not decrypt with this key and binding (corrupt, another key's, or another tenant's)"
                : "Cloud KMS refused the request: \(message)", detail: detail)
        default:
            if response.status >= 500 { return KeystoreError(.unavailable, "Cloud KMS failed (HTTP \(response.status)); try again", detail: detail) }
            return KeystoreError(.internal, "Cloud KMS answered \(what) with HTTP \(response.status) \(status)", detail: detail)
        }
    }
}
