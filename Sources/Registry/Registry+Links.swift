public import Foundation
import Storage

extension Registry {
    /// The end of a successful handshake, in one transaction: the link as `LINKED` with its
    /// probe result, and the tenant's L2 as `ACTIVE`. Either both exist or neither does.
    ///
    /// `notFound` if the tenant does not exist; `conflict` if it already has a link that is not
    /// `REVOKED` (one live L1 per tenant: revoke it first); `invalidInput` for an empty or
    /// PIN-carrying reference, a report that is not JSON, or a malformed L2.
    public func createLink(tenantID: String, provider: String, keystoreID: String, keyReference: String,
                           probeReport: String, probedAt: Date, l2: NewL2) async throws -> (L1Link, L2Key) {
        try Validation.text(provider, "a provider", maxLength: 64)
        try Validation.text(keystoreID, "a keystore id")
        try Validation.keyReference(keyReference)
        try Validation.json(probeReport, "the probe report")
        try Validation.newL2(l2)
        let linkID = Self.newID()
        let now = Date().registryMilliseconds
        let probedAt = probedAt.registryMilliseconds
        return try await write { db in
            _ = try Tenant.require(db, id: tenantID)
            // The schema's partial unique index says the same; checking first gives the
            // operator an answer that names the live link.
            if let live = try String.fetchOne(db, sql: """
                SELECT id FROM l1_link WHERE tenant_id = ? AND state IN ('PENDING_VALIDATION', 'LINKED') LIMIT 1
                """, arguments: [tenantID]) {
                throw RegistryError(.conflict, "tenant \(tenantID) already has link \(live) that is not revoked; revoke it first")
            }
            // A new L2 beside a restorable one would leave the tenant's data under a key nobody
            // can reach without a restore; the way back from a revocation is the restore.
            if let restorable = try String.fetchOne(db, sql: """
                SELECT id FROM l1_link WHERE tenant_id = ? AND state IN ('REVOKED', 'SHRED_SCHEDULED') LIMIT 1
                """, arguments: [tenantID]) {
                throw RegistryError(.conflict, "tenant \(tenantID) has revoked link \(restorable), which can be restored: restore it, or shred it before linking a new key")
            }
            if try L2Key.exists(db, id: l2.id) {
                throw RegistryError(.conflict, "L2 key \(l2.id) already exists")
            }
            try db.execute(sql: """
                INSERT INTO l1_link (id, tenant_id, provider, keystore_id, key_reference, l1_version, state, epoch,
                                     last_probe_at, last_probe_passed, last_probe_report, created_at, revoked_at, version)
                VALUES (?, ?, ?, ?, ?, 1, 'LINKED', 1, ?, 1, ?, ?, NULL, 1)
                """, arguments: [linkID, tenantID, provider, keystoreID, keyReference, probedAt, probeReport, now])
            try db.execute(sql: """
                INSERT INTO l1_key_version (link_id, version, keystore_id, key_reference, created_at) VALUES (?, 1, ?, ?, ?)
                """, arguments: [linkID, keystoreID, keyReference, now])
            try db.execute(sql: """
                INSERT INTO l2_key (id, tenant_id, link_id, sovereign_binding, sovereign_mechanism, sovereign_ivk_version,
                                    sovereign_l1_version, active_binding, active_mechanism, active_ivk_version, state, created_at,
                                    locked_at, version)
                VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, 'ACTIVE', ?, NULL, 1)
                """, arguments: [l2.id, tenantID, linkID, l2.sovereignBinding, l2.sovereignMechanism, l2.sovereignIVKVersion,
                                 l2.activeBinding, l2.activeMechanism, l2.activeIVKVersion, now])
            guard let link = try L1Link.fetch(db, id: linkID), let key = try L2Key.fetch(db, linkID: linkID) else {
                throw RegistryError(.notFound, "link \(linkID) vanished inside its own transaction")
            }
            return (link, key)
        }
    }

    /// `notFound` also when the link exists under another tenant.
    public func link(tenantID: String, id: String) async throws -> L1Link {
        try await read { db in
            guard let link = try L1Link.fetch(db, tenantID: tenantID, id: id) else {
                throw RegistryError(.notFound, "no link \(id) for tenant \(tenantID)")
            }
            return link
        }
    }

    /// The tenant's links, revoked ones included (they are its history), in creation order.
    /// `notFound` if the tenant does not exist.
    public func links(tenantID: String, limit: Int, after cursor: String?) async throws -> Page<L1Link> {
        let limit = Cursor.clamp(limit)
        let position = try cursor.map { try Cursor(token: $0, listing: "links:\(tenantID)") }
        return try await read { db in
            _ = try Tenant.require(db, id: tenantID)
            let rows: [Row]
            if let position {
                rows = try Row.fetchAll(db, sql: """
                    SELECT * FROM l1_link WHERE tenant_id = ? AND (created_at, id) > (?, ?)
                    ORDER BY created_at, id LIMIT ?
                    """, arguments: [tenantID, position.createdAt, position.id, limit + 1])
            } else {
                rows = try Row.fetchAll(db, sql: """
                    SELECT * FROM l1_link WHERE tenant_id = ? ORDER BY created_at, id LIMIT ?
                    """, arguments: [tenantID, limit + 1])
            }
            return Cursor.page(try rows.map(L1Link.init(row:)), limit: limit, listing: "links:\(tenantID)") {
                ($0.createdAt, $0.id)
            }
        }
    }

    /// Every link in `state`, across tenants, in creation order: the scheduled prober's work list.
    public func links(state: LinkState) async throws -> [L1Link] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM l1_link WHERE state = ? ORDER BY created_at, id",
                             arguments: [state.rawValue])
                .map(L1Link.init(row:))
        }
    }

    /// Records a probe of the link (scheduled or on demand) in any state: a revoked link's
    /// probes are still worth keeping. `notFound` if there is no such link.
    public func recordProbe(linkID: String, passed: Bool, report: String, at: Date) async throws -> L1Link {
        try Validation.json(report, "the probe report")
        let at = at.registryMilliseconds
        return try await write { db in
            try db.cachedStatement(sql: """
                UPDATE l1_link SET last_probe_at = ?, last_probe_passed = ?, last_probe_report = ?, version = version + 1
                WHERE id = ?
                """).execute(arguments: [at, passed, report, linkID])
            guard db.changesCount == 1, let link = try L1Link.fetch(db, id: linkID) else {
                throw RegistryError(.notFound, "no link \(linkID)")
            }
            return link
        }
    }

    /// The L2 of a link, or nil when the link has none (or does not exist).
    public func l2Key(linkID: String) async throws -> L2Key? {
        try await read { db in try L2Key.fetch(db, linkID: linkID) }
    }

    /// The tenant's L2 records, active and locked, in creation order. `notFound` if the tenant
    /// does not exist.
    public func l2Keys(tenantID: String) async throws -> [L2Key] {
        try await read { db in
            _ = try Tenant.require(db, id: tenantID)
            return try Row.fetchAll(db, sql: "SELECT * FROM l2_key WHERE tenant_id = ? ORDER BY created_at, id",
                                    arguments: [tenantID])
                .map(L2Key.init(row:))
        }
    }
}

extension L2Key {
    static func exists(_ db: Database, id: String) throws -> Bool {
        try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM l2_key WHERE id = ?)", arguments: [id]) ?? false
    }
}
