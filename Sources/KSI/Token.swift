public import CMKCore
import PKCS11

/// Which kind of keystore a token is.
public enum Provider: String, Sendable, Codable, CaseIterable {
    case pkcs11
    case awsKMS = "aws-kms"
    case gcpKMS = "gcp-kms"
    case azureKeyVault = "azure-keyvault"
    case kmip

    /// How people name it.
    public var displayName: String {
        switch self {
        case .pkcs11: return "PKCS#11 token"
        case .awsKMS: return "AWS KMS"
        case .gcpKMS: return "GCP Cloud KMS"
        case .azureKeyVault: return "Azure Key Vault"
        case .kmip: return "KMIP server"
        }
    }
}

/// How a key is named, whatever the keystore: a PKCS#11 key by its RFC 7512 URI, an AWS KMS
/// key by its ARN, alias or id, a GCP CryptoKey by its resource name, an Azure Key Vault key
/// by its URI, a KMIP key by its unique identifier (`kmip:<id>`). The text form
/// (`description`) is what the registry stores and parses back.
public enum KeyReference: Sendable, Hashable, CustomStringConvertible {
    case pkcs11(PKCS11URI)
    case awsKMS(AWSKeyReference)
    case gcpKMS(GCPKeyName)
    case azureKeyVault(AzureKeyURI)
    case kmip(KMIPKeyReference)

    public init(parsing text: String) throws {
        let lowered = text.lowercased()
        if lowered.hasPrefix("pkcs11:") {
            do {
                self = .pkcs11(try PKCS11URI(parsing: text))
            } catch let error as PKCS11URI.ParseError {
                throw KeystoreError(.invalidInput, "malformed PKCS#11 URI: \(error.message)")
            }
        } else if lowered.hasPrefix(KMIPKeyReference.scheme) {
            self = .kmip(try KMIPKeyReference(parsing: text))
        } else if AWSKeyReference.looksLikeOne(text) {
            self = .awsKMS(try AWSKeyReference(parsing: text))
        } else if text.hasPrefix("projects/") {
            self = .gcpKMS(try GCPKeyName(parsing: text))
        } else if lowered.hasPrefix("https://") || lowered.hasPrefix("http://") {
            self = .azureKeyVault(try AzureKeyURI(parsing: text))
        } else {
            throw KeystoreError(.invalidInput, "unrecognised key reference: expected a PKCS#11 URI (pkcs11:token=...;object=...), an AWS KMS key ARN, "
                                + "alias or key id, a GCP CryptoKey name (projects/.../cryptoKeys/...), an Azure Key Vault key URI (https://<vault>/keys/<name>) or a KMIP key (kmip:<unique identifier>)")
        }
    }

    public var provider: Provider {
        switch self {
        case .pkcs11: return .pkcs11
        case .awsKMS: return .awsKMS
        case .gcpKMS: return .gcpKMS
        case .azureKeyVault: return .azureKeyVault
        case .kmip: return .kmip
        }
    }

    public var description: String {
        switch self {
        case .pkcs11(let uri): return uri.description
        case .awsKMS(let key): return key.description
        case .gcpKMS(let key): return key.description
        case .azureKeyVault(let key): return key.description
        case .kmip(let key): return key.description
        }
    }
}

/// A key wrapped by another: the blob and the mechanism that made it (needed to unwrap it).
public struct WrappedKey: Sendable, Hashable, Codable {
    public var mechanism: String
    public var blob: [UInt8]

    public init(mechanism: String, blob: [UInt8]) {
        self.mechanism = mechanism
        self.blob = blob
    }
}

/// A token's health as the gateway sees it.
public struct TokenStatus: Sendable, Codable, Hashable {
    public enum State: String, Sendable, Codable {
        case available
        case unavailable
        case loginRefused = "login_refused"
        case notConnected = "not_connected"
    }

    public var name: String
    public var provider: Provider
    public var state: State
    public var reason: String?
    public var label: String?
    public var serial: String?
    public var manufacturer: String?
    public var model: String?
    /// Wrap mechanisms usable on this token, in the profile's order of preference.
    public var wrapMechanisms: [String]

    public init(name: String, provider: Provider, state: State, reason: String? = nil, label: String? = nil, serial: String? = nil,
                manufacturer: String? = nil, model: String? = nil, wrapMechanisms: [String]) {
        self.name = name
        self.provider = provider
        self.state = state
        self.reason = reason
        self.label = label
        self.serial = serial
        self.manufacturer = manufacturer
        self.model = model
        self.wrapMechanisms = wrapMechanisms
    }
}

/// A key as a listing shows it: names and attributes, never material. The PKCS#11 attributes
/// are absent (nil) where a cloud KMS has no such notion; the last three fields are the cloud
/// keys' own (D104) and absent for PKCS#11 objects, so a PKCS#11 listing encodes as before.
public struct KeyDescription: Sendable, Codable, Hashable {
    /// The reference a handshake takes: a PKCS#11 URI, an AWS key ARN, a GCP CryptoKey name,
    /// an Azure Key Vault key URI (without a version: the current one is used).
    public var uri: String
    public var label: String
    public var idHex: String
    public var objectClass: String
    public var keyType: String?
    public var bits: UInt?
    public var tokenObject: Bool
    public var canWrap: Bool?
    public var canUnwrap: Bool?
    public var sensitive: Bool?
    public var extractable: Bool?
    /// Whether the key qualifies as an L1 key: PKCS#11, secret, AES, CKA_WRAP and CKA_UNWRAP;
    /// a cloud key, what the probe checks before its round trip (enabled, usage, type).
    public var usableAsL1: Bool
    /// A cloud key's state in the provider's words (AWS `Enabled`, `Disabled`,
    /// `PendingDeletion`; GCP the primary version's `ENABLED`, `DISABLED`, or `NO_PRIMARY`;
    /// Azure `enabled`, `disabled`, `expired`, `not_yet_valid`).
    public var state: String?
    /// AWS KMS: the aliases naming the key (`alias/…`); each is also a handshake reference.
    public var aliases: [String]?
    /// Why a cloud key is not usable as an L1 key, in the probe's words.
    public var reason: String?

    public init(uri: String, label: String, idHex: String, objectClass: String, keyType: String?, bits: UInt?, tokenObject: Bool,
                canWrap: Bool?, canUnwrap: Bool?, sensitive: Bool?, extractable: Bool?, usableAsL1: Bool,
                state: String? = nil, aliases: [String]? = nil, reason: String? = nil) {
        self.uri = uri
        self.label = label
        self.idHex = idHex
        self.objectClass = objectClass
        self.keyType = keyType
        self.bits = bits
        self.tokenObject = tokenObject
        self.canWrap = canWrap
        self.canUnwrap = canUnwrap
        self.sensitive = sensitive
        self.extractable = extractable
        self.usableAsL1 = usableAsL1
        self.state = state
        self.aliases = aliases
        self.reason = reason
    }
}

/// A listing of a keystore's keys, and whether it stopped at its bound before the keystore's
/// last key (a cloud KMS may hold more keys than a wizard can show, or than is sane to fetch).
public struct KeyList: Sendable, Hashable {
    /// At most this many keys per listing, whatever the keystore.
    public static let maxKeys = 1000
    /// At most this many pages per paginated call (a KMS that keeps answering "more" is cut off).
    public static let maxPages = 100

    public var keys: [KeyDescription]
    public var truncated: Bool

    public init(keys: [KeyDescription], truncated: Bool) {
        self.keys = keys
        self.truncated = truncated
    }
}

/// A keystore seen through the KSI. Every provider implements this, so the handshake, the L2
/// keys, the kill-switch and the audit do not care which keystore holds the L1 key.
public protocol Token: Sendable {
    var name: String { get }
    var provider: Provider { get }

    func status() async -> TokenStatus

    /// The noop handshake probe: never throws, always reports; leaves the keystore unchanged.
    func probe(_ key: KeyReference) async -> ProbeReport

    /// Wraps key material with `kek`.
    func wrap(_ key: SecretBytes, with kek: KeyReference) async throws -> WrappedKey

    /// Unwraps a blob with `kek`, returning the material.
    func unwrap(_ wrapped: WrappedKey, with kek: KeyReference) async throws -> SecretBytes
}

/// A keystore that can make a new key and return it only wrapped, so that its plaintext never
/// reaches the gateway (PKCS#11: a session key wrapped then destroyed).
public protocol WrappedKeyGenerating: Token {
    func generateWrappedKey(with kek: KeyReference) async throws -> WrappedKey
}

/// What a wrapped L2 is bound to: the tenant and the L2Ref. Keystores that can authenticate
/// additional data bind every wrap to it (AWS KMS encryption context, GCP Cloud KMS AAD), so a
/// binding moved to another tenant or L2 does not unwrap. (PKCS#11 key wrap and Azure's
/// RSA-OAEP/A256KW have no such data; there the registry's sealed record does the binding.)
public struct BindingContext: Sendable, Hashable {
    public var tenant: String
    public var l2Ref: String

    public init(tenant: String, l2Ref: String) {
        self.tenant = tenant
        self.l2Ref = l2Ref
    }

    /// As AWS KMS encryption context pairs.
    public var pairs: [String: String] { ["openkcm:tenant": tenant, "openkcm:l2ref": l2Ref] }
    /// As additional authenticated data.
    public var additionalData: [UInt8] { Array("openkcm/l2-binding/v1|\(tenant)|\(l2Ref)".utf8) }
}

/// A keystore that binds wraps to a context and makes new keys only wrapped: the cloud KMS
/// drivers. The L2 is generated inside the KMS (its plaintext is not returned), and unwrapped
/// only with the context it was made with.
public protocol ContextBindingKeystore: Token {
    func generateWrappedKey(with kek: KeyReference, context: BindingContext) async throws -> WrappedKey
    /// Wraps an existing L2 under `kek` with the binding (an L1 rotation to this key).
    func wrap(_ key: SecretBytes, with kek: KeyReference, context: BindingContext) async throws -> WrappedKey
    func unwrap(_ wrapped: WrappedKey, with kek: KeyReference, context: BindingContext) async throws -> SecretBytes
}

/// A keystore tied to one vault (Azure Key Vault): key URIs must name it.
public protocol VaultBound {
    var vault: String { get }
}

/// A keystore that logs in with a PIN read from a source (a PKCS#11 token): an operator who
/// corrected the PIN source asks it to read the PIN again and log in once more, instead of
/// restarting the gateway (a refused PIN is never retried by the gateway itself).
public protocol LoginRenewing: Token {
    /// Reads the PIN anew and logs in, at most once per call (never a loop); a token that is
    /// logged in already is left as it is. Throws the keystore's refusal (`permission_denied`).
    func loginAgain() async throws -> TokenStatus
}

/// A keystore whose keys can be listed.
public protocol KeyListing: Token {
    func keys() async throws -> [KeyDescription]
    /// At most `limit` keys, saying whether there were more.
    func keyList(limit: Int) async throws -> KeyList
}

extension KeyListing {
    /// A listing that is complete by nature (a PKCS#11 token's objects), cut at `limit`.
    public func keyList(limit: Int) async throws -> KeyList {
        let all = try await keys()
        return KeyList(keys: Array(all.prefix(limit)), truncated: all.count > limit)
    }
}
