import Foundation
import Testing
@testable import Registry

@Suite struct TenantTests {
    @Test func createdTenantCanBeFetched() async throws {
        let registry = try await makeRegistry()
        let before = Date()
        let created = try await registry.createTenant(id: "acme-42", name: "Acme GmbH")
        #expect(created.id == "acme-42" && created.name == "Acme GmbH" && created.version == 1)
        #expect(abs(created.createdAt.timeIntervalSince(before)) < 5)
        #expect(try await registry.tenant("acme-42") == created)
    }

    @Test func missingTenantIsNotFound() async throws {
        let registry = try await makeRegistry()
        await #expect(throws: RegistryError(.notFound, "")) { try await registry.tenant("nobody") }
    }

    @Test func duplicateTenantIsAConflict() async throws {
        let registry = try await makeRegistry()
        _ = try await registry.createTenant(id: "acme", name: "Acme")
        await #expect(throws: RegistryError(.conflict, "")) { try await registry.createTenant(id: "acme", name: "Other") }
        #expect(try await registry.tenant("acme").name == "Acme", "the first tenant is untouched")
    }

    @Test(arguments: ["", "-acme", "acme-", "Acme", "acme_1", "acme 1", "acmé", "a/b", String(repeating: "a", count: 64)])
    func badTenantIDIsInvalidInput(_ id: String) async throws {
        let registry = try await makeRegistry()
        await #expect(throws: RegistryError(.invalidInput, "")) { try await registry.createTenant(id: id, name: "Acme") }
        #expect(try await registry.tenants(limit: 10, after: nil).items.isEmpty, "bad input changes nothing")
    }

    @Test(arguments: ["a", "0", "a-b", "0-9-z", String(repeating: "a", count: 63)])
    func goodTenantIDIsAccepted(_ id: String) async throws {
        let registry = try await makeRegistry()
        #expect(try await registry.createTenant(id: id, name: "Acme").id == id)
    }

    @Test(arguments: ["", String(repeating: "n", count: 201), "line\nbreak"])
    func badTenantNameIsInvalidInput(_ name: String) async throws {
        let registry = try await makeRegistry()
        await #expect(throws: RegistryError(.invalidInput, "")) { try await registry.createTenant(id: "acme", name: name) }
    }

    @Test func listingPagesInCreationOrderAndEndsWithANilCursor() async throws {
        let registry = try await makeRegistry()
        let ids = (1...7).map { "tenant-\($0)" }
        for id in ids { _ = try await registry.createTenant(id: id, name: id) }

        let first = try await registry.tenants(limit: 3, after: nil)
        let afterFirst: String = try #require(first.nextCursor)
        let second = try await registry.tenants(limit: 3, after: afterFirst)
        let afterSecond: String = try #require(second.nextCursor)
        let third = try await registry.tenants(limit: 3, after: afterSecond)
        #expect(first.items.count == 3 && second.items.count == 3 && third.items.count == 1)
        #expect(third.nextCursor == nil)
        #expect((first.items + second.items + third.items).map(\.id) == ids)
    }

    @Test func exactlyFullLastPageHasNoCursor() async throws {
        let registry = try await makeRegistry()
        for index in 1...6 { _ = try await registry.createTenant(id: "t\(index)", name: "T") }
        let first = try await registry.tenants(limit: 3, after: nil)
        let afterFirst: String = try #require(first.nextCursor)
        let second = try await registry.tenants(limit: 3, after: afterFirst)
        #expect(second.items.count == 3 && second.nextCursor == nil)
    }

    @Test func limitIsClampedToOneThroughFiveHundred() async throws {
        let registry = try await makeRegistry()
        for index in 1...3 { _ = try await registry.createTenant(id: "t\(index)", name: "T") }
        #expect(try await registry.tenants(limit: 0, after: nil).items.count == 1)
        #expect(try await registry.tenants(limit: -5, after: nil).items.count == 1)
        #expect(try await registry.tenants(limit: 10_000, after: nil).items.count == 3)
    }

    @Test(arguments: ["not-a-cursor", "", "eyJ4IjoxfQ", "%%%"])
    func badCursorIsInvalidInput(_ cursor: String) async throws {
        let registry = try await makeRegistry()
        await #expect(throws: RegistryError(.invalidInput, "")) { try await registry.tenants(limit: 3, after: cursor) }
    }

    @Test func cursorOfAnotherListingIsRefused() async throws {
        let registry = try await makeRegistry()
        let (_, _, _) = try await Fixture.linkedTenant(registry, "a")
        _ = try await Fixture.linkedTenant(registry, "b")
        let tenantCursor: String = try #require(try await registry.tenants(limit: 1, after: nil).nextCursor)
        await #expect(throws: RegistryError(.invalidInput, "")) {
            try await registry.links(tenantID: "a", limit: 1, after: tenantCursor)
        }
    }

    @Test func deleteIsRefusedWhileALinkIsLive() async throws {
        let registry = try await makeRegistry()
        let (tenant, link, _) = try await Fixture.linkedTenant(registry)
        await #expect(throws: RegistryError(.conflict, "")) {
            try await registry.deleteTenant(tenant.id, expectedVersion: tenant.version)
        }
        #expect(try await registry.link(tenantID: tenant.id, id: link.id).state == .linked)
        #expect(try await registry.l2Key(linkID: link.id)?.state == .active)
    }

    @Test func deleteIsRefusedWhileARevokedLinkCanBeRestored() async throws {
        let registry = try await makeRegistry()
        let (tenant, link, l2) = try await Fixture.linkedTenant(registry)
        let revoked = try await registry.revoke(tenantID: tenant.id, linkID: link.id, expectedVersion: nil, at: Fixture.revokedAt)
        // Deleting would destroy the sovereign binding without the shred's approval and wait.
        await #expect(throws: RegistryError(.conflict, "")) { try await registry.deleteTenant(tenant.id, expectedVersion: nil) }
        _ = try await registry.scheduleShred(tenantID: tenant.id, linkID: link.id, shredAfter: Fixture.revokedAt.addingTimeInterval(60),
                                             approval: nil, at: Fixture.revokedAt)
        await #expect(throws: RegistryError(.conflict, "")) { try await registry.deleteTenant(tenant.id, expectedVersion: nil) }
        #expect(try await registry.l2Key(linkID: link.id)?.sovereignBinding == l2.sovereignBinding)
        #expect(revoked.link.state == .revoked)
    }

    @Test func deleteAfterShreddingRemovesEverythingButTheOutboxEvents() async throws {
        let registry = try await makeRegistry()
        let (tenant, link, _) = try await Fixture.linkedTenant(registry)
        try await registry.recordAttempt(HandshakeAttempt(tenantID: tenant.id, provider: "pkcs11", keystoreID: "t",
                                                          keyReference: Fixture.keyReference, passed: true,
                                                          at: Fixture.probedAt))
        let revoked = try await registry.revoke(tenantID: tenant.id, linkID: link.id, expectedVersion: nil,
                                                at: Fixture.revokedAt)
        let shredded = try await Fixture.shred(registry, link)
        _ = try await Fixture.linkedTenant(registry, "bystander")

        try await registry.deleteTenant(tenant.id, expectedVersion: tenant.version)

        await #expect(throws: RegistryError(.notFound, "")) { try await registry.tenant(tenant.id) }
        #expect(try await registry.l2Key(linkID: link.id) == nil)
        #expect(try await registry.links(state: .shredded).isEmpty)
        #expect(try await registry.events(after: 0, limit: 10) == [revoked.event, shredded.event], "the proof of revocation stays")
        #expect(try await registry.links(state: .linked).map(\.tenantID) == ["bystander"], "other tenants untouched")
        #expect(try await registry.consistencyProblems().isEmpty)
        // The id is free again, and the new tenant starts clean.
        _ = try await registry.createTenant(id: tenant.id, name: "Acme again")
        #expect(try await registry.attempts(tenantID: tenant.id, limit: 10).isEmpty)
        #expect(try await registry.links(tenantID: tenant.id, limit: 10, after: nil).items.isEmpty)
    }

    @Test func deleteWithAStaleVersionIsAPreconditionFailure() async throws {
        let registry = try await makeRegistry()
        let tenant = try await registry.createTenant(id: "acme", name: "Acme")
        await #expect(throws: RegistryError(.preconditionFailed, "")) {
            try await registry.deleteTenant(tenant.id, expectedVersion: tenant.version + 1)
        }
        #expect(try await registry.tenant("acme") == tenant)
        try await registry.deleteTenant(tenant.id, expectedVersion: nil)
        await #expect(throws: RegistryError(.notFound, "")) { try await registry.tenant("acme") }
    }

    @Test func deletingAMissingTenantIsNotFound() async throws {
        let registry = try await makeRegistry()
        await #expect(throws: RegistryError(.notFound, "")) { try await registry.deleteTenant("ghost", expectedVersion: nil) }
    }
}
