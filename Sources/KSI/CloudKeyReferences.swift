import Foundation

/// An AWS KMS key as a handshake names it: a key ARN, an alias ARN, `alias/NAME` or a key id
/// (a UUID, or `mrk-…` for a multi-Region key). KMS accepts each form as `KeyId`.
public struct AWSKeyReference: Sendable, Hashable, CustomStringConvertible {
    public enum Form: String, Sendable, Hashable {
        case keyARN = "key ARN"
        case aliasARN = "alias ARN"
        case aliasName = "alias"
        case keyID = "key id"
    }

    public let form: Form
    /// The text KMS receives as `KeyId`.
    public let keyID: String
    /// From an ARN: where the key lives.
    public let region: String?
    public let account: String?

    public var description: String { keyID }

    static let keyIDPattern = #"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})$"#
    static let aliasPattern = #"^alias/[A-Za-z0-9/_-]{1,250}$"#

    static func looksLikeOne(_ text: String) -> Bool {
        text.hasPrefix("arn:") || text.hasPrefix("alias/") || text.range(of: keyIDPattern, options: .regularExpression) != nil
    }

    public init(parsing text: String) throws {
        guard text.utf8.count <= 2048 else { throw KeystoreError(.invalidInput, "the AWS key reference is too long") }
        if text.hasPrefix("arn:") {
            // arn:PARTITION:kms:REGION:ACCOUNT:key/ID or …:alias/NAME
            let parts = text.split(separator: ":", maxSplits: 5, omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 6, ["aws", "aws-cn", "aws-us-gov"].contains(parts[1]), parts[2] == "kms",
                  parts[3].range(of: #"^[a-z]{2}(-[a-z]+)+-[0-9]$"#, options: .regularExpression) != nil,
                  parts[4].range(of: #"^[0-9]{12}$"#, options: .regularExpression) != nil else {
                throw KeystoreError(.invalidInput, "malformed AWS KMS ARN: expected arn:aws:kms:<region>:<12-digit account>:key/<key id> or …:alias/<name>")
            }
            let resource = parts[5]
            if resource.hasPrefix("key/"), String(resource.dropFirst(4)).range(of: Self.keyIDPattern, options: .regularExpression) != nil {
                form = .keyARN
            } else if resource.range(of: Self.aliasPattern, options: .regularExpression) != nil {
                form = .aliasARN
            } else {
                throw KeystoreError(.invalidInput, "malformed AWS KMS ARN: the resource must be key/<key id> or alias/<name>")
            }
            region = parts[3]
            account = parts[4]
        } else if text.hasPrefix("alias/") {
            guard text.range(of: Self.aliasPattern, options: .regularExpression) != nil else {
                throw KeystoreError(.invalidInput, "malformed AWS KMS alias: alias/ then 1-250 of A-Z a-z 0-9 / _ -")
            }
            form = .aliasName
            region = nil
            account = nil
        } else if text.range(of: Self.keyIDPattern, options: .regularExpression) != nil {
            form = .keyID
            region = nil
            account = nil
        } else {
            throw KeystoreError(.invalidInput, "malformed AWS KMS key reference: expected a key ARN, alias ARN, alias/<name> or key id")
        }
        keyID = text
    }
}

/// A GCP Cloud KMS CryptoKey: `projects/P/locations/L/keyRings/R/cryptoKeys/K`. Encrypt uses
/// its primary version; decrypt finds the version from the ciphertext.
public struct GCPKeyName: Sendable, Hashable, CustomStringConvertible {
    public let project: String
    public let location: String
    public let keyRing: String
    public let cryptoKey: String

    public var description: String { "projects/\(project)/locations/\(location)/keyRings/\(keyRing)/cryptoKeys/\(cryptoKey)" }

    public init(parsing text: String) throws {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        let segment = #"^[A-Za-z0-9_-]{1,63}$"#
        if parts.count >= 10, parts[8] == "cryptoKeyVersions" {
            throw KeystoreError(.invalidInput, "name the CryptoKey, not one of its versions: encryption uses the primary version (drop /cryptoKeyVersions/…)")
        }
        guard parts.count == 8, parts[0] == "projects", parts[2] == "locations", parts[4] == "keyRings", parts[6] == "cryptoKeys",
              [parts[1], parts[3], parts[5], parts[7]].allSatisfy({ $0.range(of: segment, options: .regularExpression) != nil }) else {
            throw KeystoreError(.invalidInput, "malformed GCP CryptoKey name: expected projects/<project>/locations/<location>/keyRings/<ring>/cryptoKeys/<key>")
        }
        (project, location, keyRing, cryptoKey) = (parts[1], parts[3], parts[5], parts[7])
    }
}

/// An Azure Key Vault or Managed HSM key: `https://VAULT/keys/NAME[/VERSION]`. Without a
/// version the key's current version is used for new wraps; unwraps use the version recorded
/// with the blob.
public struct AzureKeyURI: Sendable, Hashable, CustomStringConvertible {
    /// `https://myvault.vault.azure.net` (scheme, host and port; no path).
    public let vault: String
    public let name: String
    public let version: String?

    public var description: String { "\(vault)/keys/\(name)" + (version.map { "/\($0)" } ?? "") }

    public init(parsing text: String) throws {
        guard let url = URLComponents(string: text), let scheme = url.scheme?.lowercased(), ["https", "http"].contains(scheme),
              let host = url.host, !host.isEmpty, url.query == nil, url.fragment == nil, url.user == nil, url.password == nil else {
            throw KeystoreError(.invalidInput, "malformed Azure Key Vault key URI: expected https://<vault>.vault.azure.net/keys/<name>[/<version>]")
        }
        let segments = url.path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard segments.count == 3 || segments.count == 4, segments[0].isEmpty, segments[1] == "keys",
              segments[2].range(of: #"^[0-9A-Za-z-]{1,127}$"#, options: .regularExpression) != nil,
              segments.count == 3 || segments[3].range(of: #"^[0-9a-f]{32}$"#, options: .regularExpression) != nil else {
            throw KeystoreError(.invalidInput, "malformed Azure Key Vault key URI: the path must be /keys/<name> or /keys/<name>/<32-hex version>")
        }
        vault = "\(scheme)://\(host.lowercased())" + (url.port.map { ":\($0)" } ?? "")
        name = segments[2]
        version = segments.count == 4 ? segments[3] : nil
    }

    public init(vault: String, name: String, version: String?) {
        self.vault = vault
        self.name = name
        self.version = version
    }
}
