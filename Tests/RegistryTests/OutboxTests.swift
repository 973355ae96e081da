import Foundation
import Testing
@testable import Registry

@Suite struct OutboxTests {
    @Test func eventsComeInSequenceOrderAfterACursor() async throws {
        let registry = try await makeRegistry()
        #expect(try await registry.latestEventSequence() == 0)
        var events: [OutboxEvent] = []
        for tenant in ["a", "b", "c"] {
            let (_, link, _) = try await Fixture.linkedTenant(registry, tenant)
            events.append(try await registry.revoke(tenantID: tenant, linkID: link.id, expectedVersion: nil,
                                                    at: Fixture.revokedAt).event)
        }
        #expect(events.map(\.sequence) == events.map(\.sequence).sorted() && Set(events.map(\.sequence)).count == 3)
        #expect(try await registry.events(after: 0, limit: 10) == events)
        #expect(try await registry.events(after: 0, limit: 2) == Array(events.prefix(2)))
        #expect(try await registry.events(after: events[0].sequence, limit: 10) == Array(events.dropFirst()))
        #expect(try await registry.events(after: events[2].sequence, limit: 10).isEmpty)
        #expect(try await registry.latestEventSequence() == events[2].sequence)
        #expect(try await registry.event(id: events[1].id) == events[1])
        #expect(try await registry.event(id: "no-such-event") == nil)
    }

    @Test func eventsOutliveAReopen() async throws {
        try await withTemporaryRegistry { open in
            let registry = try await open()
            let (_, link, _) = try await Fixture.linkedTenant(registry)
            let event = try await registry.revoke(tenantID: "acme", linkID: link.id, expectedVersion: nil,
                                                  at: Fixture.revokedAt).event
            let reopened = try await open()
            #expect(try await reopened.events(after: 0, limit: 10) == [event])
            #expect(try await reopened.latestEventSequence() == event.sequence)
        }
    }
}
