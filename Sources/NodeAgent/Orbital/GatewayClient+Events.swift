import AsyncHTTPClient
import CMKCore
public import Crypto
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOFoundationEssentialsCompat
import NIOHTTP1
import NodeProtocol
import TLSSupport

/// The node's side of Orbital: the gateway's signed events, on the stream and in the catch-up
/// listing, and the stream's signed heartbeats. What a node does with an event (purge, sign the
/// acknowledgement) is `NodeRuntime.handle` and `NodeKeyring`.
extension GatewayClient {
    /// One event from the stream or the catch-up listing.
    public struct Event: Codable, Sendable, Equatable {
        public var sequence: Int64
        public var id: String
        public var type: String
        public var tenant: String
        public var link: String?
        /// The event's payload, JSON text (`epoch`, `allowedRegions`, …).
        public var payload: String?
        /// The gateway's signature over `GatewayStatement.event`.
        public var signature: String?

        public init(sequence: Int64, id: String, type: String, tenant: String, link: String?, payload: String? = nil, signature: String? = nil) {
            (self.sequence, self.id, self.type, self.tenant, self.link, self.payload, self.signature) = (sequence, id, type, tenant, link, payload, signature)
        }

        /// Whether the gateway signed exactly this event.
        public func isSigned(by key: Curve25519.Signing.PublicKey) -> Bool {
            guard let signature = signature.flatMap({ Data(base64Encoded: $0) }),
                  let statement = try? GatewayStatement.event(sequence: sequence, id: id, type: type, tenant: tenant, link: link, payload: payload ?? "")
            else { return false }
            return key.isValidSignature(signature, for: statement)
        }

        private var fields: [String: Any] {
            payload.flatMap { text in
                JSONNesting.isAcceptable(text.utf8) ? try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] : nil
            } ?? [:]
        }

        /// The link epoch a revocation ends or a restore starts (1 for events that predate epochs).
        public var epoch: Int { fields["epoch"] as? Int ?? 1 }

        /// For `tenant.regions`: the regions allowed (nil: all).
        public var allowedRegions: [String]? { fields["allowedRegions"] as? [String] }

        /// A string member of the payload.
        public func field(_ name: String) -> String? { fields[name] as? String }
    }

    /// The server-sent event stream from after `after`: calls `onOpen` once connected, then
    /// `handle` for each event in order. Returns or throws when the connection ends, or when
    /// nothing (not even a heartbeat) arrived for `idleTimeout`.
    public func stream(after: Int64, idleTimeout: Duration, onOpen: @escaping @Sendable () async -> Void,
                       handle: @escaping @Sendable (Event) async throws -> Void) async throws {
        let path = "/node/v1/stream?after=\(after)"
        var request = HTTPClientRequest(url: base + path)
        request.method = .GET
        let streamNonce = NodeProtocol.randomNonce()
        for (name, value) in try NodeProtocol.signedHeaders(node: nodeID, key: signingKey, method: "GET", path: path, body: Data(), nonce: streamNonce) {
            request.headers.add(name: name, value: value)
        }
        guard let key = gatewayKey.withLockedValue({ $0 }) else {
            throw Failure.unreachable("the gateway's key is not pinned yet")
        }
        let nodeID = self.nodeID
        // The last sequence received on this stream: a signed heartbeat naming a later one means
        // events were held back on the way.
        let received = NIOLockedValueBox(after)
        request.headers.add(name: "Accept", value: "text/event-stream")
        request.tlsConfiguration = tls?.configuration
        let http = self.http, streamRequest = request
        let lastActivity = NIOLockedValueBox(ContinuousClock.now)
        // Liveness comes from the gateway's heartbeats: a watchdog ends a silent connection.
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                let response: HTTPClientResponse
                do {
                    response = try await http.execute(streamRequest, deadline: .distantFuture)
                } catch {
                    throw Failure.unreachable("cannot open the event stream: \(error)")
                }
                guard response.status == .ok else {
                    let data = Data(buffer: try await response.body.collect(upTo: 64 * 1024))
                    throw Self.failure(status: Int(response.status.code), data)
                }
                await onOpen()
                var parser = ServerSentEvents()
                for try await chunk in response.body {
                    lastActivity.withLockedValue { $0 = .now }
                    for message in parser.feed(chunk) {
                        guard let data = message.data else { continue }
                        if message.event == EventType.streamHeartbeat.rawValue {
                            try Self.checkHeartbeat(data, node: nodeID, nonce: streamNonce, key: key, received: received.withLockedValue { $0 })
                            continue
                        }
                        let event = try Self.decode(Event.self, Data(data.utf8))
                        guard event.isSigned(by: key) else {
                            throw Failure(status: nil, code: "invalid_event", message: "event \(event.sequence) is not signed by the gateway")
                        }
                        try await handle(event)
                        received.withLockedValue { $0 = max($0, event.sequence) }
                    }
                }
                throw Failure.unreachable("the gateway closed the event stream")
            }
            group.addTask {
                while true {
                    try await Task.sleep(for: .milliseconds(250))
                    if ContinuousClock.now - lastActivity.withLockedValue({ $0 }) > idleTimeout {
                        throw Failure.unreachable("no event or heartbeat for \(idleTimeout)")
                    }
                }
            }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    /// A stream heartbeat must be the gateway's, for this stream, and say no later sequence than
    /// the node received on it.
    static func checkHeartbeat(_ data: String, node: String, nonce: String, key: Curve25519.Signing.PublicKey, received: Int64) throws {
        guard let value = try? CanonicalJSON.parse(Array(data.utf8)), let sequence = value["sequence"]?.integerValue,
              let time = value["time"]?.integerValue, let signature = value["signature"]?.stringValue.flatMap({ Data(base64Encoded: $0) }),
              let statement = try? GatewayStatement.heartbeat(node: node, nonce: nonce, sequence: sequence, time: time),
              key.isValidSignature(signature, for: statement) else {
            throw Failure(status: nil, code: "invalid_event", message: "a stream heartbeat is not signed by the gateway for this stream")
        }
        guard sequence <= received else {
            throw Failure(status: nil, code: "events_withheld", message: "the gateway sent events up to \(sequence), this node received up to \(received)")
        }
    }
}
