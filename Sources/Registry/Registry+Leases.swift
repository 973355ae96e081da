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

extension Registry {
    /// The latest end of a lease not yet ended, for one tenant or all: what replicas sharing the
    /// database agree on (each grants leases of its own).
    public func latestLeaseEnd(tenant: String?, at: Date = Date()) async throws -> Date? {
        try await read { db in
            let end: Int64? = if let tenant {
                try Int64.fetchOne(db, sql: "SELECT MAX(expires_at) FROM node_lease WHERE tenant_id = ? AND expires_at > ?",
                                   arguments: [tenant, at.registryMilliseconds])
            } else {
                try Int64.fetchOne(db, sql: "SELECT MAX(expires_at) FROM node_lease WHERE expires_at > ?", arguments: [at.registryMilliseconds])
            }
            return end.map(Date.init(registryMilliseconds:))
        }
    }

    /// The latest end of each node's leases not yet ended.
    public func latestLeaseEndByNode(at: Date = Date()) async throws -> [String: Date] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT node_id, MAX(expires_at) AS ends FROM node_lease WHERE expires_at > ? GROUP BY node_id",
                             arguments: [at.registryMilliseconds]).reduce(into: [:]) { ends, row in
                ends[row["node_id"]] = Date(registryMilliseconds: row["ends"])
            }
        }
    }
}
