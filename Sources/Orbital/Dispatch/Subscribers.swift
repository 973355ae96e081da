import Foundation
import NIOConcurrencyHelpers

/// Open streams of signals, each held by one owner (a node, a browser session), with a limit
/// per owner and in all, so that no caller can tie up the gateway with streams. A stream keeps
/// only the newest signal unread: a signal says "look again", and two of them say no more.
package final class Subscribers<Signal: Sendable>: Sendable {
    private let entries = NIOLockedValueBox<[UUID: (owner: String, continuation: AsyncStream<Signal>.Continuation)]>([:])
    package let perOwner: Int
    package let total: Int

    package init(perOwner: Int, total: Int) {
        (self.perOwner, self.total) = (perOwner, total)
    }

    /// A stream of signals for `owner`, and a way to end it; it leaves the set when it ends or
    /// is dropped. Nil when the owner, or everyone together, has as many open as allowed.
    package func subscribe(_ owner: String) -> (signals: AsyncStream<Signal>, end: @Sendable () -> Void)? {
        let id = UUID()
        let (stream, continuation) = AsyncStream<Signal>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let admitted = entries.withLockedValue { entries -> Bool in
            guard entries.count < total, entries.values.filter({ $0.owner == owner }).count < perOwner else { return false }
            entries[id] = (owner, continuation)
            return true
        }
        guard admitted else { return nil }
        continuation.onTermination = { [weak self] _ in self?.entries.withLockedValue { $0[id] = nil } }
        return (stream, { continuation.finish() })
    }

    package func broadcast(_ signal: Signal) {
        for entry in entries.withLockedValue({ Array($0.values) }) { entry.continuation.yield(signal) }
    }

    /// Ends every stream of `owner`.
    package func end(owner: String) {
        for entry in entries.withLockedValue({ Array($0.values) }) where entry.owner == owner { entry.continuation.finish() }
    }

    package var owners: Set<String> { entries.withLockedValue { Set($0.values.map(\.owner)) } }
    package var count: Int { entries.withLockedValue { $0.count } }
}
