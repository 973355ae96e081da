public import Crypto
import Foundation
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

    private let streams = Subscribers<Signal>(perOwner: Dispatcher.maxPerNode, total: Dispatcher.maxTotal)
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
        streams.subscribe(node)
    }

    /// Ends every open stream of `node` (disabled, removed or re-keyed).
    public func disconnect(node: String) { streams.end(owner: node) }

    /// Nodes with an open event stream now.
    public var connectedNodes: Set<String> { streams.owners }

    public var connections: Int { streams.count }

    /// Called after a commit that wrote `events` to the outbox.
    func notify(_ events: [OutboxEvent]) {
        guard let first = events.first?.sequence, let last = events.last?.sequence else { return }
        var frames = ByteBuffer()
        for event in events { EventFrame(event, signer: signer).write(into: &frames) }
        broadcast(.events(first: first, last: last, frames: frames))
    }

    func broadcast(_ signal: Signal) { streams.broadcast(signal) }

    /// Sends heartbeats until cancelled.
    public func runHeartbeats() async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: heartbeat) } catch { return }
            broadcast(.heartbeat)
        }
    }
}
