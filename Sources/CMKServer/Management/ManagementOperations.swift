import Audit
import AuditFormat
import CMKCore
import ControlPlane
import Foundation
import KSI
import NIOConcurrencyHelpers
import Orbital
import Registry

/// The Management API's operations, once, for both transports: what each call reads, which
/// audit record it writes (its operation name, target and details) and what it sets off
/// (Orbital events, dashboard wake-ups). The REST controllers and the gRPC services only
/// decode their requests into these arguments and shape the results into their answers.
struct ManagementOperations: Sendable {
    let gateway: Gateway

    /// A revocation or restore: the link and its L2 as they are now, and the outbox event.
    typealias RevocationResult = (link: L1Link, l2: L2Key?, event: OutboxEvent)

    // MARK: Tenants

    func tenants(limit: Int, after cursor: String?, visibleTo principal: Principal?) async throws -> Page<Tenant> {
        let page = try await gateway.registry.tenants(limit: limit, after: cursor)
        // A caller limited to some tenants sees only those.
        return Page(items: page.items.filter { principal?.mayAccess(tenant: $0.id) ?? true }, nextCursor: page.nextCursor)
    }

    func tenant(_ id: String) async throws -> Tenant { try await gateway.registry.tenant(id) }

    func createTenant(id: String, name: String, allowedRegions: [String]?, by audit: AuditContext) async throws -> Tenant {
        try await gateway.recorded("tenant.create", tenant: id, context: audit) {
            try await gateway.registry.createTenant(id: id, name: name, allowedRegions: allowedRegions)
        }
    }

    func deleteTenant(_ id: String, expectedVersion: Int?, by audit: AuditContext) async throws {
        try await gateway.recorded("tenant.delete", tenant: id, context: audit) {
            try await gateway.registry.deleteTenant(id, expectedVersion: expectedVersion)
        }
    }

    /// Changes the regions allowed to unseal the tenant's L2; nodes of a region no longer
    /// allowed are told at once and drop the tenant's keys.
    func setAllowedRegions(tenant id: String, _ regions: [String]?, expectedVersion: Int?, by audit: AuditContext) async throws -> Tenant {
        let (updated, event) = try await gateway.recorded("tenant.regions", tenant: id,
                                                          details: ["allowedRegions": regions?.joined(separator: ",") ?? "all"],
                                                          context: audit) {
            try await gateway.registry.setAllowedRegions(tenantID: id, regions, expectedVersion: expectedVersion)
        }
        gateway.orbital.committed([event])
        return updated
    }

    // MARK: Keystores

    func keystores() async -> [(Gateway.ConfiguredKeystore, TokenStatus)] {
        var items: [(Gateway.ConfiguredKeystore, TokenStatus)] = []
        for keystore in gateway.keystores.values.sorted(by: { $0.id < $1.id }) { items.append((keystore, await keystore.token.status())) }
        return items
    }

    func keystore(_ id: String) async throws -> (Gateway.ConfiguredKeystore, TokenStatus) {
        let keystore = try gateway.keystore(id)
        return (keystore, await keystore.token.status())
    }

    /// An operator's re-login of a keystore whose PIN was refused (`login_refused`), once the PIN
    /// source is corrected: one attempt per request, audited; the PIN is neither logged nor
    /// returned (the audit record names the keystore only).
    func login(keystore id: String, by audit: AuditContext) async throws -> (Gateway.ConfiguredKeystore, TokenStatus) {
        let keystore = try gateway.keystore(id)
        guard let token = keystore.token as? any LoginRenewing else {
            throw DomainError(.keystoreUnsupported,
                              "keystore \(keystore.id) (\(keystore.provider.displayName)) has no login to renew: its credentials are read for each request")
        }
        let status = try await gateway.recorded("keystore.login", keystore: id, context: audit) {
            try await token.loginAgain()
        }
        return (keystore, status)
    }

    /// At most `KeyList.maxKeys` keys (a cloud KMS may hold many more), saying when there were more.
    func keys(inKeystore id: String) async throws -> KeyList {
        let keystore = try gateway.keystore(id)
        guard let listing = keystore.token as? any KeyListing else {
            throw DomainError(.keystoreUnsupported,
                              "keystore \(keystore.id) (\(keystore.provider.displayName)) does not list its keys here: name the key directly (\(Gateway.referenceForm(keystore.provider)))")
        }
        return try await listing.keyList(limit: KeyList.maxKeys)
    }

    // MARK: L1 links

    func links(tenant: String, limit: Int, after cursor: String?) async throws -> Page<(L1Link, L2Key?)> {
        _ = try await gateway.registry.tenant(tenant)
        let page = try await gateway.registry.links(tenantID: tenant, limit: limit, after: cursor)
        var items: [(L1Link, L2Key?)] = []
        for link in page.items { items.append((link, try await gateway.registry.l2Key(linkID: link.id))) }
        return Page(items: items, nextCursor: page.nextCursor)
    }

    func link(tenant: String, id: String) async throws -> (L1Link, L2Key?) {
        let link = try await gateway.registry.link(tenantID: tenant, id: id)
        return (link, try await gateway.registry.l2Key(linkID: link.id))
    }

    /// The handshake: probe, link, make the L2.
    func handshake(tenant: String, _ input: Gateway.HandshakeRequest, by audit: AuditContext) async throws -> (L1Link, L2Key) {
        try await gateway.recorded("link.create", tenant: tenant, keystore: input.keystore, key: input.key, resultTarget: { $0.0.id },
                                   context: audit) {
            try await gateway.handshake(tenantID: tenant, input, by: audit)
        }
    }

    /// The wizard's validation step: the handshake's probe without the link.
    func validate(tenant: String, _ input: Gateway.HandshakeRequest, by audit: AuditContext) async throws -> ProbeReport {
        try await gateway.validate(tenantID: tenant, input, by: audit)
    }

    func reprobe(tenant: String, link: String, by audit: AuditContext) async throws -> (L1Link, L2Key?) {
        try await gateway.reprobe(tenantID: tenant, linkID: link, by: audit)
    }

    /// The kill-switch.
    func revoke(tenant: String, link: String, expectedVersion: Int?, by audit: AuditContext) async throws -> RevocationResult {
        try await gateway.recorded("link.revoke", tenant: tenant, target: link, context: audit) {
            try await gateway.revoke(tenantID: tenant, linkID: link, expectedVersion: expectedVersion)
        }
    }

    /// The way back from a revocation: the same L2, active again, with L1 (and approval).
    func restore(tenant: String, link: String, expectedVersion: Int?, approval: String?, by principal: Principal,
                 audit: AuditContext) async throws -> RevocationResult {
        try await gateway.recorded("link.restore", tenant: tenant, target: link, details: approval.map { ["approval": $0] } ?? [:],
                                   context: audit) {
            let restored = try await gateway.restore(tenantID: tenant, linkID: link, expectedVersion: expectedVersion, approval: approval,
                                                     by: principal, context: audit)
            return (restored.link, restored.l2, restored.event)
        }
    }

    func revocation(tenant: String, link: String) async throws -> RevocationProgress {
        try await gateway.revocationProgress(tenantID: tenant, linkID: link)
    }

    // MARK: Approvals

    /// The requests the caller may see, newest first; `state` filters by the state now (an
    /// expired request is stored as pending or approved).
    func approvals(state: ApprovalState?, visibleTo principal: Principal, now: Date) async throws -> [ApprovalRequest] {
        let stored: [ApprovalState]? = state.map { $0 == .expired ? [.pending, .approved] : [$0] }
        return try await gateway.registry.approvalRequests(states: stored, limit: 200)
            .filter { gateway.mayView($0, principal) && (state == nil || $0.state(at: now) == state) }
    }

    func approval(_ id: String, visibleTo principal: Principal) async throws -> ApprovalRequest {
        let found: ApprovalRequest
        do {
            found = try await gateway.registry.approvalRequest(id)
        } catch let error as RegistryError where error.code == .notFound {
            throw DomainError.notFound("no approval request \(id)")
        }
        guard gateway.mayView(found, principal) else { throw DomainError.notFound("no approval request \(id)") }
        return found
    }

    func requestApproval(_ input: Gateway.ApprovalInput, by principal: Principal, audit: AuditContext) async throws -> ApprovalRequest {
        var details = ["operation": input.operation.rawValue]
        if let subject = input.link ?? input.region { details["for"] = String(subject.prefix(128)) }
        return try await gateway.recorded("approval.request", tenant: input.tenant, details: details, resultTarget: { $0.id }, context: audit) {
            try await gateway.requestApproval(input, by: principal)
        }
    }

    func vote(_ decision: ApprovalDecision, on id: String, by principal: Principal, audit: AuditContext) async throws -> ApprovalRequest {
        let found = try await approval(id, visibleTo: principal)
        let decided = try await gateway.recorded(decision == .approve ? "approval.approve" : "approval.reject", tenant: found.tenantID,
                                                 target: id, details: ["operation": found.operation.rawValue, "for": found.target],
                                                 context: audit) {
            try await gateway.vote(on: id, decision, by: principal)
        }
        gateway.dashboard.changed()
        return decided
    }

    func cancelApproval(_ id: String, by principal: Principal, audit: AuditContext) async throws -> ApprovalRequest {
        let found = try await approval(id, visibleTo: principal)
        return try await gateway.recorded("approval.cancel", tenant: found.tenantID, target: id,
                                          details: ["operation": found.operation.rawValue], context: audit) {
            try await gateway.cancelApproval(id, by: principal)
        }
    }

    // MARK: Nodes

    /// A node with what this replica knows of it now.
    struct NodeView: Sendable {
        var node: Node
        var leaseExpiresAt: Date?
        var connected: Bool
        var lastHeartbeatAt: Date?
        var keysHeld: Int?
    }

    func nodes() async throws -> [NodeView] {
        let nodes = try await gateway.registry.nodes()
        let leaseEnds = await gateway.leases.latestEndByNode()
        let connected = gateway.orbital.dispatcher.connectedNodes
        let heartbeats = gateway.heartbeats.withLockedValue { $0 }
        return nodes.map { node in
            NodeView(node: node, leaseExpiresAt: leaseEnds[node.id], connected: connected.contains(node.id),
                     lastHeartbeatAt: heartbeats[node.id]?.at, keysHeld: heartbeats[node.id]?.keysHeld)
        }
    }

    func issueEnrolment(region: String, ttlSeconds: Int?, approval: String?, by principal: Principal,
                        audit: AuditContext) async throws -> (token: String, enrolment: NodeEnrolment) {
        let ttl = try Gateway.enrolmentTTL(ttlSeconds ?? 3600)
        return try await gateway.issueEnrolment(region: region, ttl: .seconds(ttl), approval: approval, by: principal, context: audit)
    }

    enum NodeChange: String, Sendable {
        case disable = "node.disable", enable = "node.enable", remove = "node.remove"
    }

    func changeNode(_ id: String, _ change: NodeChange, by audit: AuditContext) async throws -> Node {
        try await gateway.recorded(change.rawValue, target: id, context: audit) {
            switch change {
            case .disable: try await gateway.setNode(id, disabled: true, by: audit)
            case .enable: try await gateway.setNode(id, disabled: false, by: audit)
            case .remove: try await gateway.setNode(id, remove: true, by: audit)
            }
        }
    }
}
