import Audit
import AuditFormat
import CMKCore
import Crypto
import Foundation
import KSI
import Logging
import Metrics
import NIOConcurrencyHelpers
import Orbital
import PKCS11
public import Registry

/// The kill-switch's first step: the link revoked and its event in the outbox, in one
/// transaction; Orbital takes it to the nodes.
extension Gateway {
    /// The kill-switch: link REVOKED, L2 LOCKED with its active binding destroyed, and the
    /// revocation event in the outbox, in one registry transaction.
    public func revoke(tenantID: String, linkID: String, expectedVersion: Int?) async throws -> (link: L1Link, l2: L2Key?, event: OutboxEvent) {
        let result: (link: L1Link, l2: L2Key?, event: OutboxEvent)
        do {
            result = try await registry.revoke(tenantID: tenantID, linkID: linkID, expectedVersion: expectedVersion, at: Date())
        } catch let error as RegistryError where error.code == .conflict {
            throw DomainError(.linkRevoked, error.message)
        }
        logger.notice("L1 link revoked", metadata: ["tenant": "\(tenantID)", "link": "\(linkID)", "event": "\(result.event.id)"])
        #if DEBUG
        // A failpoint for the crash tests (debug builds only): die between the commit and the
        // dispatch, as a power cut there would. The event must still reach every node.
        if ProcessInfo.processInfo.environment["CMK_FAILPOINT"] == "revoke-before-dispatch" { kill(getpid(), SIGKILL) }
        #endif
        orbital.committed([result.event])
        // The dropped active binding is overwritten in the file already (secure_delete); the
        // write-ahead log still holds the page before the change until it is checkpointed.
        scheduleFence()
        return result
    }
}
