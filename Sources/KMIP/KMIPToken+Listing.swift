import CloudKMS
public import KSI

/// The server's symmetric keys this client may see, for the portal's wizard: one Locate
/// (Object Type = Symmetric Key, Maximum Items one past the bound, so that a cut is known),
/// then one Get Attributes per key, over the pooled connections. Names and attributes only.
extension KMIPToken: KeyListing {
    public func keys() async throws -> [KeyDescription] { try await keyList(limit: KeyList.maxKeys).keys }

    public func keyList(limit: Int) async throws -> KeyList {
        let limit = max(0, min(limit, KeyList.maxKeys))
        let ids = try await kmip { try await client.locateSymmetricKeys(maximum: limit + 1, version: $0) }
        let kept = Array(ids.prefix(limit))
        var keys: [KeyDescription] = []
        for id in kept {
            keys.append(try await describe(id))
        }
        return KeyList(keys: keys.sorted { ($0.label, $0.uri) < ($1.label, $1.uri) }, truncated: ids.count > limit)
    }

    /// One key. A key this client may locate but not read (its operation policy), or that went
    /// between Locate and Get Attributes, is listed with the reason.
    func describe(_ id: String) async throws -> KeyDescription {
        let uri = KMIPKeyReference.scheme + id
        let facts: KeyFacts
        do {
            facts = KeyFacts(try await kmip { try await client.attributes(of: id, Self.stateAttributes, version: $0) })
        } catch let error as KeystoreError where [.permissionDenied, .notFound].contains(error.code) {
            return KeyDescription(uri: uri, label: id, idHex: "", objectClass: "unknown", keyType: nil, bits: nil, tokenObject: true,
                                  canWrap: nil, canUnwrap: nil, sensitive: nil, extractable: nil, usableAsL1: false, reason: error.reason)
        }
        let refusal = facts.refusal()
        let state = facts.state.map { KMIP.State(rawValue: $0)?.description ?? "\($0)" }
        return KeyDescription(uri: uri, label: facts.name ?? id, idHex: "", objectClass: "secret-key",
                              keyType: facts.algorithm == KMIP.aes ? "AES" : facts.algorithm.map { "algorithm \($0)" },
                              bits: facts.bits.map { UInt(max(0, $0)) }, tokenObject: true,
                              canWrap: facts.usage.contains(.encrypt), canUnwrap: facts.usage.contains(.decrypt),
                              sensitive: nil, extractable: nil, usableAsL1: refusal == nil, state: state, reason: refusal?.error.reason)
    }
}
