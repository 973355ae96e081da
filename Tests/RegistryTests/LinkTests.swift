import Foundation
import Testing
@testable import Registry

@Suite struct LinkTests {
    @Test func createLinkStoresALinkedLinkAndAnActiveL2Together() async throws {
        let registry = try await makeRegistry()
        _ = try await registry.createTenant(id: "acme", name: "Acme")
        let newL2 = Fixture.newL2()
        let (link, l2) = try await registry.createLink(tenantID: "acme", provider: "pkcs11", keystoreID: "softhsm",
                                                       keyReference: Fixture.keyReference,
                                                       probeReport: Fixture.probeReport, probedAt: Fixture.probedAt,
                                                       l2: newL2)
        #expect(UUID(uuidString: link.id) != nil)
        #expect(link.tenantID == "acme" && link.provider == "pkcs11" && link.keystoreID == "softhsm")
        #expect(link.keyReference == Fixture.keyReference)
        #expect(link.state == .linked && link.version == 1 && link.revokedAt == nil)
        #expect(link.lastProbeAt == Fixture.probedAt && link.lastProbePassed == true)
        #expect(link.lastProbeReport == Fixture.probeReport)

        #expect(l2.id == newL2.id && l2.linkID == link.id && l2.tenantID == "acme")
        #expect(l2.state == .active && l2.version == 1 && l2.lockedAt == nil)
        #expect(l2.sovereignBinding == Fixture.sovereignBinding && l2.activeBinding == Fixture.activeBinding)
        #expect(l2.sovereignMechanism == newL2.sovereignMechanism && l2.activeMechanism == newL2.activeMechanism)
        #expect(l2.sovereignIVKVersion == 1 && l2.activeIVKVersion == 1)

        #expect(try await registry.link(tenantID: "acme", id: link.id) == link)
        #expect(try await registry.l2Key(linkID: link.id) == l2)
        #expect(try await registry.l2Keys(tenantID: "acme") == [l2])
    }

    @Test func secondLiveLinkForTheSameTenantIsAConflict() async throws {
        let registry = try await makeRegistry()
        let (_, first, _) = try await Fixture.linkedTenant(registry)
        await #expect(throws: RegistryError(.conflict, "")) { try await Fixture.link(registry, "acme") }
        #expect(try await registry.links(tenantID: "acme", limit: 10, after: nil).items == [first])
        #expect(try await registry.l2Keys(tenantID: "acme").count == 1, "the refused link left no L2 behind")
    }

    @Test func aNewLinkWaitsUntilTheRevokedOneIsShredded() async throws {
        let registry = try await makeRegistry()
        let (_, first, _) = try await Fixture.linkedTenant(registry)
        _ = try await registry.revoke(tenantID: "acme", linkID: first.id, expectedVersion: nil, at: Fixture.revokedAt)
        // Restorable: a second L2 beside it is refused (the way back is the restore).
        await #expect(throws: RegistryError(.conflict, "")) { try await Fixture.link(registry, "acme") }
        try await Fixture.shred(registry, first)
        let (second, _) = try await Fixture.link(registry, "acme")
        #expect(second.id != first.id && second.state == .linked)
        let page = try await registry.links(tenantID: "acme", limit: 10, after: nil)
        #expect(page.items.map(\.id) == [first.id, second.id])
        #expect(try await registry.l2Keys(tenantID: "acme").map(\.state) == [.shredded, .active])
        #expect(try await registry.consistencyProblems().isEmpty)
    }

    @Test func createLinkForAMissingTenantIsNotFound() async throws {
        let registry = try await makeRegistry()
        await #expect(throws: RegistryError(.notFound, "")) { try await Fixture.link(registry, "ghost") }
    }

    @Test func reusedL2ReferenceIsAConflictAndLeavesNoLink() async throws {
        let registry = try await makeRegistry()
        let (_, _, l2) = try await Fixture.linkedTenant(registry, "a")
        _ = try await registry.createTenant(id: "b", name: "B")
        await #expect(throws: RegistryError(.conflict, "")) {
            try await registry.createLink(tenantID: "b", provider: "pkcs11", keystoreID: "k",
                                          keyReference: Fixture.keyReference, probeReport: Fixture.probeReport,
                                          probedAt: Fixture.probedAt, l2: Fixture.newL2(id: l2.id))
        }
        #expect(try await registry.links(tenantID: "b", limit: 10, after: nil).items.isEmpty)
    }

    @Test(arguments: [
        ("", Fixture.probeReport),
        ("pkcs11:token=cmk;object=root?pin-value=1234", Fixture.probeReport),
        ("pkcs11:token=cmk;object=root?PIN-VALUE=1234", Fixture.probeReport),
        (Fixture.keyReference, "not json"),
    ])
    func badLinkInputIsInvalidAndChangesNothing(_ keyReference: String, _ report: String) async throws {
        let registry = try await makeRegistry()
        _ = try await registry.createTenant(id: "acme", name: "Acme")
        await #expect(throws: RegistryError(.invalidInput, "")) {
            try await registry.createLink(tenantID: "acme", provider: "pkcs11", keystoreID: "k", keyReference: keyReference,
                                          probeReport: report, probedAt: Fixture.probedAt, l2: Fixture.newL2())
        }
        #expect(try await registry.links(tenantID: "acme", limit: 10, after: nil).items.isEmpty)
    }

    @Test func malformedL2IsInvalidInput() async throws {
        let registry = try await makeRegistry()
        _ = try await registry.createTenant(id: "acme", name: "Acme")
        var emptyBinding = Fixture.newL2()
        emptyBinding.activeBinding = Data()
        for l2 in [Fixture.newL2(id: "not-a-uuid"), emptyBinding] {
            await #expect(throws: RegistryError(.invalidInput, "")) {
                try await registry.createLink(tenantID: "acme", provider: "pkcs11", keystoreID: "k",
                                              keyReference: Fixture.keyReference, probeReport: Fixture.probeReport,
                                              probedAt: Fixture.probedAt, l2: l2)
            }
        }
    }

    @Test func linkOfAnotherTenantIsNotFound() async throws {
        let registry = try await makeRegistry()
        let (_, linkOfA, _) = try await Fixture.linkedTenant(registry, "tenant-a")
        _ = try await Fixture.linkedTenant(registry, "tenant-b")
        await #expect(throws: RegistryError(.notFound, "")) { try await registry.link(tenantID: "tenant-b", id: linkOfA.id) }
        await #expect(throws: RegistryError(.notFound, "")) {
            try await registry.revoke(tenantID: "tenant-b", linkID: linkOfA.id, expectedVersion: nil, at: Fixture.revokedAt)
        }
        #expect(try await registry.links(tenantID: "tenant-b", limit: 10, after: nil).items.allSatisfy { $0.tenantID == "tenant-b" })
        #expect(try await registry.l2Keys(tenantID: "tenant-b").allSatisfy { $0.tenantID == "tenant-b" })
        #expect(try await registry.link(tenantID: "tenant-a", id: linkOfA.id).state == .linked, "the refused revoke did nothing")
    }

    @Test func listingsOfAMissingTenantAreNotFound() async throws {
        let registry = try await makeRegistry()
        await #expect(throws: RegistryError(.notFound, "")) { try await registry.links(tenantID: "ghost", limit: 5, after: nil) }
        await #expect(throws: RegistryError(.notFound, "")) { try await registry.l2Keys(tenantID: "ghost") }
        #expect(try await registry.l2Key(linkID: UUID().uuidString) == nil)
    }

    @Test func linksPageThroughATenantsHistory() async throws {
        let registry = try await makeRegistry()
        _ = try await registry.createTenant(id: "acme", name: "Acme")
        var ids: [String] = []
        for _ in 1...5 {
            let (link, _) = try await Fixture.link(registry, "acme")
            ids.append(link.id)
            try await Fixture.shred(registry, link)
        }
        var seen: [String] = []
        var cursor: String?
        var pages = 0
        repeat {
            let page = try await registry.links(tenantID: "acme", limit: 2, after: cursor)
            seen += page.items.map(\.id)
            cursor = page.nextCursor
            pages += 1
        } while cursor != nil && pages < 10
        #expect(seen == ids && pages == 3)
    }

    @Test func linksByStateSpanTenants() async throws {
        let registry = try await makeRegistry()
        let (_, a, _) = try await Fixture.linkedTenant(registry, "a")
        let (_, b, _) = try await Fixture.linkedTenant(registry, "b")
        _ = try await registry.revoke(tenantID: "a", linkID: a.id, expectedVersion: nil, at: Fixture.revokedAt)
        #expect(try await registry.links(state: .linked).map(\.id) == [b.id])
        #expect(try await registry.links(state: .revoked).map(\.id) == [a.id])
        #expect(try await registry.links(state: .pendingValidation).isEmpty)
    }

    @Test func recordProbeUpdatesTheResultAndTheVersionInAnyState() async throws {
        let registry = try await makeRegistry()
        let (_, link, _) = try await Fixture.linkedTenant(registry)
        let failedAt = Fixture.probedAt.addingTimeInterval(60)
        let failed = try await registry.recordProbe(linkID: link.id, passed: false, report: #"{"passed":false}"#, at: failedAt)
        #expect(failed.lastProbePassed == false && failed.lastProbeAt == failedAt)
        #expect(failed.lastProbeReport == #"{"passed":false}"# && failed.version == link.version + 1)
        #expect(failed.state == .linked, "a failed probe records; it does not revoke")

        let revoked = try await registry.revoke(tenantID: "acme", linkID: link.id, expectedVersion: nil, at: Fixture.revokedAt)
        let probedAfter = try await registry.recordProbe(linkID: link.id, passed: true, report: "{}", at: Fixture.revokedAt)
        #expect(probedAfter.state == .revoked && probedAfter.version == revoked.link.version + 1)
        #expect(try await registry.link(tenantID: "acme", id: link.id) == probedAfter)
    }

    @Test func recordProbeOfAMissingLinkIsNotFound() async throws {
        let registry = try await makeRegistry()
        await #expect(throws: RegistryError(.notFound, "")) {
            try await registry.recordProbe(linkID: UUID().uuidString, passed: true, report: "{}", at: Fixture.probedAt)
        }
    }

    @Test func datesAreStoredInMillisecondsAndReadBackExactly() async throws {
        let registry = try await makeRegistry()
        let (_, link, _) = try await Fixture.linkedTenant(registry)
        let odd = Date(timeIntervalSince1970: 1_750_000_000.123_456)
        let probed = try await registry.recordProbe(linkID: link.id, passed: true, report: "{}", at: odd)
        #expect(abs(try #require(probed.lastProbeAt).timeIntervalSince(odd)) < 0.001)
        #expect(try await registry.link(tenantID: "acme", id: link.id) == probed, "what a write returns is what a read returns")
    }
}
