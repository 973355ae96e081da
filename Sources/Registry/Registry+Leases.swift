public import Foundation
import Storage

/// A lease change: a node may hold a tenant's key until `expiresAt`, or (nil) no longer holds it.
public struct LeaseChange: Sendable {
    public var node: String
    public var tenant: String
    public var expiresAt: Date?

    public init(node: String, tenant: String, expiresAt: Date?) {
        (self.node, self.tenant, self.expiresAt) = (node, tenant, expiresAt)
    }
}

extension Registry {
    /// Applies lease changes in one transaction (they come in batches), and forgets leases that
    /// ended before `at`.
    public func applyLeases(_ changes: [LeaseChange], at: Date = Date()) async throws {
        try await write { db in
            let upsert = try db.cachedStatement(sql: """
                INSERT INTO node_lease (node_id, tenant_id, expires_at) VALUES (?, ?, ?)
                ON CONFLICT (node_id, tenant_id) DO UPDATE SET expires_at = excluded.expires_at
                """)
            let delete = try db.cachedStatement(sql: "DELETE FROM node_lease WHERE node_id = ? AND tenant_id = ?")
            for change in changes {
                if let expiresAt = change.expiresAt {
                    try upsert.execute(arguments: [change.node, change.tenant, expiresAt.registryMilliseconds])
                } else {
                    try delete.execute(arguments: [change.node, change.tenant])
                }
            }
            try db.execute(sql: "DELETE FROM node_lease WHERE expires_at <= ?", arguments: [at.registryMilliseconds])
        }
    }

    /// Leases not yet ended (at start).
    public func leases(at: Date = Date()) async throws -> [LeaseChange] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM node_lease WHERE expires_at > ?", arguments: [at.registryMilliseconds]).map {
                LeaseChange(node: $0["node_id"], tenant: $0["tenant_id"], expiresAt: Date(registryMilliseconds: $0["expires_at"]))
            }
        }
    }
}
