import Audit
import AuditFormat
package import CMKCore
import Crypto
import Foundation
package import KSI
import Logging
import NIOConcurrencyHelpers
import Orbital
import PKCS11
public import Registry

/// Lifting the kill-switch: a revoked link restored with L1 (a new probe, and approval).
extension Gateway {

    /// The way back from a revocation, with L1: the L1 key is probed again; the sovereign binding
    /// opens with L1 (an audited L1 request) — inside the token when L1 and the IVK share it —
    /// and is wrapped again by the current IVK; the same L2 becomes `ACTIVE` under the link's next
    /// epoch, and nodes are told. If L1 is gone or refuses, nothing changes.
    public func restore(tenantID: String, linkID: String, expectedVersion: Int?, approval approvalID: String?,
                        by principal: Principal, context: AuditContext) async throws -> (link: L1Link, l2: L2Key, event: OutboxEvent) {
        let link = try await registry.link(tenantID: tenantID, id: linkID)
        try Self.requireRevoked(link)
        let approval = try await checkApproval(approvalID, operation: .restore, target: linkID, by: principal)
        guard let l2 = try await registry.l2Key(linkID: linkID), l2.state == .locked, let l1Version = l2.sovereignL1Version else {
            throw DomainError(.conflict, "link \(linkID) has no locked L2 key to restore")
        }
        let keystore = try keystore(link.keystoreID)
        let reference = try KeyReference(parsing: link.keyReference)
        let target = L1Target(tenant: tenantID, keystore: keystore.id, key: reference, target: linkID)
        let active: WrappedKey = try await keystore.run {
            let report = try await l1Request("probe", target, by: context) { await keystore.token.probe(reference) }
            guard report.passed else {
                throw DomainError(.probeFailed,
                               "the L1 key did not pass its probe, so the link stays revoked: \(report.failure?.reason ?? "unknown reason")",
                               details: report)
            }
            return try await activeBinding(for: l2, link: link, keystore: keystore, target: target, by: context)
        }
        guard let ivk = try await registry.currentIVK() else { throw DomainError(.notReady, "no IVK version exists yet") }
        let result: (link: L1Link, l2: L2Key, event: OutboxEvent)
        do {
            result = try await registry.restore(
                tenantID: tenantID, linkID: linkID, expectedVersion: expectedVersion,
                binding: .init(activeBinding: Data(active.blob), activeMechanism: active.mechanism, activeIVKVersion: ivk.version,
                               sovereignL1Version: l1Version),
                approval: approval, at: Date())
        } catch let error as RegistryError where error.code == .conflict {
            throw DomainError(.conflict, error.message)
        }
        logger.notice("L1 link restored", metadata: ["tenant": "\(tenantID)", "link": "\(linkID)", "epoch": "\(result.link.epoch)"])
        #if DEBUG
        // The crash tests' failpoint (D49): die between the commit and the push and record.
        if ProcessInfo.processInfo.environment["CMK_FAILPOINT"] == "restore-before-dispatch" { kill(getpid(), SIGKILL) }
        #endif
        orbital.committed([result.event])
        return result
    }

    /// The L2 of a locked record wrapped by the current IVK, made from its sovereign binding
    /// with L1. Inside the token when L1 and the IVK share it (the plaintext never leaves it);
    /// otherwise in wiped memory between the two tokens, as at the handshake.
    package func activeBinding(for l2: L2Key, link: L1Link, keystore: ConfiguredKeystore, target: L1Target,
                       by context: AuditContext) async throws -> WrappedKey {
        guard let ivk = try await registry.currentIVK() else { throw DomainError(.notReady, "no IVK version exists yet") }
        let ivkReference = try KeyReference(parsing: ivk.keyReference)
        let sovereign = try await sovereignBinding(of: l2)
        return try await mismatchExplained(link) {
            if let token = keystore.pkcs11, token.configuration.modulePath == platform.configuration.modulePath, platform.holds(target.key) {
                return try await l1Request("unwrap", target, mechanism: sovereign.mechanism, by: context) {
                    try await platform.rewrap(sovereign, from: target.key, to: ivkReference)
                }
            }
            let material = try await l1Request("unwrap", target, mechanism: sovereign.mechanism, by: context) {
                try await unwrapSovereign(sovereign, l2: l2, keystore: keystore, key: target.key)
            }
            return try await measured("wrap") { try await platform.wrap(material, with: ivkReference) }
        }
    }

    /// The L2's plaintext, in wiped memory, from its sovereign binding and L1 (with the cloud
    /// binding to tenant and L2Ref where the keystore has one).
    package func unwrapSovereign(_ sovereign: WrappedKey, l2: L2Key, keystore: ConfiguredKeystore, key: KeyReference) async throws -> SecretBytes {
        if let cloud = keystore.token as? any ContextBindingKeystore {
            return try await cloud.unwrap(sovereign, with: key, context: BindingContext(tenant: l2.tenantID, l2Ref: l2.id))
        }
        return try await keystore.token.unwrap(sovereign, with: key)
    }

    /// A sovereign binding that does not open under the link's key was made by another key: the
    /// key the link names was replaced. Said in those words, with the keystore's own reason kept.
    package func mismatchExplained<T>(_ link: L1Link, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as KeystoreError where error.code == .invalidInput {
            throw DomainError(.l1KeyMismatch,
                           "the L1 key \(link.keyReference) does not open the tenant's sovereign binding: it is not the key the L2 was bound to (was it replaced by another key with the same name?). Nothing was changed; restore needs the original key. Keystore: \(error.reason)")
        }
    }
}
