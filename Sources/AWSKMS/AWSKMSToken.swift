public import CloudKMS
public import CMKCore
import Crypto
import Foundation
public import KSI
import NIOConcurrencyHelpers
import NIOHTTP1

/// An AWS KMS key store as a token: the JSON 1.1 protocol (`X-Amz-Target: TrentService.*`)
/// signed with SigV4. Wraps are `Encrypt`, unwraps `Decrypt`, both with an encryption context
/// binding tenant and L2Ref; a new L2 comes from `GenerateDataKeyWithoutPlaintext`, so its
/// plaintext is made inside KMS and returned only wrapped.
public final class AWSKMSToken: ContextBindingKeystore, Sendable {
    public struct Configuration: Sendable, Codable, Equatable {
        public var region: String
        /// `https://kms.<region>.amazonaws.com` unless set (a VPC endpoint, or a local emulator).
        public var endpoint: String?
        /// Files holding the access key id, secret access key and optional session token; when
        /// absent, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`.
        public var accessKeyIDFile: String?
        public var secretAccessKeyFile: String?
        public var sessionTokenFile: String?
        public var timeoutMilliseconds: Int?
        public var maxAttempts: Int?

        public init(region: String, endpoint: String? = nil, accessKeyIDFile: String? = nil, secretAccessKeyFile: String? = nil,
                    sessionTokenFile: String? = nil, timeoutMilliseconds: Int? = nil, maxAttempts: Int? = nil) {
            self.region = region
            self.endpoint = endpoint
            self.accessKeyIDFile = accessKeyIDFile
            self.secretAccessKeyFile = secretAccessKeyFile
            self.sessionTokenFile = sessionTokenFile
            self.timeoutMilliseconds = timeoutMilliseconds
            self.maxAttempts = maxAttempts
        }
    }

    public let name: String
    public var provider: Provider { .awsKMS }
    public let configuration: Configuration
    let endpoint: String
    let host: String
    let transport: HTTPTransport
    let health = KeystoreHealth()
    /// The time request signatures carry (SigV4's `X-Amz-Date`).
    let clock: any WallClock
    public static let mechanism = "AWS_KMS_SYMMETRIC_DEFAULT"

    public init(name: String, configuration: Configuration, clock: any WallClock = SystemWallClock()) throws {
        self.clock = clock
        guard configuration.region.range(of: #"^[a-z]{2}(-[a-z]+)+-[0-9]$"#, options: .regularExpression) != nil else {
            throw KeystoreError(.invalidInput, "AWS region \"\(configuration.region)\" is not a region name (eu-central-1, …)")
        }
        self.name = name
        self.configuration = configuration
        endpoint = try checkedEndpoint(configuration.endpoint ?? "https://kms.\(configuration.region).amazonaws.com", what: "the AWS KMS endpoint")
        guard let components = URLComponents(string: endpoint), let host = components.host else {
            throw KeystoreError(.invalidInput, "the AWS KMS endpoint has no host")
        }
        self.host = host + (components.port.map { ":\($0)" } ?? "")
        transport = try HTTPTransport(provider: .awsKMS, timeoutMilliseconds: configuration.timeoutMilliseconds, maxAttempts: configuration.maxAttempts)
        _ = try credentials()
    }

    func credentials() throws -> SigV4Signer.Credentials {
        let id = try (configuration.accessKeyIDFile.map(SecretSource.file) ?? .environment("AWS_ACCESS_KEY_ID")).read()
        let secret = try (configuration.secretAccessKeyFile.map(SecretSource.file) ?? .environment("AWS_SECRET_ACCESS_KEY")).read()
        let token: String?
        if let file = configuration.sessionTokenFile {
            token = try SecretSource.file(file).read()
        } else if configuration.accessKeyIDFile == nil {
            token = try? SecretSource.environment("AWS_SESSION_TOKEN").read()
        } else {
            token = nil
        }
        return .init(accessKeyID: id, secretAccessKey: secret, sessionToken: token)
    }

    // MARK: Token

    public func status() async -> TokenStatus {
        health.status(name: name, provider: .awsKMS, credentials: { _ = try credentials() }, label: configuration.region,
                      manufacturer: "Amazon Web Services", model: "AWS KMS", mechanisms: [Self.mechanism])
    }

    public func wrap(_ key: SecretBytes, with kek: KeyReference, context: [String: String]) async throws -> WrappedKey {
        let plaintext = key.withUnsafeBytes { Data($0).base64EncodedString() }
        let answer = try await call("Encrypt", ["KeyId": try keyID(kek), "Plaintext": plaintext, "EncryptionContext": context])
        guard let blob = (answer["CiphertextBlob"] as? String).flatMap({ Data(base64Encoded: $0) }) else {
            throw KeystoreError(.internal, "AWS KMS answered Encrypt without a ciphertext")
        }
        return WrappedKey(mechanism: Self.mechanism, blob: Array(blob))
    }

    public func unwrap(_ wrapped: WrappedKey, with kek: KeyReference, context: [String: String]) async throws -> SecretBytes {
        guard wrapped.mechanism == Self.mechanism else {
            throw KeystoreError(.invalidInput, "this blob was wrapped with \(wrapped.mechanism), not by AWS KMS")
        }
        let reference = try awsReference(kek)
        let answer = try await call("Decrypt", ["KeyId": reference.keyID, "CiphertextBlob": Data(wrapped.blob).base64EncodedString(),
                                                "EncryptionContext": context])
        // KMS reports which key decrypted: with a key ARN, it must be that key.
        if reference.form == .keyARN, let used = answer["KeyId"] as? String, used != reference.keyID {
            throw KeystoreError(.invalidInput, "the blob was decrypted by another key (\(used)) than the one linked")
        }
        guard let text = answer["Plaintext"] as? String else { throw KeystoreError(.internal, "AWS KMS answered Decrypt without plaintext") }
        return try SecretBytes.decodingBase64(text, what: "plaintext")
    }

    public func wrap(_ key: SecretBytes, with kek: KeyReference) async throws -> WrappedKey {
        try await wrap(key, with: kek, context: [:])
    }

    public func unwrap(_ wrapped: WrappedKey, with kek: KeyReference) async throws -> SecretBytes {
        try await unwrap(wrapped, with: kek, context: [:])
    }

    public func generateWrappedKey(with kek: KeyReference, context: BindingContext) async throws -> WrappedKey {
        let answer = try await call("GenerateDataKeyWithoutPlaintext",
                                    ["KeyId": try keyID(kek), "KeySpec": "AES_256", "EncryptionContext": context.pairs])
        guard let blob = (answer["CiphertextBlob"] as? String).flatMap({ Data(base64Encoded: $0) }) else {
            throw KeystoreError(.internal, "AWS KMS answered GenerateDataKeyWithoutPlaintext without a ciphertext")
        }
        return WrappedKey(mechanism: Self.mechanism, blob: Array(blob))
    }

    public func unwrap(_ wrapped: WrappedKey, with kek: KeyReference, context: BindingContext) async throws -> SecretBytes {
        try await unwrap(wrapped, with: kek, context: context.pairs)
    }

    public func wrap(_ key: SecretBytes, with kek: KeyReference, context: BindingContext) async throws -> WrappedKey {
        try await wrap(key, with: kek, context: context.pairs)
    }

    func awsReference(_ key: KeyReference) throws -> AWSKeyReference {
        guard case .awsKMS(let reference) = key else { throw KeystoreError(.invalidInput, "not an AWS KMS key reference: \(key)") }
        if let region = reference.region, region != configuration.region {
            throw KeystoreError(.invalidInput, "the key is in \(region) but keystore \(name) talks to \(configuration.region)")
        }
        return reference
    }

    func keyID(_ key: KeyReference) throws -> String { try awsReference(key).keyID }

    // MARK: Probe

    /// DescribeKey (enabled, ENCRYPT_DECRYPT, SYMMETRIC_DEFAULT), then an Encrypt/Decrypt round
    /// trip of a random test key under a random encryption context, and a Decrypt under another
    /// context that must fail (the binding holds). Nothing is created in KMS.
    public func probe(_ key: KeyReference) async -> ProbeReport {
        var probe = ProbeBuilder(key: key.description, token: name, provider: .awsKMS)
        let reference: AWSKeyReference
        do {
            reference = try awsReference(key)
            probe.pass("key_reference", "\(reference.form.rawValue) \(reference.keyID)")
            _ = try credentials()
            probe.pass("credentials", "credentials read (access key id and secret)")
        } catch {
            return probe.failed(probe.checks.isEmpty ? "key_reference" : "credentials", error)
        }

        let metadata: [String: Any]
        do {
            let answer = try await call("DescribeKey", ["KeyId": reference.keyID])
            guard let found = answer["KeyMetadata"] as? [String: Any] else { throw KeystoreError(.internal, "DescribeKey answered without KeyMetadata") }
            metadata = found
            probe.pass("key_found", "found \(found["Arn"] as? String ?? reference.keyID)")
        } catch {
            return probe.failed("key_found", error)
        }

        let state = metadata["KeyState"] as? String ?? ((metadata["Enabled"] as? Bool ?? false) ? "Enabled" : "Disabled")
        guard state == "Enabled", metadata["Enabled"] as? Bool ?? true else {
            return probe.failed("key_state", Self.stateError(state))
        }
        probe.pass("key_state", "enabled")
        let usage = metadata["KeyUsage"] as? String ?? "?"
        guard usage == "ENCRYPT_DECRYPT" else {
            return probe.failed("key_usage", KeystoreError(.unsupported, "the key's usage is \(usage); an L1 key must be ENCRYPT_DECRYPT"))
        }
        probe.pass("key_usage", "ENCRYPT_DECRYPT")
        let spec = metadata["KeySpec"] as? String ?? metadata["CustomerMasterKeySpec"] as? String ?? "?"
        guard spec == "SYMMETRIC_DEFAULT" else {
            return probe.failed("key_type", KeystoreError(.unsupported, "the key spec is \(spec); an L1 key must be SYMMETRIC_DEFAULT (AES-256-GCM inside KMS)"))
        }
        probe.pass("key_type", "SYMMETRIC_DEFAULT")
        probe.mechanism = Self.mechanism

        let context = ["openkcm:probe": UUID().uuidString.lowercased()]
        return await probe.roundTrip(
            wrapped: { "Encrypt with an encryption context (\($0.blob.count)-byte blob)" }, unwrapped: "Decrypt with the same context",
            wrap: { try await self.wrap($0, with: key, context: context) }, unwrap: { try await self.unwrap($0, with: key, context: context) },
            otherBinding: ("context", "Decrypt with another encryption context is refused",
                           "Decrypt accepted another encryption context: the binding to tenant and L2Ref would not hold",
                           { _ = try await self.unwrap($0, with: key, context: ["openkcm:probe": "another"]) }),
            kms: "KMS")
    }

    static func stateError(_ state: String) -> KeystoreError {
        switch state {
        case "Disabled": return KeystoreError(.conflict, "the key is disabled: enable it (kms:EnableKey) before linking it")
        case "PendingDeletion": return KeystoreError(.conflict, "the key is scheduled for deletion: cancel the deletion (kms:CancelKeyDeletion) and enable it")
        case "PendingImport": return KeystoreError(.conflict, "the key has no key material yet: import it first")
        case "Unavailable": return KeystoreError(.unavailable, "the key's custom key store is disconnected: reconnect it")
        default: return KeystoreError(.conflict, "the key is in state \(state) and cannot be used")
        }
    }

    // MARK: Calls

    /// One KMS action over the JSON 1.1 protocol, signed; throttling is retried by the transport.
    func call(_ action: String, _ parameters: [String: Any]) async throws -> [String: Any] {
        let body = Array(try JSONSerialization.data(withJSONObject: parameters, options: [.sortedKeys]))
        let credentials = try credentials()
        let signer = SigV4Signer(credentials: credentials, region: configuration.region, service: "kms")
        do {
            let response = try await transport.send(action, throttled: { Self.isThrottled($0) }) {
                let signed = signer.sign(method: "POST", host: host, path: "/",
                                         headers: [("Content-Type", "application/x-amz-json-1.1"), ("X-Amz-Target", "TrentService.\(action)")],
                                         body: body, date: clock.now)
                return CloudRequest(method: .POST, url: endpoint + "/", headers: signed.headers, body: body)
            }
            guard response.status == 200 else { throw Self.error(action, response) }
            health.succeeded()
            return response.json ?? [:]
        } catch let error as KeystoreError {
            health.failed(error, keystoreWide: [.unavailable, .permissionDenied].contains(error.code) && !error.reason.contains("key policy"))
            throw error
        }
    }

    static func errorType(_ response: CloudResponse) -> (type: String, message: String) {
        if let json = response.json {
            let raw = (json["__type"] as? String) ?? (json["code"] as? String) ?? ""
            let type = raw.split(separator: "#").last.map(String.init) ?? raw
            return (type, (json["message"] as? String) ?? (json["Message"] as? String) ?? "")
        }
        // Query-protocol and emulator errors come as XML: <Code>…</Code><Message>…</Message>.
        let text = response.text
        func element(_ name: String) -> String {
            guard let open = text.range(of: "<\(name)>"), let close = text.range(of: "</\(name)>", range: open.upperBound..<text.endIndex) else { return "" }
            return String(text[open.upperBound..<close.lowerBound])
        }
        return (element("Code"), element("Message"))
    }

    static func isThrottled(_ response: CloudResponse) -> Bool {
        guard response.status == 400 || response.status == 429 || response.status == 503 else { return false }
        let type = errorType(response).type
        return ["ThrottlingException", "Throttling", "LimitExceededException", "TooManyRequestsException", "RequestLimitExceeded"].contains(type)
            || response.status == 429
    }

    /// AWS's error types in words an administrator can act on.
    public static func error(_ action: String, _ response: CloudResponse) -> KeystoreError {
        let (type, message) = errorType(response)
        let detail = "\(action): HTTP \(response.status) \(type)" + (message.isEmpty ? "" : ": \(message)")
        switch type {
        case "NotFoundException":
            return KeystoreError(.notFound, "AWS KMS has no such key in this region, or this principal cannot see it", detail: detail)
        case "AccessDeniedException", "AccessDenied":
            return KeystoreError(.permissionDenied, "the key policy or IAM policy does not allow kms:\(action) for this principal", detail: detail)
        case "DisabledException":
            return KeystoreError(.conflict, "the key is disabled: enable it (kms:EnableKey) to use it", detail: detail)
        case "KMSInvalidStateException":
            return KeystoreError(.conflict, "the key's state does not allow \(action) (pending deletion, pending import or disabled)", detail: detail)
        case "KeyUnavailableException", "CustomKeyStoreInvalidStateException":
            return KeystoreError(.unavailable, "the key is unavailable right now (its key store may be disconnected)", detail: detail)
        case "InvalidCiphertextException", "IncorrectKeyException":
            return KeystoreError(.invalidInput, "the blob does not decrypt with this key and encryption context (corrupt, another key's, or another tenant's)", detail: detail)
        case "InvalidKeyUsageException":
            return KeystoreError(.unsupported, "the key cannot \(action): its usage is not ENCRYPT_DECRYPT", detail: detail)
        case "UnrecognizedClientException", "InvalidClientTokenId":
            return KeystoreError(.permissionDenied, "AWS does not know this access key id: check the credentials", detail: detail)
        case "InvalidSignatureException", "SignatureDoesNotMatch", "IncompleteSignature":
            return KeystoreError(.permissionDenied, "AWS refused the request signature: the secret access key is wrong, or the clock is off", detail: detail)
        case "ExpiredTokenException", "ExpiredToken":
            return KeystoreError(.permissionDenied, "the AWS session token has expired: renew the credentials", detail: detail)
        case "ThrottlingException", "LimitExceededException":
            return KeystoreError(.unavailable, "AWS KMS is throttling requests: try again shortly", detail: detail)
        case "ValidationException", "InvalidArnException", "InvalidKeyIdException":
            return KeystoreError(.invalidInput, "AWS KMS refused the request: \(message.isEmpty ? type : message)", detail: detail)
        default:
            if response.status >= 500 { return KeystoreError(.unavailable, "AWS KMS failed (HTTP \(response.status)); try again", detail: detail) }
            if response.status == 403 { return KeystoreError(.permissionDenied, "AWS refused the request (HTTP 403)", detail: detail) }
            return KeystoreError(.internal, "AWS KMS answered \(action) with HTTP \(response.status) \(type)", detail: detail)
        }
    }
}
