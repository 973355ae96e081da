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

/// Node unseal: the tenant's L2 sealed to the node's HPKE key, under a lease.
extension Gateway {
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
                throw DomainError(.regionNotAllowed,
                               "tenant \(tenantID) does not allow region \(node.region) to unseal its key (allowed: \(tenant.allowedRegions?.joined(separator: ", ") ?? "all"))")
            }
            let links = try await registry.links(tenantID: tenantID, limit: 500, after: nil).items
            guard let link = links.last(where: { $0.state != .pendingValidation }) else {
                throw DomainError.notFound("tenant \(tenantID) has no L1 link")
            }
            switch link.state {
            case .shredded:
                throw DomainError(.keyShredded, "the key of tenant \(tenantID) was shredded: data under it can never be decrypted again")
            case .shredScheduled:
                throw DomainError(.keyShredScheduled,
                               "the L1 link of tenant \(tenantID) is revoked and its key is to be shredded at \(RFC3339.format(link.shredAfter ?? Date()))")
            case .revoked:
                throw DomainError(.keyRevoked, "the L1 link of tenant \(tenantID) is revoked: its keys cannot be unsealed until it is restored")
            case .linked, .pendingValidation:
                break
            }
            guard let l2 = try await registry.l2Key(linkID: link.id), l2.state == .active,
                  let binding = l2.activeBinding, let mechanism = l2.activeMechanism, let version = l2.activeIVKVersion else {
                throw DomainError(.keyRevoked, "the L1 link of tenant \(tenantID) is revoked: its keys can no longer be unsealed")
            }
            l2Ref = l2.id
            guard let ivk = try await registry.ivkVersions().first(where: { $0.version == version }) else {
                throw DomainError(.internal, "IVK version \(version) is missing")
            }
            let material = try await platform.unwrap(WrappedKey(mechanism: mechanism, blob: Array(binding)),
                                                     with: try KeyReference(parsing: ivk.keyReference))
            let recipient = try Curve25519.KeyAgreement.PublicKey(rawRepresentation: node.hpkeKey)
            var sender = try HPKE.Sender(recipientKey: recipient, ciphersuite: NodeProtocol.hpkeSuite,
                                         info: NodeProtocol.unsealInfo(tenant: tenantID, l2Ref: l2.id, node: node.id))
            let ciphertext = try material.withUnsafeBytes { try sender.seal($0) }
            let expiresAt = Date().addingTimeInterval(Double(leaseDuration.components.seconds))
            // Durable with the audit record (both awaited, written side by side): a restart keeps it.
            async let leased: Void = leases.grant(node: node.id, tenant: tenantID, until: expiresAt)
            try await record(.success, nil)
            try await leased
            return Unsealed(tenant: tenantID, l2Ref: l2.id, link: link.id, epoch: link.epoch, encapsulatedKey: sender.encapsulatedKey, ciphertext: ciphertext,
                            leaseExpiresAt: expiresAt)
        } catch let error as AuditError {
            throw error
        } catch {
            let denied = (error as? DomainError).map { [.keyRevoked, .keyShredScheduled, .keyShredded, .regionNotAllowed].contains($0.code) } ?? false
            try await record(denied ? .denied : .failure, Self.auditCode(error))
            throw error
        }
    }

    /// The longest outstanding lease: how long a node could still hold a key it was given.
    public func worstCaseExposure(tenantID: String? = nil) async -> Date? {
        await leases.latestEnd(tenant: tenantID)
    }
}
