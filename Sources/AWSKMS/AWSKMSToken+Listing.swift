import CloudKMS
import Foundation
public import KSI

/// The keys of the account and region, for the portal's wizard: `ListKeys` followed to its last
/// page (`Marker`/`NextMarker`), the aliases from `ListAliases` (paged the same way), and one
/// `DescribeKey` per key for its state, usage and spec. Names and attributes only: KMS has no
/// call that returns a key's material, and none is made.
extension AWSKMSToken: KeyListing {
    /// AWS's own default and the most it accepts is 1000; 100 keeps each answer small.
    static let listPageSize = 100

    public func keys() async throws -> [KeyDescription] { try await keyList(limit: KeyList.maxKeys).keys }

    public func keyList(limit: Int) async throws -> KeyList { try await keyList(limit: limit, pageSize: Self.listPageSize) }

    func keyList(limit: Int, pageSize: Int) async throws -> KeyList {
        let listed: (items: [String], truncated: Bool) = try await paginated("AWS KMS ListKeys", limit: limit) { marker in
            var parameters: [String: Any] = ["Limit": pageSize]
            if let marker { parameters["Marker"] = marker }
            let answer = try await call("ListKeys", parameters)
            let ids = (answer["Keys"] as? [[String: Any]] ?? []).compactMap { $0["KeyArn"] as? String ?? $0["KeyId"] as? String }
            return (ids, answer["Truncated"] as? Bool == true ? answer["NextMarker"] as? String : nil)
        }
        // Aliases name keys for people: the wizard shows them, and each is a handshake reference.
        // Bounded like the keys (an account may have many more aliases than keys).
        let aliases: (items: [(target: String, name: String)], truncated: Bool) =
            try await paginated("AWS KMS ListAliases", limit: 10 * KeyList.maxKeys) { marker in
                var parameters: [String: Any] = ["Limit": pageSize]
                if let marker { parameters["Marker"] = marker }
                let answer = try await call("ListAliases", parameters)
                let pairs = (answer["Aliases"] as? [[String: Any]] ?? []).compactMap { alias -> (target: String, name: String)? in
                    guard let target = alias["TargetKeyId"] as? String, let name = alias["AliasName"] as? String else { return nil }
                    return (target, name)
                }
                return (pairs, answer["Truncated"] as? Bool == true ? answer["NextMarker"] as? String : nil)
            }
        var byKey: [String: [String]] = [:]
        for alias in aliases.items { byKey[alias.target, default: []].append(alias.name) }
        let named = byKey
        let keys = try await boundedMap(listed.items) { [self] key in
            let id = key.split(separator: "/").last.map(String.init) ?? key
            return try await describe(key, aliases: (named[id] ?? []).sorted())
        }
        return KeyList(keys: keys.sorted { ($0.label, $0.uri) < ($1.label, $1.uri) }, truncated: listed.truncated)
    }

    /// One key, from DescribeKey. A key the principal may list but not describe (its key policy
    /// says no) is still listed, with the reason, rather than failing the whole listing.
    func describe(_ key: String, aliases: [String]) async throws -> KeyDescription {
        let id = key.split(separator: "/").last.map(String.init) ?? key
        let metadata: [String: Any]
        do {
            let answer = try await call("DescribeKey", ["KeyId": key])
            metadata = answer["KeyMetadata"] as? [String: Any] ?? [:]
        } catch let error as KeystoreError where [.permissionDenied, .notFound].contains(error.code) {
            // This key only (its key policy, or deleted since ListKeys); an unreachable or
            // throttling KMS fails the whole listing instead of marking every key unusable.
            let reason = error.reason
            return KeyDescription(uri: key, label: aliases.first ?? id, idHex: "", objectClass: "unknown", keyType: nil, bits: nil,
                                  tokenObject: true, canWrap: nil, canUnwrap: nil, sensitive: nil, extractable: nil, usableAsL1: false,
                                  state: nil, aliases: aliases.isEmpty ? nil : aliases, reason: reason)
        }
        let arn = metadata["Arn"] as? String ?? key
        let state = metadata["KeyState"] as? String ?? ((metadata["Enabled"] as? Bool ?? false) ? "Enabled" : "Disabled")
        let usage = metadata["KeyUsage"] as? String ?? "?"
        let spec = metadata["KeySpec"] as? String ?? metadata["CustomerMasterKeySpec"] as? String ?? "?"
        // The probe's checks before its round trip, in its order and words.
        var reason: String?
        if state != "Enabled" {
            reason = Self.stateError(state).reason
        } else if usage != "ENCRYPT_DECRYPT" {
            reason = "the key's usage is \(usage); an L1 key must be ENCRYPT_DECRYPT"
        } else if spec != "SYMMETRIC_DEFAULT" {
            reason = "the key spec is \(spec); an L1 key must be SYMMETRIC_DEFAULT (AES-256-GCM inside KMS)"
        } else if metadata["KeyManager"] as? String == "AWS" {
            // An AWS managed key's policy is AWS's: only the service it belongs to may use it.
            reason = "an AWS managed key can be used only by its AWS service: make a customer managed key"
        }
        let symmetric = spec == "SYMMETRIC_DEFAULT" || spec.hasPrefix("HMAC_")
        let encrypts = usage == "ENCRYPT_DECRYPT"
        return KeyDescription(uri: arn, label: aliases.first ?? id, idHex: "", objectClass: symmetric ? "secret-key" : "private-key",
                              keyType: spec, bits: Self.bits(spec), tokenObject: true, canWrap: encrypts, canUnwrap: encrypts,
                              sensitive: nil, extractable: nil, usableAsL1: reason == nil,
                              state: state, aliases: aliases.isEmpty ? nil : aliases, reason: reason)
    }

    /// The key size a KeySpec names (SYMMETRIC_DEFAULT is AES-256).
    static func bits(_ spec: String) -> UInt? {
        if spec == "SYMMETRIC_DEFAULT" { return 256 }
        for prefix in ["RSA_", "HMAC_", "ECC_NIST_P"] where spec.hasPrefix(prefix) { return UInt(spec.dropFirst(prefix.count)) }
        return nil
    }
}
