import Foundation
import Storage

extension Registry {
    /// Events after `sequence`, oldest first, for nodes catching up. `limit` is clamped to 1...500.
    public func events(after sequence: Int64, limit: Int) async throws -> [OutboxEvent] {
        let limit = Cursor.clamp(limit)
        return try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM outbox_event WHERE sequence > ? ORDER BY sequence LIMIT ?",
                             arguments: [sequence, limit]).map(OutboxEvent.init(row:))
        }
    }

    /// The newest event's sequence number, 0 when there is none.
    public func latestEventSequence() async throws -> Int64 {
        try await read { db in try Int64.fetchOne(db, sql: "SELECT max(sequence) FROM outbox_event") ?? 0 }
    }

    public func event(id: String) async throws -> OutboxEvent? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM outbox_event WHERE id = ?", arguments: [id]).map(OutboxEvent.init(row:))
        }
    }
}

extension OutboxEvent {
    /// Inside the caller's transaction: events are only ever written together with the change
    /// they announce.
    static func insert(_ db: Database, id: String, type: String, tenantID: String, linkID: String?,
                       payload: String, createdAt: Int64) throws -> OutboxEvent {
        // The sequence comes back from the insert itself (both backends support RETURNING).
        guard let sequence = try Int64.fetchOne(db, sql: """
            INSERT INTO outbox_event (id, type, tenant_id, link_id, payload, created_at)
            VALUES (?, ?, ?, ?, ?, ?) RETURNING sequence
            """, arguments: [id, type, tenantID, linkID, payload, createdAt]) else {
            throw RegistryError(.internal, "the outbox gave no sequence for event \(id)")
        }
        // Other replicas' node streams hear of it when this transaction commits.
        try Registry.announce(db, .outbox)
        return OutboxEvent(sequence: sequence, id: id, type: type, tenantID: tenantID, linkID: linkID,
                           payload: payload, createdAt: Date(registryMilliseconds: createdAt))
    }
}
