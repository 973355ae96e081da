import CMKCore
public import Crypto
public import Foundation
public import NIOCore
import NodeProtocol
public import Registry

/// An event as nodes receive it, signed by the gateway over `GatewayStatement.event`: one
/// `text/event-stream` message on the stream, one item of the catch-up listing.
public struct EventFrame: Codable, Sendable {
    public var sequence: Int64
    public var id: String
    public var type: String
    public var tenant: String
    public var link: String?
    public var payload: String
    public var createdAt: Date
    /// Base64 Ed25519 signature by the gateway over `GatewayStatement.event`.
    public var signature: String?

    public init(_ event: OutboxEvent, signer: Curve25519.Signing.PrivateKey) {
        let statement = try? GatewayStatement.event(sequence: event.sequence, id: event.id, type: event.type, tenant: event.tenantID,
                                                    link: event.linkID, payload: event.payload)
        (sequence, id, type, tenant, link, payload, createdAt) = (event.sequence, event.id, event.type, event.tenantID, event.linkID,
                                                                  event.payload, event.createdAt)
        signature = statement.flatMap { try? signer.signature(for: $0).base64EncodedString() }
    }

    /// One server-sent event: `id` (the sequence number), `event` (the type), `data` (JSON).
    public func write(into buffer: inout ByteBuffer) {
        let data = (try? JSONEncoder.api.encode(self)) ?? Data()
        buffer.writeString("id: \(sequence)\nevent: \(type)\ndata: ")
        buffer.writeBytes(data)
        buffer.writeString("\n\n")
    }

    /// A signed heartbeat: the last sequence sent on a stream, bound to the stream request's
    /// nonce, so that a node can tell held-back events from a quiet channel.
    public static func heartbeat(node: String, nonce: String, sequence: Int64, signer: Curve25519.Signing.PrivateKey) -> ByteBuffer {
        let time = Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
        guard let statement = try? GatewayStatement.heartbeat(node: node, nonce: nonce, sequence: sequence, time: time),
              let signature = try? signer.signature(for: statement),
              let data = try? JSONValue.object(["type": .string(EventType.streamHeartbeat.rawValue), "sequence": .integer(sequence),
                                                "time": .integer(time), "signature": .string(signature.base64EncodedString())]).canonicalBytes() else {
            return ByteBuffer(string: ": heartbeat\n\n")
        }
        var buffer = ByteBuffer(string: "event: \(EventType.streamHeartbeat.rawValue)\ndata: ")
        buffer.writeBytes(data)
        buffer.writeString("\n\n")
        return buffer
    }
}
