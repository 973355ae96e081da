import Audit
import AuditFormat
import CMKCore
import ControlPlane
import Foundation
import Hummingbird
import KSI
import NIOFoundationEssentialsCompat
import Orbital
import Registry

/// The Management API under `/api/v1`. Handlers parse, call the gateway, shape the answer.
struct ManagementController {
    let gateway: Gateway
    let idempotency: IdempotencyCache
    var operations: ManagementOperations { ManagementOperations(gateway: gateway) }

    func register(on group: RouterGroup<CMKRequestContext>) {
        group.get("tenants", use: listTenants)
        group.post("tenants", use: createTenant)
        group.get("tenants/:tenant", use: getTenant)
        group.delete("tenants/:tenant", use: deleteTenant)
        group.get("keystores", use: listKeystores)
        group.get("keystores/:keystore", use: getKeystore)
        group.get("keystores/:keystore/keys", use: listKeys)
        group.post("keystores/:keystore/login", use: loginKeystore)
        group.get("tenants/:tenant/l1-links", use: listLinks)
        group.post("tenants/:tenant/l1-links", use: handshake)
        group.post("tenants/:tenant/l1-probes", use: validate)
        group.get("tenants/:tenant/l1-links/:link", use: getLink)
        group.post("tenants/:tenant/l1-links/:link/probe", use: reprobe)
        group.post("tenants/:tenant/l1-links/:link/revoke", use: revoke)
        group.patch("tenants/:tenant", use: updateTenant)
        group.post("tenants/:tenant/l1-links/:link/restore", use: restore)
        group.post("tenants/:tenant/l1-links/:link/shred", use: scheduleShred)
        group.delete("tenants/:tenant/l1-links/:link/shred", use: cancelShred)
        group.post("tenants/:tenant/l1-links/:link/rotate", use: rotateLink)
    }

    // MARK: Tenants

    @Sendable func listTenants(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let (limit, cursor) = try Self.pagination(request)
        let page = try await operations.tenants(limit: limit, after: cursor, visibleTo: context.principal)
        return try Self.json(PageResponse(items: page.items.map(TenantResponse.init), nextCursor: page.nextCursor), context: context).response
    }

    @Sendable func createTenant(_ request: Request, context: CMKRequestContext) async throws -> Response {
        try await idempotency.run(request, context: context) { body in
            let input = try Self.decode(CreateTenantRequest.self, from: body, context: context)
            let tenant = try await operations.createTenant(id: input.id, name: input.name, allowedRegions: input.allowedRegions,
                                                           by: context.audit)
            return try Self.json(TenantResponse(tenant), status: .created, etag: tenant.version, context: context)
        }
    }

    @Sendable func getTenant(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let tenant = try await operations.tenant(try context.parameters.require("tenant"))
        return try Self.json(TenantResponse(tenant), etag: tenant.version, context: context).response
    }

    @Sendable func deleteTenant(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let tenant = try context.parameters.require("tenant")
        try await operations.deleteTenant(tenant, expectedVersion: try Self.ifMatch(request), by: context.audit)
        return Response(status: .noContent)
    }

    /// Changes the regions allowed to unseal the tenant's L2; nodes of a region no longer
    /// allowed are told at once and drop the tenant's keys.
    @Sendable func updateTenant(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let tenant = try context.parameters.require("tenant")
        let input = try await Self.decode(UpdateTenantRequest.self, request, context)
        let updated = try await operations.setAllowedRegions(tenant: tenant, input.allowedRegions, expectedVersion: try Self.ifMatch(request),
                                                             by: context.audit)
        return try Self.json(TenantResponse(updated), etag: updated.version, context: context).response
    }

    // MARK: Keystores

    @Sendable func listKeystores(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let items = await operations.keystores().map { keystore, status in
            KeystoreResponse(id: keystore.id, provider: keystore.provider.rawValue, profile: keystore.profileName, status: status)
        }
        return try Self.json(PageResponse(items: items, nextCursor: nil), context: context).response
    }

    @Sendable func getKeystore(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let (keystore, status) = try await operations.keystore(try context.parameters.require("keystore"))
        return try Self.json(KeystoreResponse(id: keystore.id, provider: keystore.provider.rawValue, profile: keystore.profileName,
                                              status: status), context: context).response
    }

    /// Reads the keystore's PIN again and logs in once (after an operator corrected a refused
    /// PIN); answers the keystore with its new status, or `keystore_refused` if refused again.
    @Sendable func loginKeystore(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let (keystore, status) = try await operations.login(keystore: try context.parameters.require("keystore"), by: context.audit)
        return try Self.json(KeystoreResponse(id: keystore.id, provider: keystore.provider.rawValue, profile: keystore.profileName,
                                              status: status), context: context).response
    }

    @Sendable func listKeys(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let keys = try await operations.keys(inKeystore: try context.parameters.require("keystore"))
        return try Self.json(KeyListResponse(items: keys.keys, truncated: keys.truncated ? true : nil), context: context).response
    }

    // MARK: L1 links

    @Sendable func listLinks(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let (limit, cursor) = try Self.pagination(request)
        let page = try await operations.links(tenant: try context.parameters.require("tenant"), limit: limit, after: cursor)
        return try Self.json(PageResponse(items: page.items.map { LinkResponse($0.0, l2: $0.1) }, nextCursor: page.nextCursor), context: context).response
    }

    @Sendable func handshake(_ request: Request, context: CMKRequestContext) async throws -> Response {
        try await idempotency.run(request, context: context) { body in
            let tenant = try context.parameters.require("tenant")
            let input = try Self.decode(Gateway.HandshakeRequest.self, from: body, context: context)
            let (link, l2) = try await operations.handshake(tenant: tenant, input, by: context.audit)
            return try Self.json(LinkResponse(link, l2: l2), status: .created, etag: link.version, context: context)
        }
    }

    /// The wizard's validation step: the handshake's probe without the link (`Gateway.validate`).
    @Sendable func validate(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let tenant = try context.parameters.require("tenant")
        let input = try await Self.decode(Gateway.HandshakeRequest.self, request, context)
        let report = try await operations.validate(tenant: tenant, input, by: context.audit)
        return try Self.json(report, context: context).response
    }

    @Sendable func getLink(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let (link, l2) = try await operations.link(tenant: try context.parameters.require("tenant"), id: try context.parameters.require("link"))
        return try Self.json(LinkResponse(link, l2: l2), etag: link.version, context: context).response
    }

    @Sendable func reprobe(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let (link, l2) = try await operations.reprobe(tenant: try context.parameters.require("tenant"), link: try context.parameters.require("link"),
                                                      by: context.audit)
        return try Self.json(LinkResponse(link, l2: l2), etag: link.version, context: context).response
    }

    @Sendable func revoke(_ request: Request, context: CMKRequestContext) async throws -> Response {
        try await idempotency.run(request, context: context) { _ in
            let (tenant, link) = (try context.parameters.require("tenant"), try context.parameters.require("link"))
            let result = try await operations.revoke(tenant: tenant, link: link, expectedVersion: try Self.ifMatch(request), by: context.audit)
            let response = RevocationResponse(link: LinkResponse(result.link, l2: result.l2),
                                              event: .init(id: result.event.id, type: result.event.type, createdAt: result.event.createdAt))
            return try Self.json(response, etag: result.link.version, context: context)
        }
    }

    // MARK: Lifecycle

    /// The way back from a revocation: the same L2, active again, with L1 (and approval).
    @Sendable func restore(_ request: Request, context: CMKRequestContext) async throws -> Response {
        try await idempotency.run(request, context: context) { body in
            let (tenant, link) = (try context.parameters.require("tenant"), try context.parameters.require("link"))
            let input = body.readableBytes == 0 ? RestoreRequest() : try Self.decode(RestoreRequest.self, from: body, context: context)
            let principal = try SessionController.principal(context)
            let result = try await operations.restore(tenant: tenant, link: link, expectedVersion: try Self.ifMatch(request),
                                                      approval: input.approval, by: principal, audit: context.audit)
            let response = RevocationResponse(link: LinkResponse(result.link, l2: result.l2),
                                              event: .init(id: result.event.id, type: result.event.type, createdAt: result.event.createdAt))
            return try Self.json(response, etag: result.link.version, context: context)
        }
    }

    @Sendable func scheduleShred(_ request: Request, context: CMKRequestContext) async throws -> Response {
        try await idempotency.run(request, context: context) { body in
            let (tenant, link) = (try context.parameters.require("tenant"), try context.parameters.require("link"))
            let input = body.readableBytes == 0 ? ShredRequest() : try Self.decode(ShredRequest.self, from: body, context: context)
            let principal = try SessionController.principal(context)
            var details: [String: String] = [:]
            if let approval = input.approval { details["approval"] = approval }
            let scheduled = try await recorded("link.shred.schedule", tenant: tenant, target: { _ in link }, details: details, context: context) {
                try await gateway.scheduleShred(tenantID: tenant, linkID: link, waitingPeriodHours: input.waitingPeriodHours,
                                                approval: input.approval, by: principal)
            }
            return try Self.json(LinkResponse(scheduled, l2: try await gateway.registry.l2Key(linkID: link)), status: .accepted,
                                 etag: scheduled.version, context: context)
        }
    }

    @Sendable func cancelShred(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let (tenant, link) = (try context.parameters.require("tenant"), try context.parameters.require("link"))
        let cancelled = try await recorded("link.shred.cancel", tenant: tenant, target: { _ in link }, context: context) {
            try await gateway.cancelShred(tenantID: tenant, linkID: link)
        }
        return try Self.json(LinkResponse(cancelled, l2: try await gateway.registry.l2Key(linkID: link)), etag: cancelled.version,
                             context: context).response
    }

    /// L1 rotation of one link: the L2 re-wrapped under the new key, the L2 itself kept.
    @Sendable func rotateLink(_ request: Request, context: CMKRequestContext) async throws -> Response {
        try await idempotency.run(request, context: context) { body in
            let (tenant, link) = (try context.parameters.require("tenant"), try context.parameters.require("link"))
            let input = try Self.decode(RotateLinkRequest.self, from: body, context: context)
            let (rotated, l2) = try await recorded("link.rotate", tenant: tenant, keystore: input.keystore, key: input.key,
                                                   target: { _ in link }, context: context) {
                try await gateway.rotateLink(tenantID: tenant, linkID: link, toKeystore: input.keystore, toKey: input.key, by: context.audit)
            }
            return try Self.json(LinkResponse(rotated, l2: l2), etag: rotated.version, context: context)
        }
    }

    // MARK: Helpers

    @discardableResult
    func recorded<T>(_ operation: String, tenant: String?, keystore: String? = nil, key: String? = nil,
                     target: ((T) -> String?)? = nil, details: [String: String] = [:], context: CMKRequestContext,
                     _ action: () async throws -> T) async throws -> T {
        try await gateway.recorded(operation, tenant: tenant, keystore: keystore, key: key, target: target == nil ? nil : context.parameters.get("link"),
                                   details: details, resultTarget: target, context: context.audit, action)
    }

    static func pagination(_ request: Request) throws -> (Int, String?) {
        var limit = 50
        if let text = request.uri.queryParameters["limit"] {
            guard let value = Int(String(text)), (1...500).contains(value) else {
                throw DomainError.invalidInput("limit must be a number between 1 and 500")
            }
            limit = value
        }
        return (limit, request.uri.queryParameters["cursor"].map(String.init))
    }

    /// `If-Match: "7"` → 7. The ETag of a resource is its version, quoted.
    static func ifMatch(_ request: Request) throws -> Int? {
        guard let header = request.headers[.ifMatch] else { return nil }
        let trimmed = header.trimmingCharacters(in: .whitespaces)
        guard trimmed.hasPrefix("\""), trimmed.hasSuffix("\""), trimmed.count >= 3,
              let version = Int(trimmed.dropFirst().dropLast()) else {
            throw DomainError(.invalidInput, "If-Match must be an ETag as returned by the API, such as \"3\"")
        }
        return version
    }

    /// The whole body (up to the upload limit, else 413), decoded.
    static func decode<T: Decodable>(_ type: T.Type, _ request: Request, _ context: CMKRequestContext) async throws -> T {
        var request = request
        return try decode(type, from: try await request.collectBody(upTo: context.maxUploadSize), context: context)
    }

    static func decode<T: Decodable>(_ type: T.Type, from body: ByteBuffer, context: CMKRequestContext) throws -> T {
        guard JSONNesting.isAcceptable(body.readableBytesView) else {
            throw DomainError.invalidInput("the request body nests deeper than \(JSONNesting.maxDepth) levels")
        }
        do {
            return try context.requestDecoder.decode(type, from: Data(buffer: body))
        } catch {
            throw DomainError.invalidInput("the request body is not valid JSON for this route")
        }
    }

    static func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok, etag: Int? = nil, context: CMKRequestContext) throws -> Reply {
        let encoder = JSONEncoder.api
        var headers: HTTPFields = [.contentType: "application/json"]
        if let etag { headers[.eTag] = "\"\(etag)\"" }
        return Reply(status: status, headers: headers, body: ByteBuffer(data: try encoder.encode(value)))
    }
}


