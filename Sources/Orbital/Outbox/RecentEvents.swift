import Foundation
import NIOConcurrencyHelpers
import Registry

/// Events this process committed, by id: acknowledgements arrive right after a revocation, all
/// at once, and need not each read the outbox. Bounded; an event not found here is read from
/// the registry.
final class RecentEvents: Sendable {
    private static let capacity = 1024
    private let events = NIOLockedValueBox<[String: OutboxEvent]>([:])
    /// The newest sequence announced to the streams, by this process or `announceForeignEvents`.
    let announced = NIOLockedValueBox<Int64>(0)

    func remember(_ new: [OutboxEvent]) {
        events.withLockedValue { events in
            if events.count + new.count > Self.capacity { events.removeAll(keepingCapacity: true) }
            for event in new { events[event.id] = event }
        }
    }

    func event(id: String) -> OutboxEvent? { events.withLockedValue { $0[id] } }
}
