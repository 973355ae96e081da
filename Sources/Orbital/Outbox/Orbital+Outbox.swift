import Foundation
import NIOConcurrencyHelpers
public import Registry

extension Orbital {
    /// Called after every commit that wrote `events` to the outbox: pushed to every connected
    /// node now; a node that is not connected gets them first when it reconnects (it asks for
    /// every event after the last one it saw).
    public func committed(_ events: [OutboxEvent]) {
        recent.remember(events)
        dispatcher.notify(events)
    }

    /// Where the streams start at this process's start: events before it were announced by
    /// the process that committed them, or are caught up by a node's cursor.
    public func start(at head: Int64) {
        recent.announced.withLockedValue { $0 = head }
    }

    /// Pushes events another process committed (the command line revoking a credential):
    /// streams are woken only by commits made here, so the host action service calls this.
    public func announceForeignEvents() async {
        guard let latest = try? await registry.latestEventSequence() else { return }
        let from = recent.announced.withLockedValue { previous in
            defer { previous = max(previous, latest) }
            return previous
        }
        guard from > 0, latest > from, let events = try? await registry.events(after: from, limit: 500), !events.isEmpty else { return }
        dispatcher.notify(events)
    }

    /// Events after `after` (a sequence number), oldest first and signed: what a node missed.
    public func events(after: Int64, limit: Int = 500) async throws -> [EventFrame] {
        try await registry.events(after: after, limit: limit).map { EventFrame($0, signer: signer) }
    }

    /// An event by id: this process's recent ones first, then the outbox.
    public func event(id: String) async throws -> OutboxEvent? {
        if let event = recent.event(id: id) { return event }
        return try await registry.event(id: id)
    }
}
