

import Audit
import AuditFormat
import CMKCore
import Crypto
public import Foundation
import KSI
import Logging
import NIOConcurrencyHelpers
import NodeProtocol
import Orbital
import PKCS11
public import Registry

/// Regional nodes: one-time enrolment, and unseal (L2 sealed to the node's HPKE key, under a lease).
extension Gateway {
    /// The enrolled node `id` (cached), noting that it was seen now.
    package func seenNode(_ id: String) async throws -> Node? {
        let now = Date()
        if let known = knownNodes.withLockedValue({ $0[id] }) {
            guard now.timeIntervalSince(known.touched) >= Self.nodeTouchInterval else { return known.node }
            // Another replica may have disabled, removed or re-keyed the node: its notification
            // forgets the record at once; reading it again (below) bounds the time a lost
            // notification could matter to `nodeTouchInterval`.
            guard registry.isShared else {
                knownNodes.withLockedValue { $0[id]?.touched = now }
                try? await registry.touchNode(id, at: now)
                return known.node
            }
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
    package func forgetNode(_ id: String) {
        _ = knownNodes.withLockedValue { $0.removeValue(forKey: id) }
    }

    /// Another replica changed node `id`: forget its record, and end its streams here unless it
    /// is still active with the keys they were opened with (a re-key ends them too).
    package func nodeChangedElsewhere(_ id: String) async {
        let cached = knownNodes.withLockedValue { $0.removeValue(forKey: id) }
        let current = try? await registry.node(id)
        if current?.isActive != true || (cached != nil && current?.signingKey != cached?.node.signingKey) {
            orbital.dispatcher.disconnect(node: id)
        }
        dashboard.changed()
    }

    /// Disables, enables or removes a node: its cached record goes, its event streams end (a
    /// disabled or removed node is refused at its next call and drops its keys), and its leases
    /// stay counted in the exposure bound until they run out.
    public func setNode(_ id: String, disabled: Bool? = nil, remove: Bool = false, by context: AuditContext) async throws -> Node {
        let node: Node
        do {
            node = remove ? try await registry.removeNode(id) : try await registry.setNodeDisabled(id, disabled ?? true)
        } catch let error as RegistryError where error.code == .notFound {
            throw DomainError.notFound("no node \(id)")
        }
        forgetNode(id)
        if remove || disabled == true { orbital.dispatcher.disconnect(node: id) }
        await registry.announce(.node(id))
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
            throw DomainError(.rekeyRefused, "the new keys are malformed, or the proof does not verify with the new signing key", kind: .unprocessable)
        }
        let updated: Node
        do {
            updated = try await registry.rekeyNode(node.id, signingKey: signingKey, hpkeKey: hpkeKey)
        } catch let error as RegistryError where error.code == .conflict {
            throw DomainError(.rekeyRefused, error.message)
        }
        forgetNode(node.id)
        // Streams opened with the old key end: the node reconnects with the new one.
        orbital.dispatcher.disconnect(node: node.id)
        await registry.announce(.node(node.id))
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
            throw DomainError(.approvalClosed, error.message)
        }
        var details = ["region": region]
        if let approval { details["approval"] = approval.id }
        _ = try await audit.append(AuditRecord(actor: context.actor, operation: "node.enrolment.create", outcome: .success,
                                               target: enrolment.id, requestID: context.requestID, clientAddress: context.clientAddress,
                                               details: details))
        return (token, enrolment)
    }

    /// An enrolment token's lifetime: 60 s to a day.
    package static func enrolmentTTL(_ seconds: Int) throws -> Int {
        guard (60...86_400).contains(seconds) else { throw DomainError.invalidInput("ttlSeconds must be between 60 and 86400") }
        return seconds
    }

    /// Enrols a node: the token must be unused and unexpired, and `proof` must be the new
    /// signing key's signature over the enrolment message.
    public func enrol(token: String, signingKey: Data, hpkeKey: Data, proof: Data, clientAddress: String?) async throws -> Node {
        try auditReady()
        let refused = DomainError(.enrolmentRefused, "the enrolment token is unknown, used or expired, or the proof does not verify")
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
        leases.end(node: node.id, tenants: leaseDrops)
        logger.warning("node dropped keys when their lease ended", metadata: ["node": "\(node.id)", "tenants": "\(leaseDrops.count)"])
        for tenant in leaseDrops {
            _ = try await audit.append(AuditRecord(actor: context.actor, operation: "node.lease_expired", outcome: .success, tenant: tenant,
                                                   requestID: context.requestID, clientAddress: context.clientAddress,
                                                   details: ["node": node.id]))
        }
    }
}
