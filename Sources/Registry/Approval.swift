public import Foundation
import Storage

/// An operation that may need more than one person (four-eyes, M-of-N).
public enum ApprovalOperation: String, Codable, Sendable, CaseIterable {
    /// Bring a revoked link's L2 back with L1.
    case restore = "link.restore"
    /// Schedule the destruction of a revoked link's L2.
    case shred = "link.shred"
    /// Issue a node enrolment token (the target is the region).
    case nodeEnrolment = "node.enrolment"
}

/// Where a request stands. `EXPIRED` is not stored: a `PENDING` or `APPROVED` request past its
/// `expiresAt` reads as expired and can no longer be voted on or used.
public enum ApprovalState: String, Codable, Sendable, CaseIterable {
    case pending = "PENDING"
    case approved = "APPROVED"
    case rejected = "REJECTED"
    case cancelled = "CANCELLED"
    case executed = "EXECUTED"
    case expired = "EXPIRED"
}

public enum ApprovalDecision: String, Codable, Sendable {
    case approve = "APPROVE"
    case reject = "REJECT"
}

public struct ApprovalVote: Codable, Sendable, Equatable {
    public var approver: String
    public var decision: ApprovalDecision
    public var at: Date
}

/// A request for an operation that needs other people's approval. The requester counts as the
/// first person; `requiredApprovals` more must approve; one rejection ends it.
public struct ApprovalRequest: Codable, Sendable, Equatable {
    public var id: String
    public var operation: ApprovalOperation
    public var tenantID: String?
    /// The link id, or the region of a node enrolment.
    public var target: String
    /// JSON text: what exactly is approved (a shred's waiting period, an enrolment's lifetime).
    public var parameters: String
    public var reason: String?
    public var requestedBy: String
    public var requesterRole: String
    public var requiredApprovals: Int
    /// As stored (never `expired`); see `state(at:)`.
    public var storedState: ApprovalState
    public var createdAt: Date
    public var expiresAt: Date
    public var decidedAt: Date?
    public var executedAt: Date?
    public var executedBy: String?
    public var votes: [ApprovalVote]
    public var version: Int

    /// The state as the API shows it: an open request past its expiry is `EXPIRED`.
    public func state(at now: Date) -> ApprovalState {
        if (storedState == .pending || storedState == .approved) && expiresAt <= now { return .expired }
        return storedState
    }

    public var approvals: Int { votes.filter { $0.decision == .approve }.count }

    /// Everyone who took part: the requester and each voter.
    public var participants: [String] { [requestedBy] + votes.map(\.approver) }
}

extension ApprovalRequest {
    init(row: Row, votes: [ApprovalVote]) throws {
        guard let operation = ApprovalOperation(rawValue: row["operation"]), let state = ApprovalState(rawValue: row["state"]) else {
            throw RegistryError(.invalidInput, "approval request \(row["id"] as String) has an unknown operation or state")
        }
        self.init(id: row["id"], operation: operation, tenantID: row["tenant_id"], target: row["target"], parameters: row["parameters"],
                  reason: row["reason"], requestedBy: row["requested_by"], requesterRole: row["requester_role"],
                  requiredApprovals: row["required_approvals"], storedState: state,
                  createdAt: Date(registryMilliseconds: row["created_at"]), expiresAt: Date(registryMilliseconds: row["expires_at"]),
                  decidedAt: (row["decided_at"] as Int64?).map(Date.init(registryMilliseconds:)),
                  executedAt: (row["executed_at"] as Int64?).map(Date.init(registryMilliseconds:)),
                  executedBy: row["executed_by"], votes: votes, version: row["version"])
    }

    static func fetch(_ db: Database, id: String) throws -> ApprovalRequest? {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM approval_request WHERE id = ?", arguments: [id]) else { return nil }
        let votes = try Row.fetchAll(db, sql: "SELECT * FROM approval_vote WHERE request_id = ? ORDER BY at, approver", arguments: [id])
            .map { ApprovalVote(approver: $0["approver"], decision: ApprovalDecision(rawValue: $0["decision"]) ?? .reject,
                                at: Date(registryMilliseconds: $0["at"])) }
        return try ApprovalRequest(row: row, votes: votes)
    }

    /// Inside the transaction that carries out the operation: the request must be approved,
    /// unexpired, for this operation and target, and not used before; it becomes `EXECUTED`
    /// with the change it allowed, or not at all.
    static func consume(_ db: Database, id: String, operation: ApprovalOperation, target: String, by executor: String,
                        at: Date) throws {
        guard let request = try fetch(db, id: id), request.operation == operation, request.target == target else {
            throw RegistryError(.notFound, "no approval request \(id) for \(operation.rawValue) of \(target)")
        }
        switch request.state(at: at) {
        case .approved: break
        case .pending: throw RegistryError(.conflict, "approval request \(id) still needs \(request.requiredApprovals - request.approvals) approval(s)")
        case .expired: throw RegistryError(.conflict, "approval request \(id) expired at \(request.expiresAt.registryISO8601)")
        case .executed: throw RegistryError(.conflict, "approval request \(id) was already used")
        case .rejected, .cancelled: throw RegistryError(.conflict, "approval request \(id) was \(request.storedState.rawValue.lowercased())")
        }
        guard request.participants.contains(executor) else {
            throw RegistryError(.conflict, "approval request \(id) is carried out by its requester or one of its approvers")
        }
        try db.execute(sql: """
            UPDATE approval_request SET state = 'EXECUTED', executed_at = ?, executed_by = ?, version = version + 1
            WHERE id = ? AND state = 'APPROVED'
            """, arguments: [at.registryMilliseconds, executor, id])
        guard db.changesCount == 1 else { throw RegistryError(.conflict, "approval request \(id) was already used") }
    }
}
