public import Foundation
import Storage

extension Registry {
    /// Links an L1 rotation from `fromKey` on `keystoreID` concerns: linked and revoked ones (a
    /// scheduled shred or a shredded link has nothing worth re-wrapping).
    private static let l1RotationScope = """
        FROM l1_link WHERE keystore_id = ? AND key_reference = ? AND state IN ('LINKED', 'REVOKED')
        """

    /// A new L1 rotation job. `conflict` if one for the same key is still running.
    public func createL1Rotation(keystoreID: String, fromKey: String, toKeystoreID: String, toKey: String, requestedBy: String,
                                 at: Date) async throws -> RotationJob {
        try Validation.keyReference(fromKey)
        try Validation.keyReference(toKey)
        let id = Self.newID(), now = at.registryMilliseconds
        return try await write { db in
            if let running = try String.fetchOne(db, sql: """
                SELECT id FROM rotation_job WHERE kind = 'l1' AND state = 'RUNNING' AND keystore_id = ? AND from_key = ?
                """, arguments: [keystoreID, fromKey]) {
                throw RegistryError(.conflict, "rotation \(running) of this key is still running")
            }
            let total = try Int.fetchOne(db, sql: "SELECT count(*) " + Self.l1RotationScope, arguments: [keystoreID, fromKey]) ?? 0
            try db.execute(sql: """
                INSERT INTO rotation_job (id, kind, keystore_id, from_key, to_keystore_id, to_key, state, total, phase, requested_by,
                                          created_at, updated_at)
                VALUES (?, 'l1', ?, ?, ?, ?, 'RUNNING', ?, 'links', ?, ?, ?)
                """, arguments: [id, keystoreID, fromKey, toKeystoreID, toKey, total, requestedBy, now, now])
            return try RotationJob.require(db, id: id)
        }
    }

    /// A new IVK rotation job towards `toVersion` (already added). `conflict` if one is running.
    public func createIVKRotation(fromVersion: Int, toVersion: Int, requestedBy: String, at: Date) async throws -> RotationJob {
        let id = Self.newID(), now = at.registryMilliseconds
        return try await write { db in
            if let running = try String.fetchOne(db, sql: "SELECT id FROM rotation_job WHERE kind = 'ivk' AND state = 'RUNNING'") {
                throw RegistryError(.conflict, "IVK rotation \(running) is still running")
            }
            let l2 = try Int.fetchOne(db, sql: """
                SELECT count(*) FROM l2_key WHERE state <> 'SHREDDED' AND (sovereign_ivk_version <> ? OR coalesce(active_ivk_version, ?) <> ?)
                """, arguments: [toVersion, toVersion, toVersion]) ?? 0
            let accounts = try Int.fetchOne(db, sql: "SELECT count(*) FROM account WHERE totp_ivk_version <> ?", arguments: [toVersion]) ?? 0
            try db.execute(sql: """
                INSERT INTO rotation_job (id, kind, from_ivk_version, to_ivk_version, state, total, phase, requested_by, created_at, updated_at)
                VALUES (?, 'ivk', ?, ?, 'RUNNING', ?, 'l2', ?, ?, ?)
                """, arguments: [id, fromVersion, toVersion, l2 + accounts, requestedBy, now, now])
            return try RotationJob.require(db, id: id)
        }
    }

    public func rotationJob(_ id: String) async throws -> RotationJob {
        try await read { db in try RotationJob.require(db, id: id) }
    }

    /// Newest first.
    public func rotationJobs(limit: Int = 100) async throws -> [RotationJob] {
        try await read { db in
            try String.fetchAll(db, sql: "SELECT id FROM rotation_job ORDER BY created_at DESC, id DESC LIMIT ?", arguments: [Cursor.clamp(limit)])
                .compactMap { try RotationJob.fetch(db, id: $0) }
        }
    }

    /// Jobs to resume, oldest first.
    public func runningRotations() async throws -> [RotationJob] {
        try await read { db in
            try String.fetchAll(db, sql: "SELECT id FROM rotation_job WHERE state = 'RUNNING' ORDER BY created_at, id")
                .compactMap { try RotationJob.fetch(db, id: $0) }
        }
    }

    /// The next links of an L1 rotation after its cursor.
    public func nextL1RotationItems(_ job: RotationJob, limit: Int) async throws -> [L1RotationItem] {
        guard job.kind == .l1, let keystore = job.keystoreID, let from = job.fromKey else { return [] }
        return try await read { db in
            try Row.fetchAll(db, sql: "SELECT * " + Self.l1RotationScope + " AND id > ? ORDER BY id LIMIT ?",
                             arguments: [keystore, from, job.cursor, Cursor.clamp(limit)])
                .map { row in
                    let link = try L1Link(row: row)
                    return L1RotationItem(link: link, l2: try L2Key.fetch(db, linkID: link.id))
                }
        }
    }

    /// One link rotated: its L2's sovereign binding replaced by `sealed` (made by the new key,
    /// sealed under `ivkVersion`), the link naming the new key at the next L1 version, the
    /// version history extended, the job's cursor moved; one transaction. `conflict` if the
    /// binding changed since it was read (`expectedL1Version`). `jobID` nil: a single rotation.
    public func applyL1Rotation(jobID: String?, linkID: String, expectedL1Version: Int, toKeystoreID: String, toKey: String,
                                sealed: Data, mechanism: String, ivkVersion: Int, at: Date) async throws -> (L1Link, L2Key?) {
        try Validation.keyReference(toKey)
        let now = at.registryMilliseconds
        return try await durableWrite { db in
            guard let link = try L1Link.fetch(db, id: linkID) else { throw RegistryError(.notFound, "no link \(linkID)") }
            guard link.l1Version == expectedL1Version, link.state == .linked || link.state == .revoked else {
                throw RegistryError(.conflict, "link \(linkID) changed (\(link.state.rawValue), L1 version \(link.l1Version)) while it was rotated")
            }
            let next = link.l1Version + 1
            if let l2 = try L2Key.fetch(db, linkID: linkID) {
                try db.execute(sql: """
                    UPDATE l2_key SET sovereign_binding = ?, sovereign_mechanism = ?, sovereign_ivk_version = ?, sovereign_l1_version = ?,
                                      version = version + 1
                    WHERE id = ? AND sovereign_l1_version = ? AND state <> 'SHREDDED'
                    """, arguments: [sealed, mechanism, ivkVersion, next, l2.id, expectedL1Version])
                guard db.changesCount == 1 else { throw RegistryError(.conflict, "the L2 of link \(linkID) changed while it was rotated") }
            }
            try db.execute(sql: "UPDATE l1_link SET keystore_id = ?, key_reference = ?, l1_version = ?, version = version + 1 WHERE id = ?",
                           arguments: [toKeystoreID, toKey, next, linkID])
            try db.execute(sql: "INSERT INTO l1_key_version (link_id, version, keystore_id, key_reference, created_at) VALUES (?, ?, ?, ?, ?)",
                           arguments: [linkID, next, toKeystoreID, toKey, now])
            if let jobID {
                try db.execute(sql: "UPDATE rotation_job SET done = done + 1, cursor = ?, updated_at = ? WHERE id = ? AND state = 'RUNNING'",
                               arguments: [linkID, now, jobID])
            }
            return (try L1Link.fetch(db, id: linkID)!, try L2Key.fetch(db, linkID: linkID))
        }
    }

    /// An item the job could not rotate: kept with its reason; the job moves on.
    public func recordRotationFailure(jobID: String, item: String, code: String, reason: String, at: Date) async throws {
        try await write { db in
            try db.execute(sql: """
                INSERT INTO rotation_failure (job_id, item, code, reason, at) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (job_id, item) DO UPDATE SET code = excluded.code, reason = excluded.reason, at = excluded.at
                """, arguments: [jobID, item, code, String(reason.prefix(500)), at.registryMilliseconds])
            try db.execute(sql: "UPDATE rotation_job SET failed = failed + 1, cursor = ?, updated_at = ? WHERE id = ?",
                           arguments: [item, at.registryMilliseconds, jobID])
        }
    }

    public func completeRotation(jobID: String, at: Date) async throws -> RotationJob {
        try await write { db in
            try db.execute(sql: "UPDATE rotation_job SET state = 'COMPLETED', finished_at = ?, updated_at = ? WHERE id = ? AND state = 'RUNNING'",
                           arguments: [at.registryMilliseconds, at.registryMilliseconds, jobID])
            return try RotationJob.require(db, id: jobID)
        }
    }

    // MARK: IVK

    /// The next L2 records not yet on the job's IVK version, after its cursor.
    public func nextIVKRotationL2(_ job: RotationJob, limit: Int) async throws -> [L2Key] {
        guard let to = job.toIVKVersion else { return [] }
        return try await read { db in
            try Row.fetchAll(db, sql: """
                SELECT * FROM l2_key WHERE state <> 'SHREDDED' AND (sovereign_ivk_version <> ? OR coalesce(active_ivk_version, ?) <> ?)
                AND id > ? ORDER BY id LIMIT ?
                """, arguments: [to, to, to, job.phase == "l2" ? job.cursor : "\u{10FFFF}", Cursor.clamp(limit)]).map(L2Key.init(row:))
        }
    }

    /// The next accounts whose TOTP secret is sealed under another IVK version.
    public func nextIVKRotationAccounts(_ job: RotationJob, limit: Int) async throws -> [Account] {
        guard let to = job.toIVKVersion else { return [] }
        return try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM account WHERE totp_ivk_version <> ? AND id > ? ORDER BY id LIMIT ?",
                             arguments: [to, job.phase == "accounts" ? job.cursor : "", Cursor.clamp(limit)]).map(Account.init(row:))
        }
    }

    /// One L2 moved to the job's IVK version. Each part is written only if the record still
    /// holds what was re-wrapped: a binding locked by a revocation in the meantime stays locked.
    public func applyIVKRotation(jobID: String, _ rewrap: IVKRewrap, at: Date) async throws {
        let now = at.registryMilliseconds
        try await write { db in
            let job = try RotationJob.require(db, id: jobID)
            guard job.state == .running, let to = job.toIVKVersion else { return }
            if let sovereign = rewrap.sovereign {
                try db.execute(sql: """
                    UPDATE l2_key SET sovereign_binding = ?, sovereign_ivk_version = ?, version = version + 1
                    WHERE id = ? AND sovereign_ivk_version = ? AND state <> 'SHREDDED'
                    """, arguments: [sovereign.sealed, to, rewrap.l2ID, sovereign.fromVersion])
            }
            if let active = rewrap.active {
                try db.execute(sql: """
                    UPDATE l2_key SET active_binding = ?, active_mechanism = ?, active_ivk_version = ?, version = version + 1
                    WHERE id = ? AND state = 'ACTIVE' AND active_ivk_version = ?
                    """, arguments: [active.binding, active.mechanism, to, rewrap.l2ID, active.fromVersion])
            }
            try db.execute(sql: "UPDATE rotation_job SET done = done + 1, phase = 'l2', cursor = ?, updated_at = ? WHERE id = ?",
                           arguments: [rewrap.l2ID, now, jobID])
        }
    }

    /// One account's TOTP secret re-sealed under the job's IVK version.
    public func applyIVKRotation(jobID: String, accountID: String, sealed: Data, fromVersion: Int, at: Date) async throws {
        try await write { db in
            let job = try RotationJob.require(db, id: jobID)
            guard job.state == .running, let to = job.toIVKVersion else { return }
            try db.execute(sql: "UPDATE account SET totp_sealed = ?, totp_ivk_version = ? WHERE id = ? AND totp_ivk_version = ?",
                           arguments: [sealed, to, accountID, fromVersion])
            try db.execute(sql: "UPDATE rotation_job SET done = done + 1, phase = 'accounts', cursor = ?, updated_at = ? WHERE id = ?",
                           arguments: [accountID, at.registryMilliseconds, jobID])
        }
    }

    /// Moves an IVK job from its L2 phase to its accounts phase.
    public func advanceIVKRotation(jobID: String, to phase: String, at: Date) async throws {
        try await write { db in
            try db.execute(sql: "UPDATE rotation_job SET phase = ?, cursor = '', updated_at = ? WHERE id = ? AND phase <> ?",
                           arguments: [phase, at.registryMilliseconds, jobID, phase])
        }
    }

    /// Bindings and secrets still under IVK version `version` (after a rotation: 0).
    public func recordsUsingIVK(_ version: Int) async throws -> Int {
        try await read { db in
            let l2 = try Int.fetchOne(db, sql: """
                SELECT count(*) FROM l2_key WHERE sovereign_ivk_version = ? OR active_ivk_version = ?
                """, arguments: [version, version]) ?? 0
            return l2 + (try Int.fetchOne(db, sql: "SELECT count(*) FROM account WHERE totp_ivk_version = ?", arguments: [version]) ?? 0)
        }
    }

    /// The L1 versions of a link, oldest first.
    public func l1KeyVersions(linkID: String) async throws -> [(version: Int, keystoreID: String, keyReference: String, createdAt: Date)] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM l1_key_version WHERE link_id = ? ORDER BY version", arguments: [linkID]).map {
                (version: $0["version"], keystoreID: $0["keystore_id"], keyReference: $0["key_reference"],
                 createdAt: Date(registryMilliseconds: $0["created_at"]))
            }
        }
    }
}
