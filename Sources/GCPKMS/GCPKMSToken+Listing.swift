public import CloudKMS
import Foundation
public import KSI

/// The CryptoKeys of the project, for the portal's wizard: the configured locations (or the
/// project's, from `projects.locations.list`), their key rings, and each ring's CryptoKeys,
/// every list followed through `nextPageToken` to its end within the bounds. Names and
/// attributes only: Cloud KMS never returns symmetric key material, and no call asks for it.
extension GCPKMSToken: KeyListing {
    /// Cloud KMS's maximum page is 1000; 100 keeps each answer small.
    static let listPageSize = 100

    static let listPermissions = ["list locations": "cloudkms.locations.list", "list key rings": "cloudkms.keyRings.list",
                                  "list crypto keys": "cloudkms.cryptoKeys.list"]

    public func keys() async throws -> [KeyDescription] { try await keyList(limit: KeyList.maxKeys).keys }

    public func keyList(limit: Int) async throws -> KeyList { try await keyList(limit: limit, pageSize: Self.listPageSize) }

    func keyList(limit: Int, pageSize: Int) async throws -> KeyList {
        let project = "projects/\(configuration.project)"
        let locations: [String]
        var truncated = false
        if let configured = configuration.locations {
            locations = configured
        } else {
            let found: (items: [String], truncated: Bool) = try await paginated("Cloud KMS list locations", limit: KeyList.maxKeys) { token in
                let answer = try await call("list locations", Self.page("\(project)/locations", pageSize, token), nil)
                let ids = (answer["locations"] as? [[String: Any]] ?? []).compactMap { $0["locationId"] as? String }
                return (ids, answer["nextPageToken"] as? String)
            }
            locations = found.items
            truncated = found.truncated
        }
        var keys: [KeyDescription] = []
        rings: for location in locations {
            let rings: (items: [String], truncated: Bool) = try await paginated("Cloud KMS list key rings", limit: KeyList.maxKeys) { token in
                let answer = try await call("list key rings", Self.page("\(project)/locations/\(location)/keyRings", pageSize, token), nil)
                return ((answer["keyRings"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }, answer["nextPageToken"] as? String)
            }
            truncated = truncated || rings.truncated
            for ring in rings.items {
                // Ring names come from Cloud KMS; only ones in this project are followed (the
                // bearer token goes nowhere else, and the names make valid references).
                guard ring.hasPrefix("\(project)/locations/\(location)/keyRings/") else { continue }
                guard keys.count < limit else { truncated = true; break rings }
                let found: (items: [KeyDescription], truncated: Bool) =
                    try await paginated("Cloud KMS list crypto keys", limit: limit - keys.count) { token in
                        let answer = try await call("list crypto keys", Self.page("\(ring)/cryptoKeys", pageSize, token), nil)
                        let described = (answer["cryptoKeys"] as? [[String: Any]] ?? []).compactMap(Self.describe)
                        return (described, answer["nextPageToken"] as? String)
                    }
                keys += found.items
                if found.truncated { truncated = true; break rings }
            }
        }
        return KeyList(keys: keys.sorted { ($0.label, $0.uri) < ($1.label, $1.uri) }, truncated: truncated)
    }

    /// A list path with its page size and (percent-encoded) page token.
    static func page(_ path: String, _ size: Int, _ token: String?) -> String {
        var query = "pageSize=\(size)"
        if let token { query += "&pageToken=" + (token.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "") }
        return "\(path)?\(query)"
    }

    /// One CryptoKey resource as a listing shows it; usable as L1 when the probe's checks before
    /// its round trip pass (primary version enabled, ENCRYPT_DECRYPT, GOOGLE_SYMMETRIC_ENCRYPTION).
    static func describe(_ resource: [String: Any]) -> KeyDescription? {
        guard let name = resource["name"] as? String, let parsed = try? GCPKeyName(parsing: name) else { return nil }
        let primary = resource["primary"] as? [String: Any]
        let purpose = resource["purpose"] as? String ?? "?"
        let algorithm = primary?["algorithm"] as? String ?? (resource["versionTemplate"] as? [String: Any])?["algorithm"] as? String
        // Only symmetric keys have a primary version: an asymmetric key's state is its versions'.
        let state = primary?["state"] as? String ?? (purpose == "ENCRYPT_DECRYPT" ? "NO_PRIMARY" : nil)
        var reason: String?
        if purpose != "ENCRYPT_DECRYPT" {
            reason = "the key's purpose is \(purpose); an L1 key must be ENCRYPT_DECRYPT"
        } else if state != "ENABLED" {
            reason = primary == nil ? "the key has no primary version: set one before linking it"
                : "the key's primary version is \(state ?? "?"): enable it (or make an enabled version primary)"
        } else if algorithm != mechanism {
            reason = "the key's algorithm is \(algorithm ?? "?"); an L1 key must be GOOGLE_SYMMETRIC_ENCRYPTION"
        }
        let symmetric = purpose == "ENCRYPT_DECRYPT" || purpose == "MAC"
        return KeyDescription(uri: parsed.description, label: "\(parsed.keyRing)/\(parsed.cryptoKey)", idHex: "",
                              objectClass: symmetric ? "secret-key" : "private-key", keyType: algorithm,
                              bits: algorithm == mechanism ? 256 : nil, tokenObject: true,
                              canWrap: purpose == "ENCRYPT_DECRYPT", canUnwrap: purpose == "ENCRYPT_DECRYPT",
                              sensitive: nil, extractable: nil, usableAsL1: reason == nil, state: state, reason: reason)
    }
}
