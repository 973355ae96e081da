public import Crypto
import Foundation
import NIOConcurrencyHelpers
public import NIOCore
import Registry

/// Orbital's push side: wakes every connected node's event stream when an event is committed
/// (no polling), and sends a heartbeat every `heartbeat` so a node can tell a quiet channel from
/// a dead one.
public final class Dispatcher: Sendable {
    public enum Signal: Sendable {
        /// Events just committed, as ready-to-send stream frames (encoded once for every node).
        /// A connection whose cursor is just before the first one sends them as they are; any
        /// other reads the outbox (signals are coalesced, so some may have been skipped).
        case events(first: Int64, last: Int64, frames: ByteBuffer)
        case heartbeat
    }

    private let subscribers = NIOLockedValueBox<[UUID: (node: String, continuation: AsyncStream<Signal>.Continuation)]>([:])
    public let heartbeat: Duration
    /// Signs every event frame (once per event, the same for every node).
    let signer: Curve25519.Signing.PrivateKey

    public init(heartbeat: Duration = .seconds(15), signer: Curve25519.Signing.PrivateKey = .init()) {
        self.heartbeat = heartbeat
        self.signer = signer
    }

    /// Open streams allowed per node (a reconnecting node may briefly hold two while the gateway
    /// has not yet seen the old one die) and in all: a node, or a stolen node key, cannot tie
    /// up the gateway with streams.
    public static let maxPerNode = 4
    public static let maxTotal = 20_000

    /// A stream of signals for one connection, and a way to end it (at shutdown); it ends its
    /// subscription when dropped. Nil when the node, or the gateway, has as many open as allowed.
    public func subscribe(node: String) -> (signals: AsyncStream<Signal>, end: @Sendable () -> Void)? {
        let id = UUID()
        let (stream, continuation) = AsyncStream<Signal>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let admitted = subscribers.withLockedValue { subscribers -> Bool in
            guard subscribers.count < Self.maxTotal, subscribers.values.filter({ $0.node == node }).count < Self.maxPerNode else { return false }
            subscribers[id] = (node, continuation)
            return true
        }
        guard admitted else { return nil }
        continuation.onTermination = { [weak self] _ in self?.subscribers.withLockedValue { $0[id] = nil } }
        return (stream, { continuation.finish() })
    }

    /// Ends every open stream of `node` (disabled, removed or re-keyed).
    public func disconnect(node: String) {
        for subscriber in subscribers.withLockedValue({ Array($0.values) }) where subscriber.node == node { subscriber.continuation.finish() }
    }

    /// Nodes with an open event stream now.
    public var connectedNodes: Set<String> { subscribers.withLockedValue { Set($0.values.map(\.node)) } }

    public var connections: Int { subscribers.withLockedValue { $0.count } }

    /// Called after a commit that wrote `events` to the outbox.
    func notify(_ events: [OutboxEvent]) {
        guard let first = events.first?.sequence, let last = events.last?.sequence else { return }
        var frames = ByteBuffer()
        for event in events { EventFrame(event, signer: signer).write(into: &frames) }
        broadcast(.events(first: first, last: last, frames: frames))
    }

    func broadcast(_ signal: Signal) {
        for subscriber in subscribers.withLockedValue({ Array($0.values) }) { subscriber.continuation.yield(signal) }
    }

    /// Sends heartbeats until cancelled.
    public func runHeartbeats() async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: heartbeat) } catch { return }
            broadcast(.heartbeat)
        }
    }
}
