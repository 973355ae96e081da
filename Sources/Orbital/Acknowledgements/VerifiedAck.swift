import CMKCore
import Crypto
public import Foundation
public import NodeProtocol
public import Registry

/// A purge acknowledgement whose signature verified with the key of the node it names: parsed
/// once, here, and carried as this value to everything after.
public struct VerifiedAck: Sendable {
    public let ack: NodeProtocol.Ack
    public let node: Node
    /// Canonical JSON, exactly as signed.
    public let statement: String
    public let signature: Data
}

extension Orbital {
    /// Checks a node's acknowledgement: a canonical statement (`invalid_ack`, 422), naming an
    /// enrolled node whose key made `signature` (`invalid_ack`, 401) and that was not removed
    /// (`node_removed`, 403). The signature authenticates the call (Decisions D46), so the
    /// node is looked up by the name the statement gives.
    public func verifyAck(statement: String, signature: Data,
                          node lookup: (String) async throws -> Node?) async throws -> VerifiedAck {
        guard let ack = NodeProtocol.parseAck(statement) else {
            throw DomainError(.invalidAck, "the statement is not a canonical \(NodeProtocol.ackType) object")
        }
        let refused = DomainError(.invalidAck, "the acknowledgement's signature does not verify with the key of the node it names",
                                  kind: .unauthenticated)
        guard ack.node.utf8.count <= 64, let node = try await lookup(ack.node) else { throw refused }
        guard node.removedAt == nil else {
            throw DomainError(.nodeRemoved, "node \(node.id) was removed; its acknowledgements are no longer taken")
        }
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: node.signingKey),
              signature.count == 64, key.isValidSignature(signature, for: Data(statement.utf8)) else { throw refused }
        return VerifiedAck(ack: ack, node: node, statement: statement, signature: signature)
    }

    /// Stores a verified acknowledgement of `event` (batched with the others arriving at the
    /// same time); refused with `invalid_ack` when the event is not a revocation of the link
    /// the statement names, `already_acknowledged` when the node had sent one.
    public func record(_ verified: VerifiedAck) async throws -> (ack: NodeAck, event: OutboxEvent) {
        let (eventID, linkID) = (verified.ack.event, verified.ack.link)
        guard let event = try await event(id: eventID), event.type == EventType.l1Revoked.rawValue, event.linkID == linkID else {
            throw DomainError(.invalidAck, "no revocation event \(eventID) for link \(linkID)")
        }
        let ack = NodeAck(eventID: eventID, nodeID: verified.node.id, linkID: linkID, keysDropped: verified.ack.keysDropped,
                          statement: verified.statement, signature: verified.signature, receivedAt: Date())
        guard try await acks.submit(ack) else {
            throw DomainError(.alreadyAcknowledged, "node \(verified.node.id) already acknowledged event \(eventID)")
        }
        return (ack, event)
    }
}
