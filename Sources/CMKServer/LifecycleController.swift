import Audit
import AuditFormat
import CMKCore
import ControlPlane
import Foundation
import Hummingbird
import Registry

/// `/api/v1/approvals` (four-eyes requests and votes) and `/api/v1/rotations` (L1 and IVK
/// rotation jobs and their progress).
struct LifecycleController {
    let gateway: Gateway
    var operations: ManagementOperations { ManagementOperations(gateway: gateway) }

    struct CreateApprovalRequest: Codable, Sendable {
        var operation: ApprovalOperation
        var tenant: String?
        var link: String?
        var region: String?
        var waitingPeriodHours: Int?
        var ttlSeconds: Int?
        var reason: String?
    }

    struct ApprovalResponse: Codable, Sendable {
        struct Vote: Codable, Sendable {
            var approver: String
            var decision: String
            var at: Date
        }

        var id: String
        var operation: String
        var tenant: String?
        var target: String
        var parameters: [String: Int]
        var reason: String?
        var requestedBy: String
        /// People the operation takes, the requester included.
        var requiredPeople: Int
        var approvals: Int
        var state: String
        var votes: [Vote]
        var createdAt: Date
        var expiresAt: Date
        var decidedAt: Date?
        var executedAt: Date?
        var executedBy: String?
        var version: Int

        init(_ request: ApprovalRequest, now: Date) {
            id = request.id
            operation = request.operation.rawValue
            tenant = request.tenantID
            target = request.target
            var parameters: [String: Int] = [:]
            if case .object(let members)? = try? CanonicalJSON.parse(Array(request.parameters.utf8)) {
                for (key, value) in members { if let number = value.integerValue { parameters[key] = Int(number) } }
            }
            self.parameters = parameters
            reason = request.reason
            requestedBy = request.requestedBy
            requiredPeople = request.requiredApprovals + 1
            approvals = request.approvals
            state = request.state(at: now).rawValue
            votes = request.votes.map { Vote(approver: $0.approver, decision: $0.decision.rawValue, at: $0.at) }
            createdAt = request.createdAt
            expiresAt = request.expiresAt
            decidedAt = request.decidedAt
            executedAt = request.executedAt
            executedBy = request.executedBy
            version = request.version
        }
    }

    struct L1RotationRequest: Codable, Sendable {
        var keystore: String
        var fromKey: String
        var toKeystore: String?
        var toKey: String
    }

    struct RotationResponse: Codable, Sendable {
        var id: String
        var kind: String
        var state: String
        var keystore: String?
        var fromKey: String?
        var toKeystore: String?
        var toKey: String?
        var fromIVKVersion: Int?
        var toIVKVersion: Int?
        var total: Int
        var done: Int
        var failed: Int
        var failures: [RotationJob.Failure]
        var requestedBy: String
        var createdAt: Date
        var updatedAt: Date
        var finishedAt: Date?

        init(_ job: RotationJob) {
            (id, kind, state, keystore, fromKey, toKeystore, toKey) = (job.id, job.kind.rawValue, job.state.rawValue, job.keystoreID, job.fromKey,
                                                                       job.toKeystoreID, job.toKey)
            (fromIVKVersion, toIVKVersion, total, done, failed, failures) = (job.fromIVKVersion, job.toIVKVersion, job.total, job.done, job.failed,
                                                                             job.failures)
            (requestedBy, createdAt, updatedAt, finishedAt) = (job.requestedBy, job.createdAt, job.updatedAt, job.finishedAt)
        }
    }

    func register(on group: RouterGroup<CMKRequestContext>) {
        group.get("approvals", use: listApprovals)
        group.post("approvals", use: createApproval)
        group.get("approvals/:approval", use: getApproval)
        group.post("approvals/:approval/approve", use: approve)
        group.post("approvals/:approval/reject", use: reject)
        group.delete("approvals/:approval", use: cancel)
        group.get("rotations", use: listRotations)
        group.get("rotations/:rotation", use: getRotation)
        group.post("l1-rotations", use: startL1Rotation)
        group.post("ivk-rotations", use: startIVKRotation)
    }

    // MARK: Approvals

    @Sendable func listApprovals(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let principal = try SessionController.principal(context)
        var filter: ApprovalState?
        if let text = request.uri.queryParameters["state"] {
            guard let state = ApprovalState(rawValue: String(text)) else {
                throw DomainError.invalidInput("state is one of \(ApprovalState.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            filter = state
        }
        let now = Date()
        let items = try await operations.approvals(state: filter, visibleTo: principal, now: now).map { ApprovalResponse($0, now: now) }
        return try ManagementController.json(PageResponse(items: items, nextCursor: nil), context: context).response
    }

    @Sendable func createApproval(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let principal = try SessionController.principal(context)
        let input = try await ManagementController.decode(CreateApprovalRequest.self, request, context)
        let created = try await operations.requestApproval(.init(operation: input.operation, tenant: input.tenant, link: input.link,
                                                                 region: input.region, waitingPeriodHours: input.waitingPeriodHours,
                                                                 ttlSeconds: input.ttlSeconds, reason: input.reason),
                                                           by: principal, audit: context.audit)
        return try ManagementController.json(ApprovalResponse(created, now: Date()), status: .created, etag: created.version, context: context).response
    }

    @Sendable func getApproval(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let found = try await operations.approval(try context.parameters.require("approval"), visibleTo: try SessionController.principal(context))
        return try ManagementController.json(ApprovalResponse(found, now: Date()), etag: found.version, context: context).response
    }

    func decide(_ decision: ApprovalDecision, _ request: Request, _ context: CMKRequestContext) async throws -> Response {
        let principal = try SessionController.principal(context)
        let decided = try await operations.vote(decision, on: try context.parameters.require("approval"), by: principal, audit: context.audit)
        return try ManagementController.json(ApprovalResponse(decided, now: Date()), etag: decided.version, context: context).response
    }

    @Sendable func approve(_ request: Request, context: CMKRequestContext) async throws -> Response {
        try await decide(.approve, request, context)
    }

    @Sendable func reject(_ request: Request, context: CMKRequestContext) async throws -> Response {
        try await decide(.reject, request, context)
    }

    @Sendable func cancel(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let principal = try SessionController.principal(context)
        let cancelled = try await operations.cancelApproval(try context.parameters.require("approval"), by: principal, audit: context.audit)
        return try ManagementController.json(ApprovalResponse(cancelled, now: Date()), context: context).response
    }

    // MARK: Rotations

    @Sendable func listRotations(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let items = try await gateway.registry.rotationJobs().map(RotationResponse.init)
        return try ManagementController.json(PageResponse(items: items, nextCursor: nil), context: context).response
    }

    @Sendable func getRotation(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let id = try context.parameters.require("rotation")
        do {
            return try ManagementController.json(RotationResponse(try await gateway.registry.rotationJob(id)), context: context).response
        } catch let error as RegistryError where error.code == .notFound {
            throw DomainError.notFound("no rotation \(id)")
        }
    }

    @Sendable func startL1Rotation(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let principal = try SessionController.principal(context)
        let input = try await ManagementController.decode(L1RotationRequest.self, request, context)
        let job = try await gateway.recorded("rotation.l1.start", keystore: input.keystore, key: input.toKey,
                                             details: ["from": String(input.fromKey.prefix(2048))], resultTarget: { $0.id },
                                             context: context.audit) {
            try await gateway.startL1Rotation(keystoreID: input.keystore, fromKey: input.fromKey, toKeystore: input.toKeystore,
                                              toKey: input.toKey, by: principal, context: context.audit)
        }
        return try ManagementController.json(RotationResponse(job), status: .accepted, context: context).response
    }

    @Sendable func startIVKRotation(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let principal = try SessionController.principal(context)
        let job = try await gateway.recorded("rotation.ivk.start", resultTarget: { $0.id }, context: context.audit) {
            try await gateway.startIVKRotation(by: principal)
        }
        return try ManagementController.json(RotationResponse(job), status: .accepted, context: context).response
    }
}
