import Foundation
import Testing
@testable import Registry

@Suite struct OutboxTests {
    @Test func pendingEventsComeInSequenceOrderUntilDispatched() async throws {
        let registry = try Registry.inMemory()
        var events: [OutboxEvent] = []
        for tenant in ["a", "b", "c"] {
            let (_, link, _) = try await Fixture.linkedTenant(registry, tenant)
            events.append(try await registry.revoke(tenantID: tenant, linkID: link.id, expectedVersion: nil,
                                                    at: Fixture.revokedAt).event)
        }
        #expect(events.map(\.sequence) == events.map(\.sequence).sorted() && Set(events.map(\.sequence)).count == 3)
        #expect(try await registry.pendingEvents(limit: 10) == events)
        #expect(try await registry.pendingEvents(limit: 2) == Array(events.prefix(2)))

        try await registry.markDispatched(sequence: events[1].sequence, at: Fixture.revokedAt)
        #expect(try await registry.pendingEvents(limit: 10) == [events[0], events[2]])
    }

    @Test func markDispatchedIsIdempotentAndKeepsTheFirstTime() async throws {
        try await withTemporaryRegistryFile { path in
            let registry = try Registry(path: path)
            let (_, link, _) = try await Fixture.linkedTenant(registry)
            let event = try await registry.revoke(tenantID: "acme", linkID: link.id, expectedVersion: nil,
                                                  at: Fixture.revokedAt).event
            try await registry.markDispatched(sequence: event.sequence, at: Fixture.revokedAt)
            try await registry.markDispatched(sequence: event.sequence, at: Fixture.revokedAt.addingTimeInterval(60))
            #expect(try await registry.pendingEvents(limit: 10).isEmpty)
            #expect(try await registry.event(sequence: event.sequence)?.dispatchedAt == Fixture.revokedAt, "the first time stays")
            // Reopen: a dispatched event stays dispatched.
            #expect(try await Registry(path: path).pendingEvents(limit: 10).isEmpty)
        }
    }

    @Test func markingAnUnknownEventIsNotFound() async throws {
        let registry = try Registry.inMemory()
        await #expect(throws: RegistryError(.notFound, "")) { try await registry.markDispatched(sequence: 42, at: Fixture.probedAt) }
    }
}
