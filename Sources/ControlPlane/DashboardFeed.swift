import Foundation
import NIOConcurrencyHelpers

/// Wakes every open dashboard when something changed: an administrative change, a node
/// connecting, acknowledging or reporting.
package final class DashboardFeed: Sendable {
    package init() {}

    package enum Signal: Sendable { case changed, heartbeat }

    /// Open feeds per caller (browser tabs) and in all.
    package static let maxPerCaller = 16
    package static let maxTotal = 1024

    private let subscribers = NIOLockedValueBox<[UUID: (caller: String, continuation: AsyncStream<Signal>.Continuation)]>([:])

    /// Nil when the caller, or the gateway, has as many feeds open as allowed.
    package func subscribe(for caller: String) -> (AsyncStream<Signal>, @Sendable () -> Void)? {
        let id = UUID()
        let (stream, continuation) = AsyncStream<Signal>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let admitted = subscribers.withLockedValue { subscribers -> Bool in
            guard subscribers.count < Self.maxTotal, subscribers.values.filter({ $0.caller == caller }).count < Self.maxPerCaller else { return false }
            subscribers[id] = (caller, continuation)
            return true
        }
        guard admitted else { return nil }
        continuation.onTermination = { [weak self] _ in self?.subscribers.withLockedValue { $0[id] = nil } }
        return (stream, { continuation.finish() })
    }

    package func changed() { broadcast(.changed) }

    package func broadcast(_ signal: Signal) {
        for subscriber in subscribers.withLockedValue({ Array($0.values) }) { subscriber.continuation.yield(signal) }
    }
}
