import Foundation
import Testing
@testable import Registry

/// The kill-switch's record: link, L2 and outbox event change together or not at all.
@Suite struct RevocationTests {
    @Test func revokeLocksTheL2AndWritesOneEventInOneTransaction() async throws {
        let registry = try await makeRegistry()
        let (_, link, l2) = try await Fixture.linkedTenant(registry)

        let result = try await registry.revoke(tenantID: "acme", linkID: link.id, expectedVersion: link.version,
                                               at: Fixture.revokedAt)

        #expect(result.link.state == .revoked && result.link.revokedAt == Fixture.revokedAt)
        #expect(result.link.version == link.version + 1)
        let locked = try #require(result.l2)
        #expect(locked.id == l2.id && locked.state == .locked && locked.lockedAt == Fixture.revokedAt)
        #expect(locked.activeBinding == nil && locked.activeMechanism == nil && locked.activeIVKVersion == nil)
        #expect(locked.sovereignBinding == l2.sovereignBinding, "only L1 can open it now, and it must still be there")
        #expect(locked.sovereignMechanism == l2.sovereignMechanism && locked.sovereignIVKVersion == l2.sovereignIVKVersion)
        #expect(locked.version == l2.version + 1)

        #expect(result.event.type == "l1.revoked" && result.event.tenantID == "acme" && result.event.linkID == link.id)
        #expect(result.event.createdAt == Fixture.revokedAt)
        let payload = try #require(
            try JSONSerialization.jsonObject(with: Data(result.event.payload.utf8)) as? [String: Any])
        #expect(payload.count == 5 && payload["tenant"] as? String == "acme" && payload["link"] as? String == link.id)
        #expect(payload["l2Ref"] as? String == l2.id && payload["revokedAt"] as? String == "2025-06-15T15:16:40.000Z")
        #expect(payload["epoch"] as? Int == 1)

        // What was returned is what is stored.
        #expect(try await registry.link(tenantID: "acme", id: link.id) == result.link)
        #expect(try await registry.l2Key(linkID: link.id) == result.l2)
        #expect(try await registry.events(after: 0, limit: 10) == [result.event])
        #expect(try await registry.consistencyProblems().isEmpty)
    }

    @Test func secondRevokeIsAConflictAndWritesNoSecondEvent() async throws {
        let registry = try await makeRegistry()
        let (_, link, _) = try await Fixture.linkedTenant(registry)
        let first = try await registry.revoke(tenantID: "acme", linkID: link.id, expectedVersion: nil, at: Fixture.revokedAt)
        await #expect(throws: RegistryError(.conflict, "")) {
            try await registry.revoke(tenantID: "acme", linkID: link.id, expectedVersion: nil, at: Fixture.revokedAt)
        }
        // A retried kill-switch carrying the ETag the first one made stale hears "already revoked".
        await #expect(throws: RegistryError(.conflict, "")) {
            try await registry.revoke(tenantID: "acme", linkID: link.id, expectedVersion: link.version, at: Fixture.revokedAt)
        }
        #expect(try await registry.events(after: 0, limit: 10) == [first.event])
        #expect(try await registry.link(tenantID: "acme", id: link.id) == first.link)
    }

    @Test func staleVersionIsAPreconditionFailureAndChangesNothing() async throws {
        let registry = try await makeRegistry()
        let (_, link, _) = try await Fixture.linkedTenant(registry)
        // Someone else changed the link (a scheduled probe) after this caller read it.
        let probed = try await registry.recordProbe(linkID: link.id, passed: true, report: "{}", at: Fixture.probedAt)
        let l2Before = try await registry.l2Key(linkID: link.id)

        await #expect(throws: RegistryError(.preconditionFailed, "")) {
            try await registry.revoke(tenantID: "acme", linkID: link.id, expectedVersion: link.version, at: Fixture.revokedAt)
        }
        #expect(try await registry.link(tenantID: "acme", id: link.id) == probed)
        #expect(try await registry.l2Key(linkID: link.id) == l2Before)
        #expect(try await registry.events(after: 0, limit: 10).isEmpty)

        let revoked = try await registry.revoke(tenantID: "acme", linkID: link.id, expectedVersion: probed.version,
                                                at: Fixture.revokedAt)
        #expect(revoked.link.state == .revoked)
    }

    @Test func revokingAMissingLinkIsNotFound() async throws {
        let registry = try await makeRegistry()
        _ = try await registry.createTenant(id: "acme", name: "Acme")
        await #expect(throws: RegistryError(.notFound, "")) {
            try await registry.revoke(tenantID: "acme", linkID: UUID().uuidString, expectedVersion: nil, at: Fixture.revokedAt)
        }
        #expect(try await registry.events(after: 0, limit: 10).isEmpty)
    }

    @Test func revocationPayloadNamesANullL2WhenThereIsNone() throws {
        let json = try RevocationPayload(tenant: "acme", link: "l", l2Ref: nil, epoch: 1, revokedAt: Fixture.revokedAt).json()
        #expect(json == #"{"epoch":1,"l2Ref":null,"link":"l","revokedAt":"2025-06-15T15:16:40.000Z","tenant":"acme"}"#)
    }
}
