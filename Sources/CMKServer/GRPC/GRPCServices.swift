import AuditFormat
import CMKCore
import CMKProto
import ControlPlane
import Crypto
import Foundation
import GRPCCore
import KSI
import Logging
import Registry
import SwiftProtobuf

/// What every gRPC service of the Management API holds: the door every call goes through, the
/// operations it shares with REST, and the idempotency store for `request_id`.
struct GRPCServiceBase: Sendable {
    let door: GRPCFrontDoor
    let operations: ManagementOperations
    let idempotency: IdempotencyCache
    let logger: Logger

    var gateway: Gateway { operations.gateway }

    /// AIP-155: a change carrying `request_id` is made once; the same request sent again with
    /// the same id gets the first answer (kept 24 hours, in the registry, as REST's
    /// `Idempotency-Key`). Another request under the same id is refused.
    func once<In: SwiftProtobuf.Message, Out: SwiftProtobuf.Message>(
        _ requestID: String, _ request: In, method: String, caller: GRPCFrontDoor.Caller, _ work: () async throws -> Out
    ) async throws -> Out {
        if requestID.isEmpty { return try await work() }
        let digest = Data(SHA256.hash(data: try request.serializedBytes() as [UInt8]))
        let (answer, _) = try await idempotency.once(subject: caller.principal.name, key: requestID, method: "GRPC", path: method,
                                                     digest: digest, logger: logger) {
            IdempotencyCache.StoredAnswer(status: 0, headers: "[]", body: try await work().serializedBytes())
        }
        return try Out(serializedBytes: answer.body)
    }
}

struct TenantGRPCService: Openkcm_Cmk_V1_TenantService.ServiceProtocol {
    let base: GRPCServiceBase

    func listTenants(request: ServerRequest<Openkcm_Cmk_V1_ListTenantsRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_ListTenantsResponse> {
        try await base.door.unary(request, context, .read) { input, caller in
            let page = try await base.operations.tenants(limit: try Paging.limit(input.pageSize), after: Paging.token(input.pageToken),
                                                         visibleTo: caller.principal)
            return .with { $0.tenants = page.items.map(GRPCMessages.tenant); $0.nextPageToken = page.nextCursor ?? "" }
        }
    }

    func getTenant(request: ServerRequest<Openkcm_Cmk_V1_GetTenantRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_Tenant> {
        try await base.door.unary(request, context, .read, tenant: { try ResourceName.tenant($0.name) }) { input, _ in
            GRPCMessages.tenant(try await base.operations.tenant(try ResourceName.tenant(input.name)))
        }
    }

    func createTenant(request: ServerRequest<Openkcm_Cmk_V1_CreateTenantRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_Tenant> {
        try await base.door.unary(request, context, .change) { input, caller in
            try await base.once(input.requestID, input, method: context.descriptor.fullyQualifiedMethod, caller: caller) {
                let regions = input.tenant.hasAllowedRegions ? input.tenant.allowedRegions.regions : nil
                return GRPCMessages.tenant(try await base.operations.createTenant(id: input.tenantID, name: input.tenant.displayName,
                                                                                  allowedRegions: regions, by: caller.audit))
            }
        }
    }

    func updateTenant(request: ServerRequest<Openkcm_Cmk_V1_UpdateTenantRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_Tenant> {
        try await base.door.unary(request, context, .change, tenant: { try ResourceName.tenant($0.tenant.name, field: "tenant.name") }) { input, caller in
            guard input.updateMask.paths.allSatisfy({ $0 == "allowed_regions" }) else {
                throw DomainError.invalidInput("update_mask may name allowed_regions only: nothing else about a tenant changes")
            }
            let regions = input.tenant.hasAllowedRegions ? input.tenant.allowedRegions.regions : nil
            return GRPCMessages.tenant(try await base.operations.setAllowedRegions(
                tenant: try ResourceName.tenant(input.tenant.name, field: "tenant.name"), regions,
                expectedVersion: try Paging.version(input.tenant.etag), by: caller.audit))
        }
    }

    func deleteTenant(request: ServerRequest<Openkcm_Cmk_V1_DeleteTenantRequest>, context: ServerContext)
        async throws -> ServerResponse<Google_Protobuf_Empty> {
        try await base.door.unary(request, context, .change, tenant: { try ResourceName.tenant($0.name) }) { input, caller in
            try await base.operations.deleteTenant(try ResourceName.tenant(input.name), expectedVersion: try Paging.version(input.etag),
                                                   by: caller.audit)
            return Google_Protobuf_Empty()
        }
    }
}

struct KeystoreGRPCService: Openkcm_Cmk_V1_KeystoreService.ServiceProtocol {
    let base: GRPCServiceBase

    func listKeystores(request: ServerRequest<Openkcm_Cmk_V1_ListKeystoresRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_ListKeystoresResponse> {
        try await base.door.unary(request, context, .read) { _, _ in
            let keystores = await base.operations.keystores()
            return .with { $0.keystores = keystores.map(GRPCMessages.keystore) }
        }
    }

    func getKeystore(request: ServerRequest<Openkcm_Cmk_V1_GetKeystoreRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_Keystore> {
        try await base.door.unary(request, context, .read) { input, _ in
            let (keystore, status) = try await base.operations.keystore(try ResourceName.id(input.name, "keystores", field: "name"))
            return GRPCMessages.keystore(keystore, status)
        }
    }

    func listKeys(request: ServerRequest<Openkcm_Cmk_V1_ListKeysRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_ListKeysResponse> {
        try await base.door.unary(request, context, .read) { input, _ in
            let keys = try await base.operations.keys(inKeystore: try ResourceName.id(input.parent, "keystores", field: "parent"))
            return .with { $0.keys = keys.keys.map(GRPCMessages.key); $0.truncated = keys.truncated }
        }
    }
}
