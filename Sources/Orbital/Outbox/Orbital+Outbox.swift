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
        // Announced already: the notification of this commit (other replicas') need not
        // announce it again here. Only when it follows on, or an earlier event would be skipped.
        if let first = events.first?.sequence, let last = events.last?.sequence {
            recent.announced.withLockedValue { if first == $0 + 1 { $0 = max($0, last) } }
        }
    }

    /// Where the streams start at this process's start: events before it were announced by
    /// the process that committed them, or are caught up by a node's cursor.
    public func start(at head: Int64) {
        recent.announced.withLockedValue { $0 = head }
    }

    /// Pushes events another process committed (another gateway replica on the same
    /// PostgreSQL database, or the command line revoking a credential): streams are woken only
    /// by commits made here, so the change listener and the host action service call this.
    /// Every event after the last one announced, in pages; an event announced twice is dropped
    /// by each stream's cursor.
    public func announceForeignEvents() async {
        while true {
            let from = recent.announced.withLockedValue { $0 }
            guard let events = try? await registry.events(after: from, limit: 500), let last = events.last?.sequence else { return }
            dispatcher.notify(events)
            recent.announced.withLockedValue { $0 = max($0, last) }
            if events.count < 500 { return }
        }
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
