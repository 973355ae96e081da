import Audit
import AuditFormat
import CMKCore
import Crypto
public import Foundation
import HTTPTypes
import KSI
import Logging
import NIOConcurrencyHelpers
import NodeProtocol
import PKCS11
public import Registry

/// Regional nodes: one-time enrolment, and unseal (L2 sealed to the node's HPKE key, under a lease).
extension Gateway {
    /// The enrolled node `id` (cached), noting that it was seen now.
    func seenNode(_ id: String) async throws -> Node? {
        let now = Date()
        if let known = knownNodes.withLockedValue({ $0[id] }) {
            if now.timeIntervalSince(known.touched) >= Self.nodeTouchInterval {
                knownNodes.withLockedValue { $0[id]?.touched = now }
                try? await registry.touchNode(id, at: now)
            }
            return known.node
        }
        let node: Node
        do {
            node = try await registry.node(id)
        } catch let error as RegistryError where error.code == .notFound {
            return nil
        }
        knownNodes.withLockedValue { $0[id] = (node, now) }
        try? await registry.touchNode(id, at: now)
        return node
    }

    /// Forgets a node's cached record after its keys or state changed.
    func forgetNode(_ id: String) {
        _ = knownNodes.withLockedValue { $0.removeValue(forKey: id) }
    }

    /// Disables, enables or removes a node: its cached record goes, its event streams end (a
    /// disabled or removed node is refused at its next call and drops its keys), and its leases
    /// stay counted in the exposure bound until they run out.
    public func setNode(_ id: String, disabled: Bool? = nil, remove: Bool = false, by context: AuditContext) async throws -> Node {
        let node: Node
        do {
            node = remove ? try await registry.removeNode(id) : try await registry.setNodeDisabled(id, disabled ?? true)
        } catch let error as RegistryError where error.code == .notFound {
            throw APIError.notFound("no node \(id)")
        }
        forgetNode(id)
        if remove || disabled == true { broadcaster.disconnect(node: id) }
        logger.notice(remove ? "node removed" : disabled == true ? "node disabled" : "node enabled", metadata: ["node": "\(id)"])
        dashboard.changed()
        return node
    }

    /// A node replaces its own keys (a routine rotation), proving it holds the new signing key;
    /// the call itself is signed with the current one.
    public func rekey(_ node: Node, signingKey: Data, hpkeKey: Data, proof: Data, by context: AuditContext) async throws -> Node {
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: signingKey), hpkeKey.count == 32,
              (try? Curve25519.KeyAgreement.PublicKey(rawRepresentation: hpkeKey)) != nil,
              key.isValidSignature(proof, for: NodeProtocol.rekeyProofMessage(node: node.id, signingKey: signingKey, hpkeKey: hpkeKey)) else {
            throw APIError(.unprocessableContent, code: "rekey_refused", "the new keys are malformed, or the proof does not verify with the new signing key")
        }
        let updated: Node
        do {
            updated = try await registry.rekeyNode(node.id, signingKey: signingKey, hpkeKey: hpkeKey)
        } catch let error as RegistryError where error.code == .conflict {
            throw APIError(.conflict, code: "rekey_refused", error.message)
        }
        forgetNode(node.id)
        // Streams opened with the old key end: the node reconnects with the new one.
        broadcaster.disconnect(node: node.id)
        return updated
    }

    /// Issues a one-time enrolment token for a node of `region`, valid for `ttl`. Only its
    /// hash is stored; the token is returned once.
    /// `approval`: the approved request, when the policy gives node enrolment to more than one
    /// person (`lifecycle.approvals.nodeEnrolment`); its lifetime, if it named one, wins.
    public func issueEnrolment(region: String, ttl: Duration, approval approvalID: String? = nil, by principal: Principal? = nil,
                               context: AuditContext) async throws -> (token: String, enrolment: NodeEnrolment) {
        try auditReady()
        var approval: (id: String, by: String)?
        var seconds = Double(ttl.components.seconds)
        if let principal {
            approval = try await checkApproval(approvalID, operation: .nodeEnrolment, target: region, by: principal)
            if let approval, let parameters = try? CanonicalJSON.parse(Array(try await registry.approvalRequest(approval.id).parameters.utf8)),
               let approved = parameters["ttlSeconds"]?.integerValue {
                seconds = Double(approved)
            }
        }
        let token = SecretToken.make(prefix: "okne_")
        let expiresAt = Date().addingTimeInterval(seconds)
        let enrolment: NodeEnrolment
        do {
            enrolment = try await registry.createEnrolment(tokenHash: SecretToken.hash(token), region: region, expiresAt: expiresAt,
                                                           approval: approval)
        } catch let error as RegistryError where error.code == .conflict {
            throw APIError(.conflict, code: "approval_closed", error.message)
        }
        var details = ["region": region]
        if let approval { details["approval"] = approval.id }
        _ = try await audit.append(AuditRecord(actor: context.actor, operation: "node.enrolment.create", outcome: .success,
                                               target: enrolment.id, requestID: context.requestID, clientAddress: context.clientAddress,
                                               details: details))
        return (token, enrolment)
    }

    /// An enrolment token's lifetime: 60 s to a day.
    static func enrolmentTTL(_ seconds: Int) throws -> Int {
        guard (60...86_400).contains(seconds) else { throw APIError.badRequest("ttlSeconds must be between 60 and 86400") }
        return seconds
    }

    /// Enrols a node: the token must be unused and unexpired, and `proof` must be the new
    /// signing key's signature over the enrolment message.
    public func enrol(token: String, signingKey: Data, hpkeKey: Data, proof: Data, clientAddress: String?) async throws -> Node {
        try auditReady()
        let refused = APIError(.unauthorized, code: "enrolment_refused", "the enrolment token is unknown, used or expired, or the proof does not verify")
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: signingKey), hpkeKey.count == 32,
              (try? Curve25519.KeyAgreement.PublicKey(rawRepresentation: hpkeKey)) != nil,
              key.isValidSignature(proof, for: NodeProtocol.enrolmentProofMessage(token: token, signingKey: signingKey, hpkeKey: hpkeKey)) else {
            throw refused
        }
        let node: Node
        do {
            node = try await registry.enrolNode(tokenHash: SecretToken.hash(token), signingKey: signingKey,
                                                hpkeKey: hpkeKey, at: Date())
        } catch let error as RegistryError where error.code == .notFound {
            throw refused
        }
        _ = try await audit.append(AuditRecord(actor: AuditActor(kind: .node, id: node.id, authMethod: "enrolment-token"),
                                               operation: "node.enrol", outcome: .success, target: node.id,
                                               clientAddress: clientAddress, details: ["region": node.region]))
        logger.notice("node enrolled", metadata: ["node": "\(node.id)", "region": "\(node.region)"])
        return node
    }

    public struct Unsealed: Sendable {
        public var tenant: String
        public var l2Ref: String
        public var link: String
        /// The link's epoch: a node installs a key only of an epoch it has not seen revoked.
        public var epoch: Int
        public var encapsulatedKey: Data
        public var ciphertext: Data
        public var leaseExpiresAt: Date
    }

    /// Unwraps the tenant's L2 (the active binding, with the IVK version that made it) and
    /// seals it to the node's HPKE key; the plaintext lives only in wiped memory, for the
    /// duration of this call. Refused by the link's state — `key_revoked` (409, restorable),
    /// `key_shred_scheduled` (409), `key_shredded` (410) — and `region_not_allowed` (403) for a
    /// node of a region the tenant does not allow.
    public func unseal(tenantID: String, for node: Node, by context: AuditContext) async throws -> Unsealed {
        try auditReady()
        let start = ContinuousClock.now
        var l2Ref: String?
        func record(_ outcome: AuditRecord.Outcome, _ code: String?) async throws {
            _ = try await audit.append(AuditRecord(
                actor: context.actor, operation: "l2.unseal", outcome: outcome, tenant: tenantID, errorCode: code, target: l2Ref,
                requestID: context.requestID, clientAddress: context.clientAddress,
                latencyMicros: (ContinuousClock.now - start).microseconds, details: ["node": node.id]))
        }
        do {
            let tenant = try await registry.tenant(tenantID)
            guard tenant.allows(region: node.region) else {
                throw APIError(.forbidden, code: "region_not_allowed",
                               "tenant \(tenantID) does not allow region \(node.region) to unseal its key (allowed: \(tenant.allowedRegions?.joined(separator: ", ") ?? "all"))")
            }
            let links = try await registry.links(tenantID: tenantID, limit: 500, after: nil).items
            guard let link = links.last(where: { $0.state != .pendingValidation }) else {
                throw APIError.notFound("tenant \(tenantID) has no L1 link")
            }
            switch link.state {
            case .shredded:
                throw APIError(.gone, code: "key_shredded", "the key of tenant \(tenantID) was shredded: data under it can never be decrypted again")
            case .shredScheduled:
                throw APIError(.conflict, code: "key_shred_scheduled",
                               "the L1 link of tenant \(tenantID) is revoked and its key is to be shredded at \(rfc3339(link.shredAfter ?? Date()))")
            case .revoked:
                throw APIError(.conflict, code: "key_revoked", "the L1 link of tenant \(tenantID) is revoked: its keys cannot be unsealed until it is restored")
            case .linked, .pendingValidation:
                break
            }
            guard let l2 = try await registry.l2Key(linkID: link.id), l2.state == .active,
                  let binding = l2.activeBinding, let mechanism = l2.activeMechanism, let version = l2.activeIVKVersion else {
                throw APIError(.conflict, code: "key_revoked", "the L1 link of tenant \(tenantID) is revoked: its keys can no longer be unsealed")
            }
            l2Ref = l2.id
            guard let ivk = try await registry.ivkVersions().first(where: { $0.version == version }) else {
                throw APIError(.internalServerError, code: "internal", "IVK version \(version) is missing")
            }
            let material = try await platform.unwrap(WrappedKey(mechanism: mechanism, blob: Array(binding)),
                                                     with: try KeyReference(parsing: ivk.keyReference))
            let recipient = try Curve25519.KeyAgreement.PublicKey(rawRepresentation: node.hpkeKey)
            var sender = try HPKE.Sender(recipientKey: recipient, ciphersuite: NodeProtocol.hpkeSuite,
                                         info: NodeProtocol.unsealInfo(tenant: tenantID, l2Ref: l2.id, node: node.id))
            let ciphertext = try material.withUnsafeBytes { try sender.seal($0) }
            let expiresAt = Date().addingTimeInterval(Double(leaseDuration.components.seconds))
            leases.withLockedValue { $0[LeaseKey(node: node.id, tenant: tenantID)] = expiresAt }
            // Durable with the audit record (both awaited, written side by side): a restart keeps it.
            async let leased: Void = leaseRecorder.submit(LeaseChange(node: node.id, tenant: tenantID, expiresAt: expiresAt))
            try await record(.success, nil)
            try await leased
            return Unsealed(tenant: tenantID, l2Ref: l2.id, link: link.id, epoch: link.epoch, encapsulatedKey: sender.encapsulatedKey, ciphertext: ciphertext,
                            leaseExpiresAt: expiresAt)
        } catch let error as AuditError {
            throw error
        } catch {
            let denied = (error as? APIError).map { ["key_revoked", "key_shred_scheduled", "key_shredded", "region_not_allowed"].contains($0.code) } ?? false
            try await record(denied ? .denied : .failure, Self.auditCode(error))
            throw error
        }
    }

    /// The longest outstanding lease: how long a node could still hold a key it was given.
    public func worstCaseExposure(tenantID: String? = nil) -> Date? {
        leases.withLockedValue { leases in
            leases.filter { tenantID == nil || $0.key.tenant == tenantID }.values.max()
        }
    }
}

struct LeaseKey: Hashable, Sendable {
    var node: String
    var tenant: String
}

// MARK: - Purge acknowledgements and revocation progress

extension Gateway {
    /// Verifies and stores a node's signed acknowledgement of a revocation event. The
    /// statement is canonical JSON (`event`, `keysDropped`, `link`, `node`, `time`, `type`),
    /// signed with the node's enrolled key; it must name the calling node and the event's link.
    public func acknowledge(statement: String, signature: Data, from node: Node, by context: AuditContext) async throws -> NodeAck {
        try auditReady()
        guard node.removedAt == nil else {
            throw APIError(.forbidden, code: "node_removed", "node \(node.id) was removed; its acknowledgements are no longer taken")
        }
        let bad = { (reason: String) in APIError(.unprocessableContent, code: "invalid_ack", reason) }
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: node.signingKey),
              signature.count == 64, key.isValidSignature(signature, for: Data(statement.utf8)) else {
            throw APIError(.unauthorized, code: "invalid_ack", "the acknowledgement's signature does not verify with this node's key")
        }
        guard let parsed = NodeProtocol.parseAck(statement) else {
            throw bad("the statement is not a canonical \(NodeProtocol.ackType) object")
        }
        let (eventID, linkID, nodeID, dropped) = (parsed.event, parsed.link, parsed.node, parsed.keysDropped)
        guard nodeID == node.id else { throw bad("the statement names another node") }
        var found = recentEvents.withLockedValue { $0[eventID] }
        if found == nil { found = try await registry.event(id: eventID) }
        guard let event = found, event.type == OutboxEvent.l1Revoked, event.linkID == linkID else {
            throw bad("no revocation event \(eventID) for link \(linkID)")
        }
        let ack = NodeAck(eventID: eventID, nodeID: node.id, linkID: linkID, keysDropped: dropped, statement: statement,
                          signature: signature, receivedAt: Date())
        guard try await ackRecorder.submit(ack) else {
            throw APIError(.conflict, code: "already_acknowledged", "node \(node.id) already acknowledged event \(eventID)")
        }
        leases.withLockedValue { $0[LeaseKey(node: node.id, tenant: event.tenantID)] = nil }
        leaseRecorder.submitWithoutWaiting(LeaseChange(node: node.id, tenant: event.tenantID, expiresAt: nil))
        _ = try await audit.append(AuditRecord(actor: context.actor, operation: "node.purge_ack", outcome: .success,
                                               tenant: event.tenantID, target: linkID, requestID: context.requestID,
                                               clientAddress: context.clientAddress,
                                               details: ["event": eventID, "keysDropped": String(dropped), "node": node.id]))
        return ack
    }

    public struct RevocationProgress: Sendable {
        public var event: OutboxEvent
        public var linkState: LinkState
        /// Nodes enrolled when the revocation happened: each must acknowledge.
        public var expected: [Node]
        public var acks: [NodeAck]
        public var complete: Bool { Set(acks.map(\.nodeID)).isSuperset(of: expected.map(\.id)) }
        public var exposureBound: Date?
    }

    public func revocationProgress(tenantID: String, linkID: String) async throws -> RevocationProgress {
        let link = try await registry.link(tenantID: tenantID, id: linkID)
        guard let event = try await registry.revocationEvent(linkID: linkID) else {
            throw APIError(.notFound, code: "not_found", "link \(linkID) is not revoked")
        }
        // Disabled and removed nodes are not waited for: they are refused at their next call and
        // drop their keys; their leases stay in the exposure bound.
        let expected = try await registry.nodes().filter { $0.enrolledAt <= event.createdAt && $0.isActive }
        return RevocationProgress(event: event, linkState: link.state, expected: expected, acks: try await registry.acks(eventID: event.id),
                                  exposureBound: worstCaseExposure(tenantID: tenantID))
    }
}

// MARK: - Heartbeats

/// What a node last reported: when, and how many keys it holds (counts only).
public struct NodeHeartbeat: Sendable, Equatable {
    public var at: Date
    public var keysHeld: Int
}

extension Gateway {
    /// Records a node's heartbeat. `leaseDrops` names tenants whose keys the node dropped
    /// because their lease ended while it could not reach the gateway (fail closed): logged,
    /// audited, and their leases forgotten here.
    public func heartbeat(from node: Node, keysHeld: Int, leaseDrops: [String], by context: AuditContext) async throws {
        heartbeats.withLockedValue { $0[node.id] = NodeHeartbeat(at: Date(), keysHeld: keysHeld) }
        guard !leaseDrops.isEmpty else { return }
        try auditReady()
        leases.withLockedValue { leases in for tenant in leaseDrops { leases[LeaseKey(node: node.id, tenant: tenant)] = nil } }
        for tenant in leaseDrops { leaseRecorder.submitWithoutWaiting(LeaseChange(node: node.id, tenant: tenant, expiresAt: nil)) }
        logger.warning("node dropped keys when their lease ended", metadata: ["node": "\(node.id)", "tenants": "\(leaseDrops.count)"])
        for tenant in leaseDrops {
            _ = try await audit.append(AuditRecord(actor: context.actor, operation: "node.lease_expired", outcome: .success, tenant: tenant,
                                                   requestID: context.requestID, clientAddress: context.clientAddress,
                                                   details: ["node": node.id]))
        }
    }
}

/// Writes items in batches: whatever arrived while the previous batch was being written goes
/// in the next transaction. After a revocation every node acknowledges at once, and every
/// unseal stores its lease; one transaction (and one hand-off to the registry's writer) per
/// batch instead of per item, as the audit log does with its appends.
final class BatchWriter<Item: Sendable, Output: Sendable>: Sendable {
    private struct Pending {
        var item: Item
        /// Nil: nobody waits for this one.
        var continuation: CheckedContinuation<Output, any Error>?
    }

    private struct State {
        var pending: [Pending] = []
        var flushing = false
    }

    /// Stores a batch in one transaction and returns one output per item, in order.
    private let write: @Sendable ([Item]) async throws -> [Output]
    private struct MismatchedBatch: Error { var items: Int, outputs: Int }
    private let state = NIOLockedValueBox(State())

    init(write: @escaping @Sendable ([Item]) async throws -> [Output]) {
        self.write = write
    }

    /// Returns once the item is stored.
    func submit(_ item: Item) async throws -> Output {
        try await withCheckedThrowingContinuation { continuation in enqueue(Pending(item: item, continuation: continuation)) }
    }

    /// Stored soon; nobody waits.
    func submitWithoutWaiting(_ item: Item) { enqueue(Pending(item: item, continuation: nil)) }

    private func enqueue(_ pending: Pending) {
        let startFlushing = state.withLockedValue { state -> Bool in
            state.pending.append(pending)
            guard !state.flushing else { return false }
            state.flushing = true
            return true
        }
        if startFlushing { Task { await self.flush() } }
    }

    private func flush() async {
        while true {
            let batch = state.withLockedValue { state -> [Pending] in
                defer { state.pending.removeAll(keepingCapacity: true) }
                if state.pending.isEmpty { state.flushing = false }
                return state.pending
            }
            guard !batch.isEmpty else { return }
            do {
                let outputs = try await write(batch.map(\.item))
                // Every waiter must be resumed: a writer that answers for fewer items fails them all.
                guard outputs.count == batch.count else { throw MismatchedBatch(items: batch.count, outputs: outputs.count) }
                for (pending, output) in zip(batch, outputs) { pending.continuation?.resume(returning: output) }
            } catch {
                for pending in batch { pending.continuation?.resume(throwing: error) }
            }
        }
    }
}
