import Audit
import AuditFormat
import CMKCore
import ControlPlane
import Crypto
import Foundation
import Hummingbird
import NIOConcurrencyHelpers
import NIOCore
import NodeProtocol
import Orbital
import Registry
import ServiceLifecycle

/// Regional nodes. Administrators issue enrolment tokens and list nodes (`/api/v1/nodes…`);
/// nodes enrol and unseal (`/node/v1/…`, signed requests, see `NodeAuthenticationMiddleware`).
struct NodeController {
    let gateway: Gateway
    var operations: ManagementOperations { ManagementOperations(gateway: gateway) }

    struct EnrolmentRequest: Codable, Sendable {
        var region: String
        var ttlSeconds: Int?
        /// The approved request, when enrolments need more than one person.
        var approval: String?
    }

    struct EnrolmentResponse: Codable, Sendable {
        var id: String
        var region: String
        /// Shown once: only its hash is kept.
        var token: String
        var expiresAt: Date
    }

    struct NodeResponse: Codable, Sendable {
        var id: String
        var region: String
        var enrolledAt: Date
        var lastSeenAt: Date?
        /// The node's latest lease end, if it holds any key.
        var leaseExpiresAt: Date?
        /// Whether the node has its event stream open now.
        var connected: Bool = false
        var lastHeartbeatAt: Date?
        /// Keys the node said it holds at its last heartbeat (a count, never which).
        var keysHeld: Int?
        var disabledAt: Date?
        var removedAt: Date?
        var rekeyedAt: Date?
        /// At enrolment only: the newest event sequence number, where the node's stream starts
        /// (events before its enrolment are not its concern).
        var eventSequence: Int64?
        /// At enrolment only: the gateway's public signing key (base64), which the node pins to
        /// check every answer and event it receives.
        var gatewayKey: String?
    }

    struct HeartbeatRequest: Codable, Sendable {
        var keysHeld: Int
        /// Tenants whose keys were dropped because their lease ended unrenewed.
        var leaseDrops: [String]?
    }

    struct EnrolRequest: Codable, Sendable {
        var token: String
        /// Base64 of the Ed25519 and X25519 public keys (32 bytes each).
        var signingKey: String
        var hpkeKey: String
        /// Base64 Ed25519 signature over the enrolment message (proof of possession).
        var proof: String
    }

    struct UnsealRequest: Codable, Sendable {
        var tenant: String
    }

    struct UnsealResponse: Codable, Sendable {
        var tenant: String
        var l2Ref: String
        /// The L1 link the key belongs to: a revocation event names it.
        var link: String
        /// The link's epoch (+1 at each restore): a revocation event names the epoch it ends.
        var epoch: Int
        var suite: String
        var encapsulatedKey: String
        var ciphertext: String
        var leaseExpiresAt: Date
        /// The lease length: a node counts it from before it sent the request, so that clock
        /// differences never lengthen a lease.
        var leaseSeconds: Int
        /// Base64 Ed25519 signature by the gateway over `GatewayStatement.unseal`, bound to the
        /// request's nonce: an old answer replayed to the node does not verify.
        var signature: String
    }

    struct AckRequest: Codable, Sendable {
        /// Canonical JSON, exactly as signed.
        var statement: String
        var signature: String
    }

    struct RevocationResponse: Codable, Sendable {
        struct NodeProgress: Codable, Sendable {
            var node: String
            var region: String
            var acknowledged: Bool
            var keysDropped: Int?
            var receivedAt: Date?
            /// The signed statement and its signature, for anyone to verify with the node's key.
            var statement: String?
            var signature: String?
            var signingKey: String
        }

        var link: String
        var event: String
        var revokedAt: Date
        /// The link's state now: `LINKED` again after a restore (this revocation was lifted),
        /// `SHRED_SCHEDULED`, `SHREDDED`, or still `REVOKED`.
        var linkState: String
        /// `REVOKED` while nodes are still to acknowledge, `LOCKED` once every node enrolled at
        /// the time of the revocation has sent a verified acknowledgement.
        var state: RevocationProgress.Verdict
        var nodes: [NodeProgress]
        var missing: [String]
        /// The latest lease end among nodes that have not acknowledged: after it, no node can
        /// still hold the key even if it never hears of the revocation.
        var exposureBound: Date?
    }

    // MARK: Request helpers

    /// The calling node (set by `NodeAuthenticationMiddleware` on every signed route).
    static func node(_ context: CMKRequestContext) throws -> Node {
        guard let node = context.node else { throw DomainError(.unauthenticated, "a valid node signature is required") }
        return node
    }

    /// The `after` query parameter: an event sequence number, 0 when absent.
    static func after(_ request: Request) throws -> Int64 {
        try request.uri.queryParameters["after"].map { text -> Int64 in
            guard let value = Int64(String(text)), value >= 0 else { throw DomainError.invalidInput("after is an event sequence number") }
            return value
        } ?? 0
    }

    func registerAdministrative(on group: RouterGroup<CMKRequestContext>) {
        group.post("nodes/enrolments", use: issueEnrolment)
        group.get("nodes", use: listNodes)
        group.post("app-credentials", use: issueAppCredential)
        group.get("app-credentials", use: listAppCredentials)
        group.delete("app-credentials/:credential", use: revokeAppCredential)
        group.post("nodes/:node/disable", use: disableNode)
        group.post("nodes/:node/enable", use: enableNode)
        group.delete("nodes/:node", use: removeNode)
        group.get("tenants/:tenant/l1-links/:link/revocation", use: revocation)
    }

    func registerNode(open: RouterGroup<CMKRequestContext>, signed: RouterGroup<CMKRequestContext>) {
        open.post("enrol", use: enrol)
        // An acknowledgement is itself a statement signed with the node's key, naming the
        // node: that signature authenticates the call (Decisions D46).
        open.post("acks", use: acknowledge)
        signed.post("unseal", use: unseal)
        signed.get("events", use: events)
        signed.get("stream", use: stream)
        signed.post("heartbeat", use: heartbeat)
        signed.post("rekey", use: rekey)
        signed.get("app-credentials", use: appCredentialState)
    }

    struct AppCredentialRequest: Codable, Sendable {
        var name: String
        var tenants: [String]
        var ttlSeconds: Int?
    }

    struct AppCredentialResponse: Codable, Sendable {
        var id: String
        var name: String
        var tenants: [String]
        var createdAt: Date
        var createdBy: String
        var expiresAt: Date
        var revokedAt: Date?
        /// Shown once, at issue: `Authorization: Bearer <credential>` on a node's API.
        var credential: String?

        init(_ record: AppCredentialRecord, credential: String? = nil) {
            (id, name, tenants, createdAt, createdBy, expiresAt, revokedAt) = (record.id, record.name, record.tenants, record.createdAt,
                                                                              record.createdBy, record.expiresAt, record.revokedAt)
            self.credential = credential
        }
    }

    /// A credential for an application to use nodes' API for the tenants it names (each within
    /// the issuer's scope). Needs a person with a fresh code: it grants use of tenants' keys.
    @Sendable func issueAppCredential(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let principal = try SessionController.principal(context)
        let input = try await ManagementController.decode(AppCredentialRequest.self, request, context)
        for tenant in input.tenants where !principal.mayAccess(tenant: tenant) { throw DomainError.notFound("no tenant \(tenant)") }
        let issued = try await gateway.recorded("app_credential.issue", details: ["tenants": input.tenants.sorted().joined(separator: ",")],
                                                resultTarget: { $0.record.id }, context: context.audit) {
            try await gateway.issueAppCredential(name: input.name, tenants: input.tenants, ttl: TimeInterval(input.ttlSeconds ?? 86_400),
                                                 by: principal.name)
        }
        return try ManagementController.json(AppCredentialResponse(issued.record, credential: issued.credential), status: .created,
                                             context: context).response
    }

    @Sendable func listAppCredentials(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let principal = try SessionController.principal(context)
        let items = try await gateway.registry.appCredentials().filter { $0.tenants.allSatisfy(principal.mayAccess(tenant:)) }
        return try ManagementController.json(PageResponse(items: items.map { AppCredentialResponse($0) }, nextCursor: nil), context: context).response
    }

    /// Revoked at once: every connected node is told, and refuses the credential from then on.
    @Sendable func revokeAppCredential(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let principal = try SessionController.principal(context)
        let id = try context.parameters.require("credential")
        guard let record = try await gateway.registry.appCredentials().first(where: { $0.id == id }),
              record.tenants.allSatisfy(principal.mayAccess(tenant:)) else {
            throw DomainError.notFound("no app credential \(id)")
        }
        let revoked = try await gateway.recorded("app_credential.revoke", target: id, context: context.audit) {
            try await gateway.revokeAppCredential(id: id)
        }
        return try ManagementController.json(AppCredentialResponse(revoked), context: context).response
    }

    /// For nodes: the key that verifies app credentials, and the revoked ones not yet expired.
    @Sendable func appCredentialState(_ request: Request, context: CMKRequestContext) async throws -> Response {
        struct Revoked: Encodable { var id: String; var expiresAt: Int64 }
        struct State: Encodable { var key: String; var revoked: [Revoked] }
        let revoked = try await gateway.registry.revokedAppCredentials().map { Revoked(id: $0.id, expiresAt: $0.expiresAt.millisecondsSince1970) }
        return try ManagementController.json(State(key: gateway.appCredentialKey.publicKey.rawRepresentation.base64EncodedString(), revoked: revoked),
                                             context: context).response
    }

    struct RekeyRequest: Codable, Sendable {
        /// Base64 of the new Ed25519 and X25519 public keys.
        var signingKey: String
        var hpkeKey: String
        /// Base64 Ed25519 signature by the new signing key over the re-key message.
        var proof: String
    }

    /// A node's routine key rotation: signed with the current key, proven with the new one.
    @Sendable func rekey(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let node = try Self.node(context)
        let input = try await ManagementController.decode(RekeyRequest.self, request, context)
        guard let signingKey = Data(base64Encoded: input.signingKey), let hpkeKey = Data(base64Encoded: input.hpkeKey),
              let proof = Data(base64Encoded: input.proof) else {
            throw DomainError.invalidInput("signingKey, hpkeKey and proof are base64")
        }
        let updated = try await gateway.recorded("node.rekey", target: node.id, context: context.audit) {
            try await gateway.rekey(node, signingKey: signingKey, hpkeKey: hpkeKey, proof: proof, by: context.audit)
        }
        return try ManagementController.json(Self.response(updated), context: context).response
    }

    static func response(_ node: Node) -> NodeResponse {
        NodeResponse(id: node.id, region: node.region, enrolledAt: node.enrolledAt, lastSeenAt: node.lastSeenAt, leaseExpiresAt: nil,
                     disabledAt: node.disabledAt, removedAt: node.removedAt, rekeyedAt: node.rekeyedAt)
    }

    func changeNode(_ context: CMKRequestContext, _ change: ManagementOperations.NodeChange) async throws -> Response {
        let node = try await operations.changeNode(try context.parameters.require("node"), change, by: context.audit)
        return try ManagementController.json(Self.response(node), context: context).response
    }

    @Sendable func disableNode(_ request: Request, context: CMKRequestContext) async throws -> Response {
        try await changeNode(context, .disable)
    }

    @Sendable func enableNode(_ request: Request, context: CMKRequestContext) async throws -> Response {
        try await changeNode(context, .enable)
    }

    @Sendable func removeNode(_ request: Request, context: CMKRequestContext) async throws -> Response {
        try await changeNode(context, .remove)
    }

    /// Events after `after` (an event sequence number), oldest first: what a node missed.
    @Sendable func events(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let items = try await gateway.orbital.events(after: try Self.after(request))
        return try ManagementController.json(PageResponse(items: items, nextCursor: nil), context: context).response
    }

    /// Server-sent events (`EventStream`): what the node missed, then each event as it is
    /// committed, and signed heartbeats.
    @Sendable func stream(_ request: Request, context: CMKRequestContext) async throws -> Response {
        var start = try Self.after(request)
        if let last = request.headers[.init("Last-Event-ID")!], let value = Int64(last) { start = max(start, value) }
        let node = try Self.node(context)
        // The stream request's nonce (verified by the node authentication) binds its heartbeats.
        let stream = try gateway.orbital.stream(node: node.id, after: start,
                                                nonce: request.headers[.init(NodeProtocol.Header.nonce)!] ?? "")
        let dashboard = gateway.dashboard
        dashboard.changed()
        let body = ResponseBody { writer in
            // However the stream ends (a write to a closed connection fails at the next event or
            // heartbeat), the node is no longer connected: dashboards hear of it at once.
            defer { stream.end(); dashboard.changed() }
            try await stream.run { try await writer.write($0) }
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-store"], body: body)
    }

    @Sendable func heartbeat(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let node = try Self.node(context)
        let input = try await ManagementController.decode(HeartbeatRequest.self, request, context)
        let drops = input.leaseDrops ?? []
        guard input.keysHeld >= 0, input.keysHeld <= 1_000_000, drops.count <= 10_000, drops.allSatisfy({ $0.utf8.count <= 63 }) else {
            throw DomainError.invalidInput("keysHeld is 0-1000000; leaseDrops lists tenant ids")
        }
        try await gateway.heartbeat(from: node, keysHeld: input.keysHeld, leaseDrops: drops, by: context.audit)
        gateway.dashboard.changed()
        return Response(status: .noContent)
    }

    @Sendable func acknowledge(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let input = try await ManagementController.decode(AckRequest.self, request, context)
        guard let signature = Data(base64Encoded: input.signature) else { throw DomainError.invalidInput("signature is base64") }
        let verified = try await gateway.orbital.verifyAck(statement: input.statement, signature: signature, node: gateway.seenNode)
        var context = context
        context.identity = Identity(subject: verified.node.id, method: "ack-signature")
        context.node = verified.node
        let ack = try await gateway.acknowledge(verified, by: context.audit)
        gateway.dashboard.changed()
        // Canonical JSON of two ids: no encoder needed on the path every node takes at once.
        let body = try JSONValue.object(["event": .string(ack.eventID), "node": .string(ack.nodeID)]).canonicalBytes()
        return Response(status: .created, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    @Sendable func revocation(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let progress = try await operations.revocation(tenant: try context.parameters.require("tenant"),
                                                       link: try context.parameters.require("link"))
        let acks = Dictionary(uniqueKeysWithValues: progress.acks.map { ($0.nodeID, $0) })
        let nodes = progress.expected.map { node in
            let ack = acks[node.id]
            return RevocationResponse.NodeProgress(node: node.id, region: node.region, acknowledged: ack != nil, keysDropped: ack?.keysDropped,
                                                   receivedAt: ack?.receivedAt, statement: ack?.statement,
                                                   signature: ack?.signature.base64EncodedString(),
                                                   signingKey: node.signingKey.base64EncodedString())
        }
        let response = RevocationResponse(link: progress.event.linkID ?? "", event: progress.event.id, revokedAt: progress.event.createdAt,
                                          linkState: progress.linkState.rawValue, state: progress.verdict, nodes: nodes,
                                          missing: nodes.filter { !$0.acknowledged }.map(\.node), exposureBound: progress.exposureBound)
        return try ManagementController.json(response, context: context).response
    }

    @Sendable func issueEnrolment(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let input = try await ManagementController.decode(EnrolmentRequest.self, request, context)
        let (token, enrolment) = try await operations.issueEnrolment(region: input.region, ttlSeconds: input.ttlSeconds, approval: input.approval,
                                                                     by: try SessionController.principal(context), audit: context.audit)
        return try ManagementController.json(EnrolmentResponse(id: enrolment.id, region: enrolment.region, token: token,
                                                               expiresAt: enrolment.expiresAt), status: .created, context: context).response
    }

    @Sendable func listNodes(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let items = try await operations.nodes().map { view in
            let node = view.node
            return NodeResponse(id: node.id, region: node.region, enrolledAt: node.enrolledAt, lastSeenAt: node.lastSeenAt,
                                leaseExpiresAt: view.leaseExpiresAt, connected: view.connected, lastHeartbeatAt: view.lastHeartbeatAt,
                                keysHeld: view.keysHeld, disabledAt: node.disabledAt, removedAt: node.removedAt, rekeyedAt: node.rekeyedAt)
        }
        return try ManagementController.json(PageResponse(items: items, nextCursor: nil), context: context).response
    }

    @Sendable func enrol(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let input = try await ManagementController.decode(EnrolRequest.self, request, context)
        guard let signingKey = Data(base64Encoded: input.signingKey), let hpkeKey = Data(base64Encoded: input.hpkeKey),
              let proof = Data(base64Encoded: input.proof), input.token.utf8.count <= 256 else {
            throw DomainError.invalidInput("signingKey, hpkeKey and proof are base64; the token is at most 256 characters")
        }
        let head = try await gateway.registry.latestEventSequence()
        let node = try await gateway.enrol(token: input.token, signingKey: signingKey, hpkeKey: hpkeKey, proof: proof,
                                           clientAddress: context.clientAddress)
        return try ManagementController.json(NodeResponse(id: node.id, region: node.region, enrolledAt: node.enrolledAt,
                                                          lastSeenAt: nil, leaseExpiresAt: nil, eventSequence: head,
                                                          gatewayKey: gateway.appCredentialKey.publicKey.rawRepresentation.base64EncodedString()),
                                             status: .created, context: context).response
    }

    @Sendable func unseal(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let node = try Self.node(context)
        let input = try await ManagementController.decode(UnsealRequest.self, request, context)
        let sealed = try await gateway.unseal(tenantID: input.tenant, for: node, by: context.audit)
        let leaseSeconds = Int(gateway.leaseDuration.components.seconds)
        let statement = try GatewayStatement.unseal(node: node.id, tenant: sealed.tenant, l2Ref: sealed.l2Ref, link: sealed.link, epoch: sealed.epoch,
                                                    leaseSeconds: leaseSeconds, nonce: request.headers[.init(NodeProtocol.Header.nonce)!] ?? "",
                                                    encapsulatedKey: sealed.encapsulatedKey, ciphertext: sealed.ciphertext)
        return try ManagementController.json(UnsealResponse(
            tenant: sealed.tenant, l2Ref: sealed.l2Ref, link: sealed.link, epoch: sealed.epoch, suite: NodeProtocol.hpkeSuiteName,
            encapsulatedKey: sealed.encapsulatedKey.base64EncodedString(), ciphertext: sealed.ciphertext.base64EncodedString(),
            leaseExpiresAt: sealed.leaseExpiresAt, leaseSeconds: leaseSeconds,
            signature: try gateway.appCredentialKey.signature(for: statement).base64EncodedString()), context: context).response
    }
}
