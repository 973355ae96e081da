import CMKCore
import Foundation
import Storage

extension Registry {
    /// `conflict` if the id is taken; `invalidInput` if the id or name breaks the rules.
    /// `allowedRegions`: the regions whose nodes may unseal the tenant's L2 (nil: all).
    public func createTenant(id: String, name: String, allowedRegions: [String]? = nil) async throws -> Tenant {
        try Validation.tenantID(id)
        try Validation.tenantName(name)
        let regions = try Validation.regions(allowedRegions)
        let now = Date().registryMilliseconds
        return try await write { db in
            if try Tenant.fetch(db, id: id) != nil {
                throw RegistryError(.conflict, "tenant \(id) already exists")
            }
            try db.execute(sql: "INSERT INTO tenant (id, name, created_at, allowed_regions, version) VALUES (?, ?, ?, ?, 1)",
                           arguments: [id, name, now, regions])
            return try Tenant.require(db, id: id)
        }
    }

    /// Sets the regions allowed to unseal the tenant's L2 (nil: every region), with a
    /// `tenant.regions` event so that nodes of a region no longer allowed drop its keys at once.
    public func setAllowedRegions(tenantID: String, _ allowedRegions: [String]?, expectedVersion: Int?) async throws -> (Tenant, OutboxEvent) {
        let regions = try Validation.regions(allowedRegions)
        let now = Date().registryMilliseconds
        let eventID = Self.newID()
        return try await durableWrite { db in
            let tenant = try Tenant.require(db, id: tenantID)
            if let expectedVersion, expectedVersion != tenant.version {
                throw RegistryError(.preconditionFailed, "tenant \(tenantID) is at version \(tenant.version), not \(expectedVersion)")
            }
            try db.execute(sql: "UPDATE tenant SET allowed_regions = ?, version = version + 1 WHERE id = ?", arguments: [regions, tenantID])
            let updated = try Tenant.require(db, id: tenantID)
            let event = try OutboxEvent.insert(db, id: eventID, type: EventType.tenantRegions.rawValue, tenantID: tenantID, linkID: nil,
                                               payload: try RegionsPayload(tenant: tenantID, allowedRegions: updated.allowedRegions).json(),
                                               createdAt: now)
            return (updated, event)
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

    /// Refused (`conflict`) while the tenant has a link that is live (revoke it first) or
    /// restorable (`REVOKED`, `SHRED_SCHEDULED`): deleting would destroy a sovereign binding
    /// without the shred's approval and waiting period, and recreating the tenant would skip the
    /// restore's. Once every link is shredded, the tenant, its links, L2 records and handshake
    /// attempts go in one transaction. Outbox events stay: they are the proof of the revocations.
    public func deleteTenant(_ id: String, expectedVersion: Int?) async throws {
        try await write { db in
            let tenant = try Tenant.require(db, id: id)
            if let expectedVersion, expectedVersion != tenant.version {
                throw RegistryError(.preconditionFailed,
                                    "tenant \(id) is at version \(tenant.version), not \(expectedVersion)")
            }
            if let live = try String.fetchOne(db, sql: """
                SELECT id FROM l1_link WHERE tenant_id = ? AND state IN ('PENDING_VALIDATION', 'LINKED') LIMIT 1
                """, arguments: [id]) {
                throw RegistryError(.conflict, "tenant \(id) still has link \(live) that is not revoked; revoke it first")
            }
            if let restorable = try String.fetchOne(db, sql: """
                SELECT id FROM l1_link WHERE tenant_id = ? AND state IN ('REVOKED', 'SHRED_SCHEDULED') LIMIT 1
                """, arguments: [id]) {
                throw RegistryError(.conflict, "tenant \(id) has revoked link \(restorable), whose L2 can still be restored: shred it (with approval) before deleting the tenant")
            }
            try db.execute(sql: "DELETE FROM l1_key_version WHERE link_id IN (SELECT id FROM l1_link WHERE tenant_id = ?)", arguments: [id])
            try db.execute(sql: "DELETE FROM l2_key WHERE tenant_id = ?", arguments: [id])
            try db.execute(sql: "DELETE FROM l1_link WHERE tenant_id = ?", arguments: [id])
            try db.execute(sql: "DELETE FROM handshake_attempt WHERE tenant_id = ?", arguments: [id])
            try db.execute(sql: "DELETE FROM tenant WHERE id = ?", arguments: [id])
        }
    }
}
