import CMKCore
import CMKProto
import ControlPlane
import Foundation
import GRPCCore
import Orbital
import Registry
import SwiftProtobuf

/// L1 links over gRPC: the handshake, probes, the kill-switch and its lifting, and the
/// revocation's progress as a stream that ends at LOCKED.
struct L1LinkGRPCService: Openkcm_Cmk_V1_L1LinkService.ServiceProtocol {
    let base: GRPCServiceBase
    /// How often a watched revocation is read again without a change heard on this replica
    /// (acknowledgements that reach another replica of a PostgreSQL deployment).
    var watchPollInterval: Duration = .seconds(1)

    private static func parentTenant(_ parent: String) throws -> String { try ResourceName.tenant(parent, field: "parent") }

    private static func handshake(_ provider: String, _ keystore: String, _ key: String) throws -> Gateway.HandshakeRequest {
        Gateway.HandshakeRequest(provider: provider, keystore: try ResourceName.id(keystore, "keystores", field: "keystore", bareAllowed: true),
                                 key: key)
    }

    func listL1Links(request: ServerRequest<Openkcm_Cmk_V1_ListL1LinksRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_ListL1LinksResponse> {
        try await base.door.unary(request, context, .read, tenant: { try Self.parentTenant($0.parent) }) { input, _ in
            let page = try await base.operations.links(tenant: try Self.parentTenant(input.parent), limit: try Paging.limit(input.pageSize),
                                                       after: Paging.token(input.pageToken))
            return .with { $0.l1Links = page.items.map { GRPCMessages.link($0.0, l2: $0.1) }; $0.nextPageToken = page.nextCursor ?? "" }
        }
    }

    func getL1Link(request: ServerRequest<Openkcm_Cmk_V1_GetL1LinkRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_L1Link> {
        try await base.door.unary(request, context, .read, tenant: { try ResourceName.link($0.name).tenant }) { input, _ in
            let name = try ResourceName.link(input.name)
            let (link, l2) = try await base.operations.link(tenant: name.tenant, id: name.link)
            return GRPCMessages.link(link, l2: l2)
        }
    }

    func createL1Link(request: ServerRequest<Openkcm_Cmk_V1_CreateL1LinkRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_L1Link> {
        try await base.door.unary(request, context, .change, tenant: { try Self.parentTenant($0.parent) }) { input, caller in
            try await base.once(input.requestID, input, method: context.descriptor.fullyQualifiedMethod, caller: caller) {
                let (link, l2) = try await base.operations.handshake(tenant: try Self.parentTenant(input.parent),
                                                                     try Self.handshake(input.provider, input.keystore, input.key), by: caller.audit)
                return GRPCMessages.link(link, l2: l2)
            }
        }
    }

    func validateL1Link(request: ServerRequest<Openkcm_Cmk_V1_ValidateL1LinkRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_ProbeReport> {
        // An audited L1 request: once begun, it is finished and recorded like a change.
        try await base.door.unary(request, context, .change, tenant: { try Self.parentTenant($0.parent) }) { input, caller in
            let report = try await base.operations.validate(tenant: try Self.parentTenant(input.parent),
                                                            try Self.handshake(input.provider, input.keystore, input.key), by: caller.audit)
            return GRPCMessages.probeReport(report)
        }
    }

    func probeL1Link(request: ServerRequest<Openkcm_Cmk_V1_ProbeL1LinkRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_L1Link> {
        try await base.door.unary(request, context, .change, tenant: { try ResourceName.link($0.name).tenant }) { input, caller in
            let name = try ResourceName.link(input.name)
            let (link, l2) = try await base.operations.reprobe(tenant: name.tenant, link: name.link, by: caller.audit)
            return GRPCMessages.link(link, l2: l2)
        }
    }

    func revokeL1Link(request: ServerRequest<Openkcm_Cmk_V1_RevokeL1LinkRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_RevocationResult> {
        try await base.door.unary(request, context, .change, tenant: { try ResourceName.link($0.name).tenant }) { input, caller in
            try await base.once(input.requestID, input, method: context.descriptor.fullyQualifiedMethod, caller: caller) {
                let name = try ResourceName.link(input.name)
                return GRPCMessages.revocationResult(try await base.operations.revoke(
                    tenant: name.tenant, link: name.link, expectedVersion: try Paging.version(input.etag), by: caller.audit))
            }
        }
    }

    func restoreL1Link(request: ServerRequest<Openkcm_Cmk_V1_RestoreL1LinkRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_RevocationResult> {
        try await base.door.unary(request, context, .change, tenant: { try ResourceName.link($0.name).tenant }) { input, caller in
            try await base.once(input.requestID, input, method: context.descriptor.fullyQualifiedMethod, caller: caller) {
                let name = try ResourceName.link(input.name)
                let approval = input.approval.isEmpty ? nil
                    : try ResourceName.id(input.approval, "approvals", field: "approval", bareAllowed: true)
                return GRPCMessages.revocationResult(try await base.operations.restore(
                    tenant: name.tenant, link: name.link, expectedVersion: try Paging.version(input.etag), approval: approval,
                    by: caller.principal, audit: caller.audit))
            }
        }
    }

    func getRevocation(request: ServerRequest<Openkcm_Cmk_V1_GetRevocationRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_Revocation> {
        try await base.door.unary(request, context, .read, tenant: { try ResourceName.link($0.name, revocation: true).tenant }) { input, _ in
            let name = try ResourceName.link(input.name, revocation: true)
            return GRPCMessages.revocation(try await base.operations.revocation(tenant: name.tenant, link: name.link), tenant: name.tenant)
        }
    }

    /// The progress now, then again at every change this replica hears of (an acknowledgement,
    /// a node connecting, a heartbeat) and at least every `watchPollInterval`, each message
    /// only when it differs from the last; the stream ends after LOCKED, or when the link is no
    /// longer revoked (restored).
    func watchRevocation(request: ServerRequest<Openkcm_Cmk_V1_GetRevocationRequest>, context: ServerContext)
        async throws -> StreamingServerResponse<Openkcm_Cmk_V1_Revocation> {
        let poll = watchPollInterval
        return try await base.door.stream(request, context, tenant: { try ResourceName.link($0.name, revocation: true).tenant }) { input, caller, writer in
            let name = try ResourceName.link(input.name, revocation: true)
            // Subscribed before the first read, so that no change between the two is missed.
            guard let (signals, end) = base.gateway.dashboard.subscribe(for: caller.principal.name) else {
                throw DomainError(.tooManyStreams, "too many live feeds are open for this caller; close one")
            }
            let (wake, waker) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
            let pump = Task { for await _ in signals { waker.yield() }; waker.finish() }
            let ticker = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: poll)
                    waker.yield()
                }
            }
            defer { pump.cancel(); ticker.cancel(); end() }
            var last: Openkcm_Cmk_V1_Revocation?
            func report() async throws -> Bool {
                let progress = try await base.operations.revocation(tenant: name.tenant, link: name.link)
                let message = GRPCMessages.revocation(progress, tenant: name.tenant)
                if message != last {
                    try await writer.write(message)
                    last = message
                }
                return progress.verdict == .locked || !progress.linkState.isRevoked
            }
            if try await report() { return }
            for await _ in wake {
                if try await report() { return }
            }
            try Task.checkCancellation()
        }
    }
}
