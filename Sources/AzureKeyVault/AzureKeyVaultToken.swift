public import CloudKMS
public import CMKCore
import Foundation
public import KSI
import NIOConcurrencyHelpers
import NIOHTTP1

/// Azure Key Vault or Managed HSM as a token: REST `wrapkey` / `unwrapkey` (RSA-OAEP-256 with
/// RSA keys, A256KW with a Managed HSM's `oct-HSM` keys), key URIs with or without a version,
/// OAuth2 client-credentials tokens from a configurable endpoint. Neither algorithm takes
/// associated data, so here the registry's sealed record alone binds a blob to its tenant and
/// L2Ref. The blob's mechanism records the key version that wrapped it (`RSA-OAEP-256/<version>`),
/// so unwraps keep working after the key is rotated.
public final class AzureKeyVaultToken: ContextBindingKeystore, VaultBound, Sendable {
    public struct Configuration: Sendable, Codable, Equatable {
        /// `https://<name>.vault.azure.net` or `https://<name>.managedhsm.azure.net`.
        public var vault: String
        /// The Entra ID tenant of the application.
        public var tenantID: String
        public var clientID: String
        /// A file holding the client secret; when absent, `AZURE_CLIENT_SECRET`.
        public var clientSecretFile: String?
        /// `https://login.microsoftonline.com` unless set.
        public var authority: String?
        public var apiVersion: String?
        /// A Managed HSM (A256KW with oct-HSM keys) rather than a vault (RSA-OAEP-256); by
        /// default, whether the host is `*.managedhsm.azure.net`.
        public var managedHSM: Bool?
        public var timeoutMilliseconds: Int?
        public var maxAttempts: Int?

        public init(vault: String, tenantID: String, clientID: String, clientSecretFile: String? = nil, authority: String? = nil,
                    apiVersion: String? = nil, managedHSM: Bool? = nil, timeoutMilliseconds: Int? = nil, maxAttempts: Int? = nil) {
            self.managedHSM = managedHSM
            self.vault = vault
            self.tenantID = tenantID
            self.clientID = clientID
            self.clientSecretFile = clientSecretFile
            self.authority = authority
            self.apiVersion = apiVersion
            self.timeoutMilliseconds = timeoutMilliseconds
            self.maxAttempts = maxAttempts
        }
    }

    public let name: String
    public var provider: Provider { .azureKeyVault }
    public let configuration: Configuration
    public let vault: String
    let authority: String
    let apiVersion: String
    let transport: HTTPTransport
    let accessToken: BearerCache
    let health = KeystoreHealth()
    /// The time the token cache and the key's `exp` and `nbf` are read against.
    let clock: any WallClock

    public init(name: String, configuration: Configuration, clock: any WallClock = SystemWallClock()) throws {
        self.clock = clock
        accessToken = BearerCache(clock: clock)
        self.name = name
        self.configuration = configuration
        let vaultURL = try checkedEndpoint(configuration.vault, what: "the vault URL")
        // The same normal form as key URIs: scheme://host[:port], lower-case host.
        vault = try AzureKeyURI(parsing: vaultURL + "/keys/x").vault
        authority = try checkedEndpoint(configuration.authority ?? "https://login.microsoftonline.com", what: "the token authority")
        apiVersion = configuration.apiVersion ?? "7.4"
        guard configuration.tenantID.range(of: #"^[A-Za-z0-9.-]{1,100}$"#, options: .regularExpression) != nil,
              configuration.clientID.range(of: #"^[A-Za-z0-9-]{1,100}$"#, options: .regularExpression) != nil else {
            throw KeystoreError(.invalidInput, "tenantID and clientID must be ids (letters, digits, '-')")
        }
        transport = try HTTPTransport(provider: .azureKeyVault, timeoutMilliseconds: configuration.timeoutMilliseconds, maxAttempts: configuration.maxAttempts)
        _ = try clientSecret()
    }

    func clientSecret() throws -> String {
        try (configuration.clientSecretFile.map(SecretSource.file) ?? .environment("AZURE_CLIENT_SECRET")).read()
    }

    var isManagedHSM: Bool { configuration.managedHSM ?? vault.contains(".managedhsm.") }

    // MARK: OAuth2 (client credentials)

    func bearer() async throws -> String {
        try await accessToken.token {
            let resource = isManagedHSM ? "https://managedhsm.azure.net/.default" : "https://vault.azure.net/.default"
            func encoded(_ text: String) -> String {
                text.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? text
            }
            let form = "grant_type=client_credentials&client_id=\(encoded(configuration.clientID))&client_secret=\(encoded(try clientSecret()))&scope=\(encoded(resource))"
            let url = "\(authority)/\(configuration.tenantID)/oauth2/v2.0/token"
            let response = try await transport.send("the OAuth2 token request", throttled: { $0.status == 429 }) {
                CloudRequest(method: .POST, url: url, headers: [("Content-Type", "application/x-www-form-urlencoded")], body: Array(form.utf8))
            }
            guard response.status == 200, let json = response.json, let token = json["access_token"] as? String else {
                let code = (response.json?["error"] as? String) ?? "HTTP \(response.status)"
                let reason = code == "invalid_client" ? "the client secret is wrong or expired" : code == "unauthorized_client" ? "the application is not known in this tenant" : code
                throw KeystoreError(.permissionDenied, "Entra ID refused the application \(configuration.clientID): \(reason)", detail: "token endpoint: HTTP \(response.status) \(code)")
            }
            return (token, (json["expires_in"] as? Int) ?? 3600)
        }
    }

    // MARK: Token

    public func status() async -> TokenStatus {
        health.status(name: name, provider: .azureKeyVault, credentials: { _ = try clientSecret() }, label: vault, manufacturer: "Microsoft Azure",
                      model: isManagedHSM ? "Managed HSM" : "Key Vault", mechanisms: [isManagedHSM ? "A256KW" : "RSA-OAEP-256"])
    }

    func keyURI(_ key: KeyReference) throws -> AzureKeyURI {
        guard case .azureKeyVault(let uri) = key else { throw KeystoreError(.invalidInput, "not an Azure Key Vault key URI: \(key)") }
        // Requests go to the configured vault only: the server's credentials never follow a
        // URI to another host.
        guard uri.vault == vault else { throw KeystoreError(.invalidInput, "the key URI names \(uri.vault), but keystore \(name) is the vault \(vault)") }
        return uri
    }

    func path(_ uri: AzureKeyURI, version: String?) -> String {
        "\(vault)/keys/\(uri.name)" + ((version ?? uri.version).map { "/\($0)" } ?? "")
    }

    public func wrap(_ key: SecretBytes, with kek: KeyReference) async throws -> WrappedKey {
        let uri = try keyURI(kek)
        let algorithm = isManagedHSM ? "A256KW" : "RSA-OAEP-256"
        let value = key.withUnsafeBytes { Data($0).base64URLEncoded }
        // Wraps name the version: the key's current one when the URI has none.
        let version: String
        if let given = uri.version { version = given } else { version = try await currentVersion(uri) }
        let answer = try await call("wrapkey", path(uri, version: version) + "/wrapkey", ["alg": algorithm, "value": value])
        guard let blob = (answer["value"] as? String).flatMap({ Data(base64URLEncoded: $0) }), let kid = answer["kid"] as? String,
              let version = kid.split(separator: "/").last.map(String.init), version.range(of: #"^[0-9a-f]{32}$"#, options: .regularExpression) != nil else {
            throw KeystoreError(.internal, "Key Vault answered wrapkey without a value or a versioned kid")
        }
        return WrappedKey(mechanism: "\(algorithm)/\(version)", blob: Array(blob))
    }

    func currentVersion(_ uri: AzureKeyURI) async throws -> String {
        let bundle = try await call("get", path(uri, version: nil), nil)
        guard let kid = (bundle["key"] as? [String: Any])?["kid"] as? String, let version = kid.split(separator: "/").last.map(String.init),
              version.range(of: #"^[0-9a-f]{32}$"#, options: .regularExpression) != nil else {
            throw KeystoreError(.internal, "Key Vault answered without a versioned kid for \(uri.name)")
        }
        return version
    }

    public func unwrap(_ wrapped: WrappedKey, with kek: KeyReference) async throws -> SecretBytes {
        let uri = try keyURI(kek)
        let parts = wrapped.mechanism.split(separator: "/").map(String.init)
        guard parts.count == 2, ["RSA-OAEP-256", "A256KW"].contains(parts[0]), parts[1].range(of: #"^[0-9a-f]{32}$"#, options: .regularExpression) != nil else {
            throw KeystoreError(.invalidInput, "this blob was wrapped with \(wrapped.mechanism), not by Key Vault")
        }
        let answer = try await call("unwrapkey", path(uri, version: parts[1]) + "/unwrapkey",
                                    ["alg": parts[0], "value": Data(wrapped.blob).base64URLEncoded])
        guard let text = answer["value"] as? String, let data = Data(base64URLEncoded: text) else {
            throw KeystoreError(.internal, "Key Vault answered unwrapkey without a value")
        }
        return try SecretBytes.decodingBase64(data.base64EncodedString(), what: "value")
    }

    /// Key Vault cannot make a data key and return it wrapped: the L2 is drawn here into wiped
    /// memory and wrapped (the caller unwraps it once for the IVK binding).
    public func generateWrappedKey(with kek: KeyReference, context: BindingContext) async throws -> WrappedKey {
        try await wrap(SecretBytes.random(count: 32), with: kek)
    }

    public func unwrap(_ wrapped: WrappedKey, with kek: KeyReference, context: BindingContext) async throws -> SecretBytes {
        try await unwrap(wrapped, with: kek)
    }

    /// Key Vault's algorithms take no associated data; the registry's sealed record binds instead.
    public func wrap(_ key: SecretBytes, with kek: KeyReference, context: BindingContext) async throws -> WrappedKey {
        try await wrap(key, with: kek)
    }

    // MARK: Probe

    /// The key (enabled, not expired, wrapKey and unwrapKey allowed, an RSA or oct-HSM key),
    /// then a wrapkey/unwrapkey round trip of a random test key. Nothing is created in the vault.
    public func probe(_ key: KeyReference) async -> ProbeReport {
        var probe = ProbeBuilder(key: key.description, token: name, provider: .azureKeyVault)
        let uri: AzureKeyURI
        do {
            uri = try keyURI(key)
            probe.pass("key_reference", "key \(uri.name)" + (uri.version.map { " version \($0)" } ?? " (current version)") + " in \(vault)")
        } catch { return probe.failed("key_reference", error) }
        do {
            _ = try await bearer()
            probe.pass("credentials", "an access token for application \(configuration.clientID)")
        } catch { return probe.failed("credentials", error) }
        let bundle: [String: Any]
        do {
            bundle = try await call("get", path(uri, version: nil), nil)
            probe.pass("key_found", "found \((bundle["key"] as? [String: Any])?["kid"] as? String ?? uri.description)")
        } catch { return probe.failed("key_found", error) }
        let attributes = bundle["attributes"] as? [String: Any] ?? [:]
        let jwk = bundle["key"] as? [String: Any] ?? [:]
        guard attributes["enabled"] as? Bool ?? false else {
            return probe.failed("key_state", KeystoreError(.conflict, "the key is disabled: enable it in the vault before linking it"))
        }
        if let expiry = attributes["exp"] as? Double, expiry < clock.now.timeIntervalSince1970 {
            return probe.failed("key_state", KeystoreError(.conflict, "the key expired: set a later expiry or use a new version"))
        }
        if let notBefore = attributes["nbf"] as? Double, notBefore > clock.now.timeIntervalSince1970 {
            return probe.failed("key_state", KeystoreError(.conflict, "the key is not valid yet (nbf is in the future)"))
        }
        probe.pass("key_state", "enabled, within its validity period")
        let operations = jwk["key_ops"] as? [String] ?? []
        guard operations.contains("wrapKey"), operations.contains("unwrapKey") else {
            return probe.failed("key_usage", KeystoreError(.unsupported, "the key's permitted operations are \(operations.joined(separator: ", ")); an L1 key needs wrapKey and unwrapKey"))
        }
        probe.pass("key_usage", "wrapKey and unwrapKey permitted")
        let keyType = jwk["kty"] as? String ?? "?"
        let expected = isManagedHSM ? ["oct-HSM", "oct"] : ["RSA", "RSA-HSM"]
        guard expected.contains(keyType) else {
            return probe.failed("key_type", KeystoreError(.unsupported, "the key type is \(keyType); this keystore wraps with \(isManagedHSM ? "A256KW (an oct-HSM key)" : "RSA-OAEP-256 (an RSA key)")"))
        }
        probe.pass("key_type", keyType)
        probe.mechanism = isManagedHSM ? "A256KW" : "RSA-OAEP-256"
        // RSA-OAEP-256 and A256KW take no associated data: no binding to check here.
        return await probe.roundTrip(
            wrapped: { "wrapkey \($0.mechanism) (\($0.blob.count)-byte blob)" }, unwrapped: "unwrapkey with the same key version",
            wrap: { try await self.wrap($0, with: key) }, unwrap: { try await self.unwrap($0, with: key) },
            otherBinding: nil, kms: "the vault")
    }

    // MARK: Calls

    func call(_ what: String, _ url: String, _ body: [String: Any]?) async throws -> [String: Any] {
        let token = try await bearer()
        let payload = try body.map { Array(try JSONSerialization.data(withJSONObject: $0, options: [.sortedKeys])) } ?? []
        do {
            let response = try await transport.send(what, throttled: { $0.status == 429 }) {
                // A list's nextLink comes whole, with its api-version and skip token.
                CloudRequest(method: body == nil ? .GET : .POST, url: url.contains("?") ? url : "\(url)?api-version=\(apiVersion)",
                             headers: [("Authorization", "Bearer \(token)"), ("Content-Type", "application/json")], body: payload)
            }
            guard response.status == 200 else { throw Self.error(what, response) }
            health.succeeded()
            return response.json ?? [:]
        } catch let error as KeystoreError {
            health.failed(error, keystoreWide: error.code == .unavailable || (error.detail?.contains("HTTP 401") ?? false))
            throw error
        }
    }

    /// Key Vault's error codes in words an administrator can act on.
    public static func error(_ what: String, _ response: CloudResponse) -> KeystoreError {
        let error = response.json?["error"] as? [String: Any]
        let code = error?["code"] as? String ?? ""
        let message = error?["message"] as? String ?? ""
        let inner = (error?["innererror"] as? [String: Any])?["code"] as? String ?? ""
        let detail = "\(what): HTTP \(response.status) \(code)\(inner.isEmpty ? "" : "/\(inner)")" + (message.isEmpty ? "" : ": \(message)")
        switch response.status {
        case 401:
            return KeystoreError(.permissionDenied, "Key Vault refused the access token: check the application's credentials", detail: detail)
        case 403 where what == "list":
            return KeystoreError(.permissionDenied, "the application may not list keys in this vault (access policy List, or RBAC role Key Vault Reader)", detail: detail)
        case 403:
            let operation = what == "unwrapkey" ? "unwrapKey" : what == "wrapkey" ? "wrapKey" : "get"
            return KeystoreError(.permissionDenied, "the application may not \(operation) keys in this vault (access policy or RBAC role Key Vault Crypto Service Encryption User)", detail: detail)
        case 404:
            return KeystoreError(.notFound, "the vault has no such key or key version", detail: detail)
        case 429:
            return KeystoreError(.unavailable, "Key Vault is throttling requests: try again shortly", detail: detail)
        case 400 where code == "BadParameter" && what == "unwrapkey", 400 where inner == "DecryptionFailed":
            return KeystoreError(.invalidInput, "the blob does not unwrap with this key (corrupt, or another key's)", detail: detail)
        case 400 where code == "Forbidden" || inner == "KeyDisabled" || message.lowercased().contains("disabled"):
            return KeystoreError(.conflict, "the key is disabled: enable it in the vault", detail: detail)
        case 400:
            return KeystoreError(.invalidInput, "Key Vault refused the request: \(message.isEmpty ? code : message)", detail: detail)
        case 409 where message.lowercased().contains("deleted"):
            return KeystoreError(.conflict, "the key is deleted (soft-delete): recover it first", detail: detail)
        default:
            if response.status >= 500 { return KeystoreError(.unavailable, "Key Vault failed (HTTP \(response.status)); try again", detail: detail) }
            return KeystoreError(.internal, "Key Vault answered \(what) with HTTP \(response.status) \(code)", detail: detail)
        }
    }
}
