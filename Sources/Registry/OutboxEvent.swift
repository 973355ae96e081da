public import Foundation
import Storage

/// An event written in the same transaction as the change it announces, so that a crash can
/// never keep the change and lose the announcement. Orbital reads them in `sequence` order; each
/// node keeps its own cursor (the last sequence it received), so delivery is tracked per node,
/// not per event. Events outlive the tenant they name: they are part of the proof.
public struct OutboxEvent: Codable, Sendable, Equatable {
    /// Strictly increasing and never reused (SQLite AUTOINCREMENT), so consumers can order and
    /// deduplicate by it.
    public var sequence: Int64
    /// A UUID string.
    public var id: String
    /// `l1.revoked`, …
    public var type: String
    public var tenantID: String
    public var linkID: String?
    /// JSON text.
    public var payload: String
    public var createdAt: Date

    public init(sequence: Int64, id: String, type: String, tenantID: String, linkID: String?, payload: String,
                createdAt: Date) {
        self.sequence = sequence
        self.id = id
        self.type = type
        self.tenantID = tenantID
        self.linkID = linkID
        self.payload = payload
        self.createdAt = createdAt
    }
}

extension OutboxEvent {
    init(row: Row) {
        self.init(
            sequence: row["sequence"],
            id: row["id"],
            type: row["type"],
            tenantID: row["tenant_id"],
            linkID: row["link_id"],
            payload: row["payload"],
            createdAt: Date(registryMilliseconds: row["created_at"])
        )
    }
}

/// The payload of an `l1.revoked` event. `l2Ref` is written as an explicit `null` when the link
/// had no L2 (a link revoked while pending), so that every consumer sees the same four keys.
struct RevocationPayload: Encodable, EventPayload {
    var tenant: String
    var link: String
    var l2Ref: String?
    var epoch: Int
    var revokedAt: Date

    enum CodingKeys: String, CodingKey { case tenant, link, l2Ref, epoch, revokedAt }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(tenant, forKey: .tenant)
        try container.encode(link, forKey: .link)
        if let l2Ref { try container.encode(l2Ref, forKey: .l2Ref) } else { try container.encodeNil(forKey: .l2Ref) }
        try container.encode(epoch, forKey: .epoch)
        try container.encode(revokedAt.registryISO8601, forKey: .revokedAt)
    }
}

struct RestorePayload: Encodable, EventPayload {
    var tenant: String
    var link: String
    var l2Ref: String
    var epoch: Int
    var restoredAt: String
}

struct ShredPayload: Encodable, EventPayload {
    var tenant: String
    var link: String
    var l2Ref: String?
    var shreddedAt: String
}

struct RegionsPayload: Encodable, EventPayload {
    var tenant: String
    var allowedRegions: [String]?

    enum CodingKeys: String, CodingKey { case tenant, allowedRegions }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(tenant, forKey: .tenant)
        if let allowedRegions { try container.encode(allowedRegions, forKey: .allowedRegions) } else { try container.encodeNil(forKey: .allowedRegions) }
    }
}

/// Event payloads are JSON with sorted keys, so that every reader sees the same bytes.
protocol EventPayload: Encodable {}

extension EventPayload {
    func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }
}
