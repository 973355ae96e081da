import Foundation
import GRDB

extension Registry {
    /// `conflict` if the id is taken; `invalidInput` if the id or name breaks the rules.
    public func createTenant(id: String, name: String) async throws -> Tenant {
        try Validation.tenantID(id)
        try Validation.tenantName(name)
        let now = Date().registryMilliseconds
        return try await write { db in
            if try Tenant.fetch(db, id: id) != nil {
                throw RegistryError(.conflict, "tenant \(id) already exists")
            }
            try db.execute(sql: "INSERT INTO tenant (id, name, created_at, version) VALUES (?, ?, ?, 1)",
                           arguments: [id, name, now])
            return try Tenant.require(db, id: id)
        }
    }

    public func tenant(_ id: String) async throws -> Tenant {
        try await read { db in try Tenant.require(db, id: id) }
    }

    /// In creation order (ties by id). `limit` is clamped to 1...500.
    public func tenants(limit: Int, after cursor: String?) async throws -> Page<Tenant> {
        let limit = Cursor.clamp(limit)
        let position = try cursor.map { try Cursor(token: $0, listing: "tenants") }
        return try await read { db in
            let rows: [Row]
            if let position {
                rows = try Row.fetchAll(db, sql: """
                    SELECT * FROM tenant WHERE (created_at, id) > (?, ?) ORDER BY created_at, id LIMIT ?
                    """, arguments: [position.createdAt, position.id, limit + 1])
            } else {
                rows = try Row.fetchAll(db, sql: "SELECT * FROM tenant ORDER BY created_at, id LIMIT ?",
                                        arguments: [limit + 1])
            }
            return Cursor.page(rows.map(Tenant.init(row:)), limit: limit, listing: "tenants") { ($0.createdAt, $0.id) }
        }
    }

    /// Refused (`conflict`) while the tenant has any link that is not `REVOKED`: deleting a
    /// tenant must never be a way around the kill-switch. Once every link is revoked, the
    /// tenant, its links, L2 records and handshake attempts go in one transaction. Outbox events
    /// stay: they are the proof of the revocations.
    public func deleteTenant(_ id: String, expectedVersion: Int?) async throws {
        try await write { db in
            let tenant = try Tenant.require(db, id: id)
            if let expectedVersion, expectedVersion != tenant.version {
                throw RegistryError(.preconditionFailed,
                                    "tenant \(id) is at version \(tenant.version), not \(expectedVersion)")
            }
            if let live = try String.fetchOne(db, sql: """
                SELECT id FROM l1_link WHERE tenant_id = ? AND state <> 'REVOKED' LIMIT 1
                """, arguments: [id]) {
                throw RegistryError(.conflict, "tenant \(id) still has link \(live) that is not revoked; revoke it first")
            }
            try db.execute(sql: "DELETE FROM l2_key WHERE tenant_id = ?", arguments: [id])
            try db.execute(sql: "DELETE FROM l1_link WHERE tenant_id = ?", arguments: [id])
            try db.execute(sql: "DELETE FROM handshake_attempt WHERE tenant_id = ?", arguments: [id])
            try db.execute(sql: "DELETE FROM tenant WHERE id = ?", arguments: [id])
        }
    }
}
