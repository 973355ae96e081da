import CMKCore
import Foundation
public import NIOCore
import Registry
import ServiceLifecycle

/// One node's event stream: every event after its cursor at once, then each new one as it is
/// committed, pushed without polling; a signed heartbeat every `Dispatcher.heartbeat`. At least
/// once: a node that reconnects with the last sequence it saw receives everything it missed
/// first.
public struct EventStream: Sendable {
    let orbital: Orbital
    let node: String
    /// The stream request's nonce: every heartbeat on this stream is bound to it.
    let nonce: String
    let start: Int64
    let signals: AsyncStream<Dispatcher.Signal>
    /// Ends the subscription (the stream's loop then returns).
    public let end: @Sendable () -> Void

    /// Writes the stream with `write` until the subscription ends, the write fails (the node
    /// hung up) or the service shuts down gracefully (so that shutdown does not wait for nodes
    /// to hang up).
    public func run(write: (ByteBuffer) async throws -> Void) async throws {
        let registry = orbital.registry, signer = orbital.signer
        var cursor = start
        var signals = signals.makeAsyncIterator()
        var pending = true
        try await withGracefulShutdownHandler {
            while true {
                if pending {
                    var page: [OutboxEvent]
                    repeat {
                        page = try await registry.events(after: cursor, limit: 500)
                        var buffer = ByteBuffer()
                        for event in page {
                            EventFrame(event, signer: signer).write(into: &buffer)
                            cursor = event.sequence
                        }
                        if buffer.readableBytes > 0 { try await write(buffer) }
                    } while page.count == 500
                    pending = false
                }
                guard let signal = await signals.next() else { break }
                switch signal {
                case .events(let firstNew, let last, let frames):
                    if firstNew == cursor + 1 {
                        // Caught up: the committed events as the dispatcher encoded them once.
                        try await write(frames)
                        cursor = last
                    } else if last > cursor {
                        pending = true
                    }
                case .heartbeat:
                    try await write(EventFrame.heartbeat(node: node, nonce: nonce, sequence: cursor, signer: signer))
                }
            }
        } onGracefulShutdown: {
            end()
        }
    }
}

extension Orbital {
    /// Opens `node`'s stream from `after`; refused with `too_many_streams` when the node, or
    /// the gateway, has as many open as allowed.
    public func stream(node: String, after: Int64, nonce: String) throws -> EventStream {
        guard let (signals, end) = dispatcher.subscribe(node: node) else {
            throw DomainError(.tooManyStreams,
                              "node \(node) already has \(Dispatcher.maxPerNode) event streams open (or the gateway is at its limit); close one first")
        }
        return EventStream(orbital: self, node: node, nonce: nonce, start: after, signals: signals, end: end)
    }
}
