import Audit
import AuditFormat
import CMKCore
import CMKProto
import ControlPlane
import Foundation
import GRPCCore
import NIOCore
import Registry
import SwiftProtobuf

/// Four-eyes approvals over gRPC.
struct ApprovalGRPCService: Openkcm_Cmk_V1_ApprovalService.ServiceProtocol {
    let base: GRPCServiceBase

    private static func id(_ name: String) throws -> String { try ResourceName.id(name, "approvals", field: "name") }

    func listApprovals(request: ServerRequest<Openkcm_Cmk_V1_ListApprovalsRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_ListApprovalsResponse> {
        try await base.door.unary(request, context, .read) { input, caller in
            let now = Date()
            let found = try await base.operations.approvals(state: try GRPCMessages.approvalState(input.state), visibleTo: caller.principal, now: now)
            return .with { $0.approvals = found.map { GRPCMessages.approval($0, now: now) } }
        }
    }

    func getApproval(request: ServerRequest<Openkcm_Cmk_V1_GetApprovalRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_Approval> {
        try await base.door.unary(request, context, .read) { input, caller in
            GRPCMessages.approval(try await base.operations.approval(try Self.id(input.name), visibleTo: caller.principal), now: Date())
        }
    }

    func createApproval(request: ServerRequest<Openkcm_Cmk_V1_CreateApprovalRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_Approval> {
        try await base.door.unary(request, context, .change) { input, caller in
            guard let operation = ApprovalOperation(rawValue: input.operation) else {
                throw DomainError.invalidInput("operation is one of \(ApprovalOperation.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            let tenant = input.tenant.isEmpty ? nil : try ResourceName.id(input.tenant, "tenants", field: "tenant", bareAllowed: true)
            var link: String?
            if !input.link.isEmpty {
                link = input.link.contains("/") ? try ResourceName.link(input.link, field: "link").link : input.link
            }
            let created = try await base.operations.requestApproval(
                .init(operation: operation, tenant: tenant, link: link, region: input.region.isEmpty ? nil : input.region,
                      waitingPeriodHours: input.hasWaitingPeriodHours ? Int(input.waitingPeriodHours) : nil,
                      ttlSeconds: input.hasTtlSeconds ? Int(input.ttlSeconds) : nil, reason: input.reason.isEmpty ? nil : input.reason),
                by: caller.principal, audit: caller.audit)
            return GRPCMessages.approval(created, now: Date())
        }
    }

    func approveApproval(request: ServerRequest<Openkcm_Cmk_V1_ApproveApprovalRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_Approval> {
        try await base.door.unary(request, context, .change) { input, caller in
            GRPCMessages.approval(try await base.operations.vote(.approve, on: try Self.id(input.name), by: caller.principal, audit: caller.audit),
                                  now: Date())
        }
    }

    func rejectApproval(request: ServerRequest<Openkcm_Cmk_V1_RejectApprovalRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_Approval> {
        try await base.door.unary(request, context, .change) { input, caller in
            GRPCMessages.approval(try await base.operations.vote(.reject, on: try Self.id(input.name), by: caller.principal, audit: caller.audit),
                                  now: Date())
        }
    }

    func cancelApproval(request: ServerRequest<Openkcm_Cmk_V1_CancelApprovalRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_Approval> {
        try await base.door.unary(request, context, .change) { input, caller in
            GRPCMessages.approval(try await base.operations.cancelApproval(try Self.id(input.name), by: caller.principal, audit: caller.audit),
                                  now: Date())
        }
    }
}

/// Nodes and their enrolment over gRPC (administrators' side; nodes use /node/v1).
struct NodeGRPCService: Openkcm_Cmk_V1_NodeService.ServiceProtocol {
    let base: GRPCServiceBase

    private static func id(_ name: String) throws -> String { try ResourceName.id(name, "nodes", field: "name") }

    func listNodes(request: ServerRequest<Openkcm_Cmk_V1_ListNodesRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_ListNodesResponse> {
        try await base.door.unary(request, context, .read) { _, _ in
            let nodes = try await base.operations.nodes()
            return .with { $0.nodes = nodes.map(GRPCMessages.node) }
        }
    }

    func createEnrolment(request: ServerRequest<Openkcm_Cmk_V1_CreateEnrolmentRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_Enrolment> {
        try await base.door.unary(request, context, .change) { input, caller in
            let approval = input.approval.isEmpty ? nil : try ResourceName.id(input.approval, "approvals", field: "approval", bareAllowed: true)
            let (token, enrolment) = try await base.operations.issueEnrolment(
                region: input.region, ttlSeconds: input.ttlSeconds == 0 ? nil : Int(input.ttlSeconds), approval: approval,
                by: caller.principal, audit: caller.audit)
            return .with {
                $0.name = "enrolments/\(enrolment.id)"
                $0.region = enrolment.region
                $0.token = token
                $0.expireTime = GRPCMessages.timestamp(enrolment.expiresAt)
            }
        }
    }

    func disableNode(request: ServerRequest<Openkcm_Cmk_V1_DisableNodeRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_Node> {
        try await base.door.unary(request, context, .change) { input, caller in
            GRPCMessages.node(try await base.operations.changeNode(try Self.id(input.name), .disable, by: caller.audit))
        }
    }

    func enableNode(request: ServerRequest<Openkcm_Cmk_V1_EnableNodeRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_Node> {
        try await base.door.unary(request, context, .change) { input, caller in
            GRPCMessages.node(try await base.operations.changeNode(try Self.id(input.name), .enable, by: caller.audit))
        }
    }

    func deleteNode(request: ServerRequest<Openkcm_Cmk_V1_DeleteNodeRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_Node> {
        try await base.door.unary(request, context, .change) { input, caller in
            GRPCMessages.node(try await base.operations.changeNode(try Self.id(input.name), .remove, by: caller.audit))
        }
    }
}
