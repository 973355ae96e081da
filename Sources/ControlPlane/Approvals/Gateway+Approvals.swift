import Audit
import AuditFormat
import CMKCore
import Crypto
package import Foundation
import KSI
import Logging
import NIOConcurrencyHelpers
import Orbital
import PKCS11
public import Registry

/// Four-eyes approvals: a request, another person's vote, and the approved operation carried out
/// once (Docs/Architecture.md, "The key lifecycle").
extension Gateway {

    /// People an operation needs under the configured policy, the requester included.
    public func people(for operation: ApprovalOperation) -> Int { lifecycle.approvals.people(for: operation) }

    /// The role whose members request and approve an operation.
    package static func role(for operation: ApprovalOperation) -> AdminRole {
        switch operation {
        case .restore, .shred: .securityAdmin
        case .nodeEnrolment: .platformOperator
        }
    }

    /// Whether `principal` may see a request: within its tenants, auditors and security
    /// administrators see every request (node enrolments too: who may unseal is their concern);
    /// a platform operator sees the requests of its own duty only.
    package func mayView(_ request: ApprovalRequest, _ principal: Principal) -> Bool {
        if let tenant = request.tenantID, !principal.mayAccess(tenant: tenant) { return false }
        return principal.role != .platformOperator || Self.role(for: request.operation) == .platformOperator
    }

    /// Checks that `principal` may take part in a request for `operation` on `tenant`.
    package func checkParticipant(_ principal: Principal, operation: ApprovalOperation, tenant: String?) throws {
        guard principal.isPerson else {
            throw DomainError(.forbidden, "approvals are made by people with a fresh one-time code, not by tokens")
        }
        guard principal.role == Self.role(for: operation) else {
            throw DomainError(.forbidden,
                           "\(operation.rawValue) is requested and approved by a \(Self.role(for: operation).rawValue), not a \(principal.role.rawValue)")
        }
        if let tenant, !principal.mayAccess(tenant: tenant) { throw DomainError.notFound("no tenant \(tenant)") }
    }

    public struct ApprovalInput: Sendable {
        public var operation: ApprovalOperation
        public var tenant: String?
        public var link: String?
        public var region: String?
        public var waitingPeriodHours: Int?
        public var ttlSeconds: Int?
        public var reason: String?

        package init(operation: ApprovalOperation, tenant: String? = nil, link: String? = nil, region: String? = nil,
                     waitingPeriodHours: Int? = nil, ttlSeconds: Int? = nil, reason: String? = nil) {
            (self.operation, self.tenant, self.link, self.region) = (operation, tenant, link, region)
            (self.waitingPeriodHours, self.ttlSeconds, self.reason) = (waitingPeriodHours, ttlSeconds, reason)
        }
    }

    /// A request for an operation the policy gives to more than one person. The target must be
    /// in a state the operation applies to, so that nobody approves what cannot be done.
    public func requestApproval(_ input: ApprovalInput, by principal: Principal) async throws -> ApprovalRequest {
        try checkParticipant(principal, operation: input.operation, tenant: input.tenant)
        let people = people(for: input.operation)
        guard people > 1 else {
            throw DomainError(.approvalNotRequired,
                           "\(input.operation.rawValue) needs one person here (lifecycle.approvals): carry it out directly")
        }
        var parameters: [String: JSONValue] = [:]
        let target: String
        switch input.operation {
        case .restore, .shred:
            guard let tenant = input.tenant, let linkID = input.link else {
                throw DomainError.invalidInput("\(input.operation.rawValue) names the tenant and the link")
            }
            let link = try await registry.link(tenantID: tenant, id: linkID)
            try Self.requireRevoked(link)
            if input.operation == .shred {
                let hours = try shredWaitingHours(input.waitingPeriodHours)
                if let hours { parameters["waitingPeriodHours"] = .integer(Int64(hours)) }
            }
            target = linkID
        case .nodeEnrolment:
            guard input.tenant == nil, let region = input.region,
                  region.range(of: #"^[a-z0-9][a-z0-9-]{0,62}$"#, options: .regularExpression) != nil else {
                throw DomainError.invalidInput("node.enrolment names the region (1-63 characters of a-z, 0-9 and -), and no tenant")
            }
            if let ttl = input.ttlSeconds { parameters["ttlSeconds"] = .integer(Int64(try Self.enrolmentTTL(ttl))) }
            target = region
        }
        if let reason = input.reason, reason.count > 500 { throw DomainError.invalidInput("a reason is at most 500 characters") }
        let now = Date()
        do {
            return try await registry.createApprovalRequest(
                operation: input.operation, tenantID: input.tenant, target: target,
                parameters: String(decoding: try JSONValue.object(parameters).canonicalBytes(), as: UTF8.self), reason: input.reason,
                requestedBy: principal.name, requesterRole: principal.role.rawValue, requiredApprovals: people - 1,
                expiresAt: now.addingTimeInterval(Double(lifecycle.approvalExpiryMinutes) * 60), at: now)
        } catch let error as RegistryError where error.code == .conflict {
            throw DomainError(.approvalPending, error.message)
        }
    }

    /// One approval or rejection, each person once, never the requester's own.
    public func vote(on id: String, _ decision: ApprovalDecision, by principal: Principal) async throws -> ApprovalRequest {
        let request = try await registry.approvalRequest(id)
        guard mayView(request, principal) else { throw DomainError.notFound("no approval request \(id)") }
        try checkParticipant(principal, operation: request.operation, tenant: request.tenantID)
        let now = Date()
        if request.requestedBy == principal.name {
            throw DomainError(.selfApproval, "the requester cannot approve or reject their own request; another \(Self.role(for: request.operation).rawValue) must")
        }
        if request.votes.contains(where: { $0.approver == principal.name }) {
            throw DomainError(.alreadyVoted, "\(principal.name) has already voted on request \(id)")
        }
        try Self.requireOpen(request, at: now)
        do {
            return try await registry.vote(on: id, by: principal.name, decision, at: now)
        } catch let error as RegistryError where error.code == .conflict {
            throw DomainError(.approvalClosed, error.message)
        }
    }

    public func cancelApproval(_ id: String, by principal: Principal) async throws -> ApprovalRequest {
        let request = try await registry.approvalRequest(id)
        guard mayView(request, principal) else { throw DomainError.notFound("no approval request \(id)") }
        guard request.requestedBy == principal.name else {
            throw DomainError(.forbidden, "only the requester (\(request.requestedBy)) can cancel request \(id); others reject it")
        }
        let state = request.state(at: Date())
        guard state == .pending || state == .approved else {
            throw DomainError(state == .expired ? .approvalExpired : .approvalClosed, "request \(id) is \(state.rawValue)")
        }
        return try await registry.cancelApprovalRequest(id, by: principal.name, at: Date())
    }

    package static func requireOpen(_ request: ApprovalRequest, at now: Date) throws {
        switch request.state(at: now) {
        case .pending: return
        case .expired: throw DomainError(.approvalExpired, "request \(request.id) expired at \(RFC3339.format(request.expiresAt))")
        case let state: throw DomainError(.approvalClosed, "request \(request.id) is \(state.rawValue), not open for votes")
        }
    }

    /// Before any keystore is touched: the approval an operation needs, when the policy needs
    /// one, must be approved, unexpired, for this operation and target, and `principal` must
    /// have taken part. The registry checks all of it again when it uses the request.
    package func checkApproval(_ id: String?, operation: ApprovalOperation, target: String, by principal: Principal) async throws -> (id: String, by: String)? {
        guard people(for: operation) > 1 else {
            return try id.map { _ in throw DomainError.invalidInput("\(operation.rawValue) needs no approval here; leave out \"approval\"") }
        }
        guard let id else {
            throw DomainError(.approvalRequired,
                           "\(operation.rawValue) needs \(people(for: operation)) people: request it (POST /api/v1/approvals), have it approved, then pass its id as \"approval\"")
        }
        let request: ApprovalRequest
        do {
            request = try await registry.approvalRequest(id)
        } catch let error as RegistryError where error.code == .notFound {
            throw DomainError.notFound("no approval request \(id)")
        }
        guard request.operation == operation, request.target == target else {
            throw DomainError(.approvalMismatch, "request \(id) approves \(request.operation.rawValue) of \(request.target), not this")
        }
        switch request.state(at: Date()) {
        case .approved: break
        case .pending:
            throw DomainError(.approvalRequired,
                           "request \(id) has \(request.approvals) of \(request.requiredApprovals) approvals")
        case .expired: throw DomainError(.approvalExpired, "request \(id) expired at \(RFC3339.format(request.expiresAt))")
        case let state: throw DomainError(.approvalClosed, "request \(id) is \(state.rawValue)")
        }
        guard request.participants.contains(principal.name) else {
            throw DomainError(.forbidden, "request \(id) is carried out by its requester or an approver")
        }
        return (id, principal.name)
    }
}
