import CMKCore
public import Foundation
import Storage

/// The way back from a revocation (restore) and the way beyond it (crypto-shred), each in one
/// durable transaction with its outbox event and, where the policy asks for one, the approval
/// it uses.
extension Registry {
    /// What a restore writes: the L2's new active binding, made by the gateway after L1 opened
    /// the sovereign binding (`sovereignL1Version` is the binding it opened: a rotation in
    /// between makes the restore a conflict, to be tried again).
    public struct RestoredBinding: Sendable {
        public var activeBinding: Data
        public var activeMechanism: String
        public var activeIVKVersion: Int
        public var sovereignL1Version: Int

        public init(activeBinding: Data, activeMechanism: String, activeIVKVersion: Int, sovereignL1Version: Int) {
            self.activeBinding = activeBinding
            self.activeMechanism = activeMechanism
            self.activeIVKVersion = activeIVKVersion
            self.sovereignL1Version = sovereignL1Version
        }
    }

    /// `REVOKED → LINKED` with the next epoch, the same L2 `LOCKED → ACTIVE` with its new active
    /// binding, an `l1.restored` event, and the approval used: together or not at all.
    ///
    /// `notFound` for a missing link (or another tenant's); `conflict` if the link is not
    /// `REVOKED` (a scheduled shred must be cancelled first; a shredded link never comes back),
    /// if the tenant has another live link, if its L2 changed since it was opened, or if the
    /// approval cannot be used; `preconditionFailed` for a stale `expectedVersion`.
    public func restore(tenantID: String, linkID: String, expectedVersion: Int?, binding: RestoredBinding,
                        approval: (id: String, by: String)?, at: Date) async throws -> (link: L1Link, l2: L2Key, event: OutboxEvent) {
        guard !binding.activeBinding.isEmpty else { throw RegistryError(.invalidInput, "the active binding must not be empty") }
        try Validation.text(binding.activeMechanism, "the active binding's mechanism")
        let now = at.registryMilliseconds
        let eventID = Self.newID()
        return try await durableWrite { db in
            let link = try L1Link.require(db, tenantID: tenantID, id: linkID)
            try Self.expect(link.state, .revoked, linkID: linkID, action: "restored")
            if let expectedVersion, expectedVersion != link.version {
                throw RegistryError(.preconditionFailed, "link \(linkID) is at version \(link.version), not \(expectedVersion)")
            }
            if let live = try String.fetchOne(db, sql: """
                SELECT id FROM l1_link WHERE tenant_id = ? AND state IN ('PENDING_VALIDATION', 'LINKED') LIMIT 1
                """, arguments: [tenantID]) {
                throw RegistryError(.conflict, "tenant \(tenantID) has another live link, \(live); revoke it before restoring \(linkID)")
            }
            guard let l2 = try L2Key.fetch(db, linkID: linkID), l2.state == .locked else {
                throw RegistryError(.conflict, "link \(linkID) has no locked L2 key to restore")
            }
            guard l2.sovereignL1Version == binding.sovereignL1Version else {
                throw RegistryError(.conflict, "the sovereign binding of link \(linkID) changed while it was being restored; try again")
            }
            try self.consumeApproval(db, approval, operation: .restore, target: linkID, at: at)
            try db.execute(sql: """
                UPDATE l1_link SET state = 'LINKED', epoch = epoch + 1, revoked_at = NULL, restored_at = ?, version = version + 1
                WHERE id = ?
                """, arguments: [now, linkID])
            try db.execute(sql: """
                UPDATE l2_key SET state = 'ACTIVE', active_binding = ?, active_mechanism = ?, active_ivk_version = ?, locked_at = NULL,
                                  restored_at = ?, version = version + 1
                WHERE id = ?
                """, arguments: [binding.activeBinding, binding.activeMechanism, binding.activeIVKVersion, now, l2.id])
            let restored = try L1Link.require(db, tenantID: tenantID, id: linkID)
            let payload = try RestorePayload(tenant: tenantID, link: linkID, l2Ref: l2.id, epoch: restored.epoch,
                                             restoredAt: at.registryNormalized.registryISO8601).json()
            let event = try OutboxEvent.insert(db, id: eventID, type: EventType.l1Restored.rawValue, tenantID: tenantID, linkID: linkID,
                                               payload: payload, createdAt: now)
            return (restored, try L2Key.fetch(db, linkID: linkID)!, event)
        }
    }

    /// `REVOKED → SHRED_SCHEDULED`: the L2 is destroyed at `shredAfter` unless cancelled before.
    public func scheduleShred(tenantID: String, linkID: String, shredAfter: Date, approval: (id: String, by: String)?,
                              at: Date) async throws -> L1Link {
        guard shredAfter > at else { throw RegistryError(.invalidInput, "a shred is scheduled in the future") }
        return try await durableWrite { db in
            let link = try L1Link.require(db, tenantID: tenantID, id: linkID)
            try Self.expect(link.state, .revoked, linkID: linkID, action: "scheduled for shredding")
            try self.consumeApproval(db, approval, operation: .shred, target: linkID, at: at)
            try db.execute(sql: "UPDATE l1_link SET state = 'SHRED_SCHEDULED', shred_after = ?, version = version + 1 WHERE id = ?",
                           arguments: [shredAfter.registryMilliseconds, linkID])
            return try L1Link.require(db, tenantID: tenantID, id: linkID)
        }
    }

    /// `SHRED_SCHEDULED → REVOKED`, until the shred has run.
    public func cancelShred(tenantID: String, linkID: String) async throws -> L1Link {
        try await durableWrite { db in
            let link = try L1Link.require(db, tenantID: tenantID, id: linkID)
            try Self.expect(link.state, .shredScheduled, linkID: linkID, action: "cancelled")
            try db.execute(sql: "UPDATE l1_link SET state = 'REVOKED', shred_after = NULL, version = version + 1 WHERE id = ?",
                           arguments: [linkID])
            return try L1Link.require(db, tenantID: tenantID, id: linkID)
        }
    }

    /// Links whose scheduled shred is due at `at`, oldest first.
    public func dueShreds(at: Date, limit: Int = 100) async throws -> [L1Link] {
        try await read { db in
            try Row.fetchAll(db, sql: """
                SELECT * FROM l1_link WHERE state = 'SHRED_SCHEDULED' AND shred_after <= ? ORDER BY shred_after, id LIMIT ?
                """, arguments: [at.registryMilliseconds, Cursor.clamp(limit)]).map(L1Link.init(row:))
        }
    }

    /// The crypto-shred: the L2's sovereign binding destroyed (only its SHA-256, `bindingSHA256`,
    /// is kept, as the subject of the proof), the L2 `SHREDDED`, the link `SHREDDED`, an
    /// `l2.shredded` event. `sealedBinding` must be the binding as stored: it proves the caller
    /// hashed what is destroyed. `conflict` unless the shred is scheduled and due.
    public func shred(linkID: String, sealedBinding: Data, bindingSHA256: Data, at: Date) async throws -> (link: L1Link, l2: L2Key?, event: OutboxEvent) {
        guard bindingSHA256.count == 32 else { throw RegistryError(.invalidInput, "a SHA-256 is 32 bytes") }
        let now = at.registryMilliseconds
        let eventID = Self.newID()
        return try await durableWrite { db in
            guard let link = try L1Link.fetch(db, id: linkID) else { throw RegistryError(.notFound, "no link \(linkID)") }
            try Self.expect(link.state, .shredScheduled, linkID: linkID, action: "shredded")
            guard let due = link.shredAfter, due <= at else {
                throw RegistryError(.conflict, "the shred of link \(linkID) is not due yet")
            }
            let l2 = try L2Key.fetch(db, linkID: linkID)
            if let l2 {
                guard l2.sovereignBinding == sealedBinding else {
                    throw RegistryError(.conflict, "the sovereign binding of link \(linkID) changed; hash it again")
                }
                try db.execute(sql: """
                    UPDATE l2_key SET state = 'SHREDDED', sovereign_binding = NULL, sovereign_mechanism = NULL, sovereign_ivk_version = NULL,
                                      sovereign_l1_version = NULL, shredded_at = ?, shredded_binding_sha256 = ?, version = version + 1
                    WHERE id = ?
                    """, arguments: [now, bindingSHA256, l2.id])
            }
            try db.execute(sql: "UPDATE l1_link SET state = 'SHREDDED', shred_after = NULL, shredded_at = ?, version = version + 1 WHERE id = ?",
                           arguments: [now, linkID])
            let payload = try ShredPayload(tenant: link.tenantID, link: linkID, l2Ref: l2?.id,
                                           shreddedAt: at.registryNormalized.registryISO8601).json()
            let event = try OutboxEvent.insert(db, id: eventID, type: EventType.l2Shredded.rawValue, tenantID: link.tenantID, linkID: linkID,
                                               payload: payload, createdAt: now)
            return (try L1Link.fetch(db, id: linkID)!, try L2Key.fetch(db, linkID: linkID), event)
        }
    }

    /// Moves what the last commits replaced out of the write-ahead log and truncates it, so that
    /// an overwritten binding (an active binding dropped by a revocation, a shredded sovereign
    /// binding) survives in no file of the registry: with `secure_delete` the database pages are
    /// rewritten without it, and the log that still held the old pages is emptied. False when
    /// readers kept the checkpoint from completing (the caller tries again); true for an
    /// in-memory registry, which has no files.
    public func fenceOverwrittenContent() async throws -> Bool {
        guard path != nil || store.dialect == .postgres else { return true }
        return try await store.purgeReplacedRows(tables: ["l2_key"])
    }

    static func expect(_ state: LinkState, _ expected: LinkState, linkID: String, action: String) throws {
        guard state != expected else { return }
        let why: String
        switch state {
        case .shredded: why = "it is SHREDDED: its L2 was destroyed for good"
        case .shredScheduled: why = "it is SHRED_SCHEDULED: cancel the shred first"
        case .linked, .pendingValidation: why = "it is \(state.rawValue), not revoked"
        case .revoked: why = "it is REVOKED, not \(expected.rawValue)"
        }
        throw RegistryError(.conflict, "link \(linkID) cannot be \(action): \(why)")
    }
}

extension L1Link {
    static func require(_ db: Database, tenantID: String, id: String) throws -> L1Link {
        guard let link = try fetch(db, tenantID: tenantID, id: id) else {
            throw RegistryError(.notFound, "no link \(id) for tenant \(tenantID)")
        }
        return link
    }
}
