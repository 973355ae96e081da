public import Foundation
import Storage

/// An administrative action taken on the gateway's host (`cmk admin`), waiting for the server
/// to append it to the audit log: the command line has the registry, not the log, whose single
/// writer is the server process (D58).
public struct PendingAuditRecord: Sendable, Equatable {
    public var sequence: Int64
    public var id: String
    public var operation: String
    /// Who ran the command, as the host knows them (`root@host`).
    public var actor: String
    public var target: String?
    /// JSON text of string values.
    public var details: String
    public var at: Date
}

extension Registry {
    public func queuePendingAudit(operation: String, actor: String, target: String?, details: [String: String], at: Date = Date()) async throws {
        try Validation.text(operation, "an operation", maxLength: 64)
        try Validation.text(actor, "an actor")
        let detailsText = String(decoding: try JSONEncoder().encode(details), as: UTF8.self)
        let id = Self.newID()
        try await write { db in
            try db.execute(sql: "INSERT INTO pending_audit (id, operation, actor, target, details, at) VALUES (?, ?, ?, ?, ?, ?)",
                           arguments: [id, operation, actor, target, detailsText, at.registryMilliseconds])
        }
    }

    /// Oldest first.
    public func pendingAudit(limit: Int = 100) async throws -> [PendingAuditRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM pending_audit ORDER BY sequence LIMIT ?", arguments: [Cursor.clamp(limit)]).map {
                PendingAuditRecord(sequence: $0["sequence"], id: $0["id"], operation: $0["operation"], actor: $0["actor"], target: $0["target"],
                                   details: $0["details"], at: Date(registryMilliseconds: $0["at"]))
            }
        }
    }

    public func deletePendingAudit(id: String) async throws {
        try await write { db in try db.execute(sql: "DELETE FROM pending_audit WHERE id = ?", arguments: [id]) }
    }
}
