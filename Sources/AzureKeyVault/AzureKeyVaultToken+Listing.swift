import CloudKMS
import CMKCore
import Foundation
public import KSI

/// The keys of the vault, for the portal's wizard: `GET /keys` followed through `nextLink` to
/// its end within the bounds, then each key's current version (`GET /keys/{name}`) for its type
/// and permitted operations, which the list's items do not carry. Names and attributes only: the
/// key bundle holds a JSON Web Key's public part at most, and only kty and key_ops are kept.
extension AzureKeyVaultToken: KeyListing {
    /// Key Vault's maximum `maxresults` is 25.
    static let listPageSize = 25

    public func keys() async throws -> [KeyDescription] { try await keyList(limit: KeyList.maxKeys).keys }

    public func keyList(limit: Int) async throws -> KeyList { try await keyList(limit: limit, pageSize: Self.listPageSize) }

    func keyList(limit: Int, pageSize: Int) async throws -> KeyList {
        let listed: (items: [String], truncated: Bool) = try await paginated("Key Vault list keys", limit: limit) { [self] next in
            let url = try next.map(checkedNextLink) ?? "\(vault)/keys?api-version=\(apiVersion)&maxresults=\(pageSize)"
            let answer = try await call("list", url, nil)
            let names = (answer["value"] as? [[String: Any]] ?? []).compactMap { item -> String? in
                guard let kid = item["kid"] as? String, let uri = try? AzureKeyURI(parsing: kid), uri.vault == vault else { return nil }
                return uri.name
            }
            return (names, answer["nextLink"] as? String)
        }
        let keys = try await boundedMap(listed.items) { [self] name in try await describe(name) }
        return KeyList(keys: keys.sorted { ($0.label, $0.uri) < ($1.label, $1.uri) }, truncated: listed.truncated)
    }

    /// A nextLink is followed only on the configured vault: the bearer token never goes to a host
    /// a response names.
    func checkedNextLink(_ link: String) throws -> String {
        guard let components = URLComponents(string: link), let scheme = components.scheme, let host = components.host,
              "\(scheme.lowercased())://\(host.lowercased())\(components.port.map { ":\($0)" } ?? "")" == vault,
              components.path == "/keys" else {
            throw KeystoreError(.unavailable, "Key Vault's list of keys pointed outside the vault \(vault); the listing stopped there")
        }
        return link
    }

    /// One key by its current version. A key the application may list but not read is still
    /// listed, with the reason.
    func describe(_ name: String) async throws -> KeyDescription {
        let uri = "\(vault)/keys/\(name)"
        let bundle: [String: Any]
        do {
            bundle = try await call("get", uri, nil)
        } catch let error as KeystoreError where [.permissionDenied, .notFound].contains(error.code) {
            // This key only (deleted since the list); an unreachable or throttling vault fails the
            // whole listing instead of marking every key unusable.
            return KeyDescription(uri: uri, label: name, idHex: "", objectClass: "unknown", keyType: nil, bits: nil, tokenObject: true,
                                  canWrap: nil, canUnwrap: nil, sensitive: nil, extractable: nil, usableAsL1: false, reason: error.reason)
        }
        let attributes = bundle["attributes"] as? [String: Any] ?? [:]
        let jwk = bundle["key"] as? [String: Any] ?? [:]
        let keyType = jwk["kty"] as? String ?? "?"
        let operations = jwk["key_ops"] as? [String] ?? []
        let now = clock.now.timeIntervalSince1970
        let state: String
        if !(attributes["enabled"] as? Bool ?? false) {
            state = "disabled"
        } else if let expiry = attributes["exp"] as? Double, expiry < now {
            state = "expired"
        } else if let notBefore = attributes["nbf"] as? Double, notBefore > now {
            state = "not_yet_valid"
        } else {
            state = "enabled"
        }
        // The probe's checks before its round trip, in its order and words.
        let expected = isManagedHSM ? ["oct-HSM", "oct"] : ["RSA", "RSA-HSM"]
        var reason: String?
        switch state {
        case "disabled": reason = "the key is disabled: enable it in the vault before linking it"
        case "expired": reason = "the key expired: set a later expiry or use a new version"
        case "not_yet_valid": reason = "the key is not valid yet (nbf is in the future)"
        default:
            if !(operations.contains("wrapKey") && operations.contains("unwrapKey")) {
                reason = "the key's permitted operations are \(operations.joined(separator: ", ")); an L1 key needs wrapKey and unwrapKey"
            } else if !expected.contains(keyType) {
                reason = "the key type is \(keyType); this keystore wraps with \(isManagedHSM ? "A256KW (an oct-HSM key)" : "RSA-OAEP-256 (an RSA key)")"
            }
        }
        let modulus = (jwk["n"] as? String).flatMap { Data(base64URLEncoded: $0) }
        // An RSA key's size from its modulus; an oct key's size is not in its bundle.
        let bits: UInt? = modulus.map { UInt($0.drop { $0 == 0 }.count * 8) }
        return KeyDescription(uri: uri, label: name, idHex: "", objectClass: keyType.hasPrefix("oct") ? "secret-key" : "private-key",
                              keyType: keyType, bits: bits, tokenObject: true, canWrap: operations.contains("wrapKey"),
                              canUnwrap: operations.contains("unwrapKey"), sensitive: nil, extractable: nil, usableAsL1: reason == nil,
                              state: state, reason: reason)
    }
}
