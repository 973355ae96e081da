import CMKCore
public import Foundation
public import Registry

/// Where a revocation stands: the nodes that must acknowledge it, those that have, and the
/// verdict.
public struct RevocationProgress: Sendable {
    /// `REVOKED` while nodes are still to acknowledge; `LOCKED` once every node enrolled at the
    /// time of the revocation has sent a verified acknowledgement.
    public enum Verdict: String, Sendable, Codable {
        case revoked = "REVOKED"
        case locked = "LOCKED"
    }

    public var event: OutboxEvent
    public var linkState: LinkState
    /// Nodes enrolled when the revocation happened and still active: each must acknowledge.
    public var expected: [Node]
    public var acks: [NodeAck]
    /// The latest lease end among nodes: after it, no node can still hold the key even if it
    /// never hears of the revocation.
    public var exposureBound: Date?

    public var verdict: Verdict { Set(acks.map(\.nodeID)).isSuperset(of: expected.map(\.id)) ? .locked : .revoked }
    /// Expected nodes that have not acknowledged.
    public var missing: [Node] {
        let acknowledged = Set(acks.map(\.nodeID))
        return expected.filter { !acknowledged.contains($0.id) }
    }
}

extension Orbital {
    /// The progress of the revocation of `link` (in state `linkState` now); `not_found` when
    /// the link was never revoked.
    public func progress(of link: L1Link, exposureBound: Date?) async throws -> RevocationProgress {
        guard let event = try await registry.revocationEvent(linkID: link.id) else {
            throw DomainError(.notFound, "link \(link.id) is not revoked")
        }
        // Disabled and removed nodes are not waited for: they are refused at their next call and
        // drop their keys; their leases stay in the exposure bound.
        let expected = try await registry.nodes().filter { $0.enrolledAt <= event.createdAt && $0.isActive }
        return RevocationProgress(event: event, linkState: link.state, expected: expected, acks: try await registry.acks(eventID: event.id),
                                  exposureBound: exposureBound)
    }
}
