public import Foundation
import GRDB

extension Registry {
    /// Events not yet dispatched, oldest first (by `sequence`). `limit` is clamped to 1...500.
    public func pendingEvents(limit: Int) async throws -> [OutboxEvent] {
        let limit = Cursor.clamp(limit)
        return try await read { db in
            try Row.fetchAll(db, sql: """
                SELECT * FROM outbox_event WHERE dispatched_at IS NULL ORDER BY sequence LIMIT ?
                """, arguments: [limit])
                .map(OutboxEvent.init(row:))
        }
    }

    /// Idempotent, because a dispatcher delivers at least once: marking an event twice keeps
    /// the first time. `notFound` if there is no such event.
    public func markDispatched(sequence: Int64, at: Date) async throws {
        let at = at.registryMilliseconds
        try await write { db in
            try db.execute(sql: """
                UPDATE outbox_event SET dispatched_at = coalesce(dispatched_at, ?) WHERE sequence = ?
                """, arguments: [at, sequence])
            if db.changesCount == 0 {
                throw RegistryError(.notFound, "no outbox event \(sequence)")
            }
        }
    }
}

extension Registry {
    /// One event, dispatched or not; for tests and diagnostics.
    func event(sequence: Int64) async throws -> OutboxEvent? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM outbox_event WHERE sequence = ?", arguments: [sequence])
                .map(OutboxEvent.init(row:))
        }
    }
}

extension OutboxEvent {
    /// Inside the caller's transaction: events are only ever written together with the change
    /// they announce.
    static func insert(_ db: Database, id: String, type: String, tenantID: String, linkID: String?,
                       payload: String, createdAt: Int64) throws -> OutboxEvent {
        try db.execute(sql: """
            INSERT INTO outbox_event (id, type, tenant_id, link_id, payload, created_at, dispatched_at)
            VALUES (?, ?, ?, ?, ?, ?, NULL)
            """, arguments: [id, type, tenantID, linkID, payload, createdAt])
        return OutboxEvent(sequence: db.lastInsertedRowID, id: id, type: type, tenantID: tenantID, linkID: linkID,
                           payload: payload, createdAt: Date(registryMilliseconds: createdAt), dispatchedAt: nil)
    }
}
