import PKCS11

/// Which kind of keystore a token is.
public enum Provider: String, Sendable, Codable, CaseIterable {
    case pkcs11
}

/// How a key is named, whatever the keystore. A PKCS#11 key by its RFC 7512 URI; cloud keys
/// (ARN, key URI, CryptoKey name) join later.
public enum KeyReference: Sendable, Hashable, CustomStringConvertible {
    case pkcs11(PKCS11URI)

    public init(parsing text: String) throws {
        if text.lowercased().hasPrefix("pkcs11:") {
            do {
                self = .pkcs11(try PKCS11URI(parsing: text))
            } catch let error as PKCS11URI.ParseError {
                throw KeystoreError(.invalidInput, "malformed PKCS#11 URI: \(error.message)")
            }
        } else {
            throw KeystoreError(.invalidInput, "unrecognised key reference: expected a PKCS#11 URI (pkcs11:token=...;object=...)")
        }
    }

    public var provider: Provider {
        switch self {
        case .pkcs11: return .pkcs11
        }
    }

    public var description: String {
        switch self {
        case .pkcs11(let uri): return uri.description
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
}

/// A key as a listing shows it: names and attributes, never material.
public struct KeyDescription: Sendable, Codable, Hashable {
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
    /// Whether the key qualifies as an L1 key (secret, AES, CKA_WRAP and CKA_UNWRAP).
    public var usableAsL1: Bool
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

/// A keystore whose keys can be listed.
public protocol KeyListing: Token {
    func keys() async throws -> [KeyDescription]
}
