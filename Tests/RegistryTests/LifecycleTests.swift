import CMKCore
import Foundation
import GRDB
@testable import Registry
import Storage
import Testing

/// Restore, crypto-shred, approvals and rotations as the registry records them.
@Suite struct LifecycleTests {
    static let later = Fixture.revokedAt.addingTimeInterval(300)

    static func binding(_ l2: L2Key, version: Int = 1) -> Registry.RestoredBinding {
        .init(activeBinding: Data([9, 9, 9, 9, 9, 9, 9, 9]), activeMechanism: "CKM_AES_KEY_WRAP_PAD", activeIVKVersion: 1,
              sovereignL1Version: version)
    }

    @Test func restoreBringsTheSameL2BackUnderANewEpochWithAnEvent() async throws {
        let registry = try await makeRegistry()
        let (_, link, l2) = try await Fixture.linkedTenant(registry)
        let revoked = try await registry.revoke(tenantID: "acme", linkID: link.id, expectedVersion: nil, at: Fixture.revokedAt)

        let restored = try await registry.restore(tenantID: "acme", linkID: link.id, expectedVersion: revoked.link.version,
                                                  binding: Self.binding(l2), approval: nil, at: Self.later)
        #expect(restored.link.id == link.id && restored.link.state == .linked && restored.link.epoch == 2)
        #expect(restored.link.revokedAt == nil && restored.link.restoredAt == Self.later)
        #expect(restored.l2.id == l2.id && restored.l2.state == .active && restored.l2.lockedAt == nil)
        #expect(restored.l2.activeBinding == Data([9, 9, 9, 9, 9, 9, 9, 9]))
        #expect(restored.l2.sovereignBinding == l2.sovereignBinding, "the L2 is the same one")
        #expect(restored.event.type == EventType.l1Restored.rawValue && restored.event.linkID == link.id)
        let payload = try #require(try JSONSerialization.jsonObject(with: Data(restored.event.payload.utf8)) as? [String: Any])
        #expect(payload["epoch"] as? Int == 2 && payload["l2Ref"] as? String == l2.id)
        #expect(try await registry.consistencyProblems().isEmpty)

        // Revoked again: the next revocation names epoch 2, and the revocation view reads the latest.
        let again = try await registry.revoke(tenantID: "acme", linkID: link.id, expectedVersion: nil, at: Self.later.addingTimeInterval(1))
        let secondPayload = try #require(try JSONSerialization.jsonObject(with: Data(again.event.payload.utf8)) as? [String: Any])
        #expect(secondPayload["epoch"] as? Int == 2)
        #expect(try await registry.revocationEvent(linkID: link.id)?.id == again.event.id)
    }

    @Test func restoreIsRefusedUnlessTheLinkIsRevokedAndChangesNothing() async throws {
        let registry = try await makeRegistry()
        let (_, link, l2) = try await Fixture.linkedTenant(registry)
        await #expect(throws: RegistryError(.conflict, "")) {
            try await registry.restore(tenantID: "acme", linkID: link.id, expectedVersion: nil, binding: Self.binding(l2), approval: nil, at: Self.later)
        }
        let revoked = try await registry.revoke(tenantID: "acme", linkID: link.id, expectedVersion: nil, at: Fixture.revokedAt)
        await #expect(throws: RegistryError(.preconditionFailed, "")) {
            try await registry.restore(tenantID: "acme", linkID: link.id, expectedVersion: link.version, binding: Self.binding(l2),
                                       approval: nil, at: Self.later)
        }
        // A binding opened before a rotation is stale.
        await #expect(throws: RegistryError(.conflict, "")) {
            try await registry.restore(tenantID: "acme", linkID: link.id, expectedVersion: nil, binding: Self.binding(l2, version: 2),
                                       approval: nil, at: Self.later)
        }
        await #expect(throws: RegistryError(.notFound, "")) {
            try await registry.restore(tenantID: "other", linkID: link.id, expectedVersion: nil, binding: Self.binding(l2), approval: nil, at: Self.later)
        }
        #expect(try await registry.link(tenantID: "acme", id: link.id) == revoked.link)
        #expect(try await registry.l2Key(linkID: link.id) == revoked.l2)
        #expect(try await registry.events(after: 0, limit: 10) == [revoked.event])
    }

    @Test func shredScheduledCanBeCancelledAndRunsOnlyWhenDue() async throws {
        let registry = try await makeRegistry()
        let (_, link, l2) = try await Fixture.linkedTenant(registry)
        _ = try await registry.revoke(tenantID: "acme", linkID: link.id, expectedVersion: nil, at: Fixture.revokedAt)
        let due = Fixture.revokedAt.addingTimeInterval(86_400)
        let scheduled = try await registry.scheduleShred(tenantID: "acme", linkID: link.id, shredAfter: due, approval: nil, at: Fixture.revokedAt)
        #expect(scheduled.state == .shredScheduled && scheduled.shredAfter == due)
        // Not restorable while scheduled: cancel first.
        await #expect(throws: RegistryError(.conflict, "")) {
            try await registry.restore(tenantID: "acme", linkID: link.id, expectedVersion: nil, binding: Self.binding(l2), approval: nil, at: Self.later)
        }
        await #expect(throws: RegistryError(.conflict, "")) {
            try await registry.shred(linkID: link.id, sealedBinding: l2.sovereignBinding!, bindingSHA256: Data(count: 32), at: Self.later)
        }
        #expect(try await registry.dueShreds(at: Self.later).isEmpty)
        #expect(try await registry.dueShreds(at: due).map(\.id) == [link.id])
        let cancelled = try await registry.cancelShred(tenantID: "acme", linkID: link.id)
        #expect(cancelled.state == .revoked && cancelled.shredAfter == nil)
        #expect(try await registry.dueShreds(at: due).isEmpty)

        _ = try await registry.scheduleShred(tenantID: "acme", linkID: link.id, shredAfter: due, approval: nil, at: Self.later)
        // The caller must hash what is stored.
        await #expect(throws: RegistryError(.conflict, "")) {
            try await registry.shred(linkID: link.id, sealedBinding: Data([1]), bindingSHA256: Data(count: 32), at: due)
        }
        let hash = Data(repeating: 0xAB, count: 32)
        let shredded = try await registry.shred(linkID: link.id, sealedBinding: l2.sovereignBinding!, bindingSHA256: hash, at: due)
        #expect(shredded.link.state == .shredded && shredded.link.shreddedAt == due)
        let gone = try #require(shredded.l2)
        #expect(gone.state == .shredded && gone.sovereignBinding == nil && gone.activeBinding == nil && gone.shreddedBindingSHA256 == hash)
        #expect(shredded.event.type == EventType.l2Shredded.rawValue)
        #expect(try await registry.consistencyProblems().isEmpty)
        // Final, for the Swift code and for the schema.
        await #expect(throws: RegistryError(.conflict, "")) { try await registry.cancelShred(tenantID: "acme", linkID: link.id) }
        await #expect(throws: RegistryError(.conflict, "")) {
            try await registry.restore(tenantID: "acme", linkID: link.id, expectedVersion: nil, binding: Self.binding(l2), approval: nil, at: due)
        }
        await #expect(throws: RegistryError(.conflict, "")) {
            try await registry.write { db in
                try db.execute(sql: "UPDATE l2_key SET sovereign_binding = \(TestBackend.blob("01")), sovereign_mechanism = 'm', sovereign_ivk_version = 1, sovereign_l1_version = 1 WHERE id = ?",
                               arguments: [l2.id])
            }
        }
        await #expect(throws: RegistryError(.conflict, "")) {
            try await registry.write { db in try db.execute(sql: "UPDATE l1_link SET state = 'REVOKED', shredded_at = NULL WHERE id = ?", arguments: [link.id]) }
        }
    }

    @Test func approvalsCountDistinctPeopleOtherThanTheRequesterAndExpire() async throws {
        let registry = try await makeRegistry()
        let (_, link, l2) = try await Fixture.linkedTenant(registry)
        _ = try await registry.revoke(tenantID: "acme", linkID: link.id, expectedVersion: nil, at: Fixture.revokedAt)
        let expires = Self.later.addingTimeInterval(3600)
        let request = try await registry.createApprovalRequest(operation: .restore, tenantID: "acme", target: link.id, parameters: "{}",
                                                               reason: "customer asked", requestedBy: "ana", requesterRole: "security_admin",
                                                               requiredApprovals: 2, expiresAt: expires, at: Self.later)
        #expect(request.state(at: Self.later) == .pending && request.votes.isEmpty)
        // One open request per target.
        await #expect(throws: RegistryError(.conflict, "")) {
            try await registry.createApprovalRequest(operation: .restore, tenantID: "acme", target: link.id, parameters: "{}", reason: nil,
                                                     requestedBy: "bob", requesterRole: "security_admin", requiredApprovals: 1,
                                                     expiresAt: expires, at: Self.later)
        }
        await #expect(throws: RegistryError(.conflict, "")) { try await registry.vote(on: request.id, by: "ana", .approve, at: Self.later) }
        // The schema says the same when the Swift check is bypassed.
        await #expect(throws: RegistryError(.conflict, "")) {
            try await registry.write { db in
                try db.execute(sql: "INSERT INTO approval_vote (request_id, approver, decision, at) VALUES (?, 'ana', 'APPROVE', 0)",
                               arguments: [request.id])
            }
        }
        let once = try await registry.vote(on: request.id, by: "bob", .approve, at: Self.later)
        #expect(once.state(at: Self.later) == .pending && once.approvals == 1)
        await #expect(throws: RegistryError(.conflict, "")) { try await registry.vote(on: request.id, by: "bob", .approve, at: Self.later) }
        // Not usable before it is approved.
        await #expect(throws: RegistryError(.conflict, "")) {
            try await registry.restore(tenantID: "acme", linkID: link.id, expectedVersion: nil, binding: Self.binding(l2),
                                       approval: (request.id, "ana"), at: Self.later)
        }
        let approved = try await registry.vote(on: request.id, by: "carol", .approve, at: Self.later)
        #expect(approved.state(at: Self.later) == .approved && approved.approvals == 2)
        #expect(approved.state(at: expires) == .expired, "an approval unused by its expiry is gone")
        await #expect(throws: RegistryError(.conflict, "")) {
            try await registry.restore(tenantID: "acme", linkID: link.id, expectedVersion: nil, binding: Self.binding(l2),
                                       approval: (request.id, "ana"), at: expires)
        }
        // Someone who took no part cannot use it; a participant can, once.
        await #expect(throws: RegistryError(.conflict, "")) {
            try await registry.restore(tenantID: "acme", linkID: link.id, expectedVersion: nil, binding: Self.binding(l2),
                                       approval: (request.id, "mallory"), at: Self.later)
        }
        #expect(try await registry.link(tenantID: "acme", id: link.id).state == .revoked)
        let restored = try await registry.restore(tenantID: "acme", linkID: link.id, expectedVersion: nil, binding: Self.binding(l2),
                                                  approval: (request.id, "ana"), at: Self.later)
        #expect(restored.link.state == .linked)
        let used = try await registry.approvalRequest(request.id)
        #expect(used.storedState == .executed && used.executedBy == "ana")
        // A request for a shred is not a restore's.
        await #expect(throws: RegistryError(.conflict, "")) { try await registry.vote(on: request.id, by: "dave", .approve, at: Self.later) }
    }

    @Test func aRejectionEndsARequestAndTheRequesterMayCancel() async throws {
        let registry = try await makeRegistry()
        let expires = Self.later.addingTimeInterval(60)
        let first = try await registry.createApprovalRequest(operation: .shred, tenantID: "acme", target: "link-1", parameters: "{}",
                                                             reason: nil, requestedBy: "ana", requesterRole: "security_admin",
                                                             requiredApprovals: 3, expiresAt: expires, at: Self.later)
        let rejected = try await registry.vote(on: first.id, by: "bob", .reject, at: Self.later)
        #expect(rejected.storedState == .rejected)
        await #expect(throws: RegistryError(.conflict, "")) { try await registry.vote(on: first.id, by: "carol", .approve, at: Self.later) }
        let second = try await registry.createApprovalRequest(operation: .shred, tenantID: "acme", target: "link-1", parameters: "{}",
                                                              reason: nil, requestedBy: "ana", requesterRole: "security_admin",
                                                              requiredApprovals: 1, expiresAt: expires, at: Self.later)
        await #expect(throws: RegistryError(.conflict, "")) { try await registry.cancelApprovalRequest(second.id, by: "bob", at: Self.later) }
        #expect(try await registry.cancelApprovalRequest(second.id, by: "ana", at: Self.later).storedState == .cancelled)
        await #expect(throws: RegistryError(.notFound, "")) { try await registry.vote(on: "nope", by: "bob", .approve, at: Self.later) }
        await #expect(throws: RegistryError(.conflict, "")) {
            try await registry.write { db in try db.execute(sql: "DELETE FROM approval_vote") }
        }
    }

    @Test func l1RotationKeepsTheL2AndRecordsEveryVersion() async throws {
        let registry = try await makeRegistry()
        var links: [L1Link] = []
        for tenant in ["a", "b", "c"] { links.append(try await Fixture.linkedTenant(registry, tenant).1) }
        _ = try await registry.revoke(tenantID: "b", linkID: links[1].id, expectedVersion: nil, at: Fixture.revokedAt)
        let job = try await registry.createL1Rotation(keystoreID: "softhsm-cmk-l1", fromKey: Fixture.keyReference, toKeystoreID: "softhsm-cmk-l1",
                                                      toKey: "pkcs11:token=cmk-l1;object=tenant-root-2", requestedBy: "ana", at: Self.later)
        #expect(job.total == 3 && job.state == .running)
        await #expect(throws: RegistryError(.conflict, "")) {
            try await registry.createL1Rotation(keystoreID: "softhsm-cmk-l1", fromKey: Fixture.keyReference, toKeystoreID: "x", toKey: "y",
                                                requestedBy: "bob", at: Self.later)
        }
        var current = job
        while true {
            let items = try await registry.nextL1RotationItems(current, limit: 2)
            if items.isEmpty { break }
            for item in items {
                _ = try await registry.applyL1Rotation(jobID: job.id, linkID: item.link.id, expectedL1Version: item.link.l1Version,
                                                       toKeystoreID: "softhsm-cmk-l1", toKey: "pkcs11:token=cmk-l1;object=tenant-root-2",
                                                       sealed: Data([7, 7, 7]), mechanism: "CKM_AES_KEY_WRAP_PAD", ivkVersion: 1, at: Self.later)
            }
            current = try await registry.rotationJob(job.id)
        }
        #expect(current.done == 3 && current.cursor == links.map(\.id).max())
        for link in links {
            let rotated = try await registry.link(tenantID: link.tenantID, id: link.id)
            #expect(rotated.l1Version == 2 && rotated.keyReference.hasSuffix("tenant-root-2") && rotated.state == link.state || rotated.tenantID == "b")
            let l2 = try #require(try await registry.l2Key(linkID: link.id))
            #expect(l2.sovereignL1Version == 2 && l2.sovereignBinding == Data([7, 7, 7]))
            #expect(try await registry.l1KeyVersions(linkID: link.id).map(\.version) == [1, 2])
        }
        // A stale item (read before another rotation) is refused.
        await #expect(throws: RegistryError(.conflict, "")) {
            try await registry.applyL1Rotation(jobID: nil, linkID: links[0].id, expectedL1Version: 1, toKeystoreID: "k", toKey: "pkcs11:object=z",
                                               sealed: Data([1]), mechanism: "m", ivkVersion: 1, at: Self.later)
        }
        #expect(try await registry.completeRotation(jobID: job.id, at: Self.later).state == .completed)
        #expect(try await registry.consistencyProblems().isEmpty)
    }

    @Test func ivkRotationNeverReinstatesAnActiveBindingLockedMeanwhile() async throws {
        let registry = try await makeRegistry()
        let (_, link, l2) = try await Fixture.linkedTenant(registry)
        _ = try await registry.addIVKVersion(keyReference: "pkcs11:object=ivk-1")
        _ = try await registry.addIVKVersion(keyReference: "pkcs11:object=ivk-2")
        let job = try await registry.createIVKRotation(fromVersion: 1, toVersion: 2, requestedBy: "op", at: Self.later)
        #expect(job.total == 1)
        let item = try #require(try await registry.nextIVKRotationL2(job, limit: 10).first)
        #expect(item.id == l2.id)
        // The kill-switch lands between the re-wrap and its write.
        _ = try await registry.revoke(tenantID: "acme", linkID: link.id, expectedVersion: nil, at: Self.later)
        try await registry.applyIVKRotation(jobID: job.id, IVKRewrap(l2ID: l2.id, sovereign: (Data([5, 5]), 1),
                                                                     active: (Data([6, 6]), "m", 1)), at: Self.later)
        let after = try #require(try await registry.l2Key(linkID: link.id))
        #expect(after.state == .locked && after.activeBinding == nil, "the revocation stands")
        #expect(after.sovereignBinding == Data([5, 5]) && after.sovereignIVKVersion == 2)
        #expect(try await registry.recordsUsingIVK(1) == 0)
        #expect(try await registry.nextIVKRotationL2(try await registry.rotationJob(job.id), limit: 10).isEmpty)
    }

    @Test func allowedRegionsAreValidatedAndAnnounced() async throws {
        let registry = try await makeRegistry()
        let tenant = try await registry.createTenant(id: "acme", name: "Acme", allowedRegions: ["eu-west-1", "eu-central-1"])
        #expect(tenant.allowedRegions == ["eu-central-1", "eu-west-1"] && tenant.allows(region: "eu-west-1") && !tenant.allows(region: "us-east-1"))
        for bad: [String] in [[], ["EU"], ["a", "a"]] {
            await #expect(throws: RegistryError(.invalidInput, "")) { try await registry.setAllowedRegions(tenantID: "acme", bad, expectedVersion: nil) }
        }
        let (updated, event) = try await registry.setAllowedRegions(tenantID: "acme", nil, expectedVersion: tenant.version)
        #expect(updated.allowedRegions == nil && updated.allows(region: "anywhere") && updated.version == tenant.version + 1)
        #expect(event.type == EventType.tenantRegions.rawValue && event.payload == #"{"allowedRegions":null,"tenant":"acme"}"#)
    }

    @Test(.enabled(if: TestBackend.isSQLite)) func aVersion4FileMigratesWithItsLinksRevocationsAndAccounts() async throws {
        try await withTemporaryRegistryFile { path in
            do {
                let pool = try DatabasePool(path: path)
                try RegistrySchema.migrator.migrate(pool, upTo: "v4-accounts")
                try await pool.write { db in
                    try db.execute(sql: """
                        INSERT INTO tenant (id, name, created_at, version) VALUES ('acme', 'Acme', 0, 1);
                        INSERT INTO l1_link (id, tenant_id, provider, keystore_id, key_reference, state, created_at, revoked_at, version)
                        VALUES ('old', 'acme', 'pkcs11', 'hsm', 'pkcs11:object=l1', 'REVOKED', 0, 5, 2),
                               ('new', 'acme', 'pkcs11', 'hsm', 'pkcs11:object=l1', 'LINKED', 1, NULL, 1);
                        INSERT INTO l2_key (id, tenant_id, link_id, sovereign_binding, sovereign_mechanism, sovereign_ivk_version,
                                            active_binding, active_mechanism, active_ivk_version, state, created_at, locked_at, version)
                        VALUES ('l2-old', 'acme', 'old', x'01', 'm', 1, NULL, NULL, NULL, 'LOCKED', 0, 5, 2),
                               ('l2-new', 'acme', 'new', x'02', 'm', 1, x'03', 'm', 1, 'ACTIVE', 1, NULL, 1);
                        INSERT INTO account (id, username, role, password_hash, totp_sealed, totp_ivk_version, created_at, created_by)
                        VALUES ('a1', 'ana', 'security_admin', '$2b$04$x', x'00', 1, 0, 'cli');
                        INSERT INTO admin_session (token_hash, id, account_id, csrf_hash, auth_method, created_at, last_used_at, expires_at)
                        VALUES (zeroblob(32), 's1', 'a1', zeroblob(32), 'password+totp', 0, 0, 1);
                        """)
                }
            }
            let registry = try Registry(path: path)
            let links = try await registry.links(tenantID: "acme", limit: 10, after: nil).items
            #expect(links.map(\.state) == [.revoked, .linked] && links.allSatisfy { $0.epoch == 1 && $0.l1Version == 1 })
            #expect(try await registry.l2Keys(tenantID: "acme").map(\.sovereignL1Version) == [1, 1])
            #expect(try await registry.l1KeyVersions(linkID: "old").map(\.keyReference) == ["pkcs11:object=l1"])
            #expect(try await registry.account(username: "ana")?.role == .securityAdmin)
            #expect(try await registry.consistencyProblems().isEmpty)
            #expect(try await registry.storageSettings().appliedMigrations.last == "v10-ha")
        }
    }
}
