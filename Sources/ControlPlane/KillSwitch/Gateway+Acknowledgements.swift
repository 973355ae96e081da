import Audit
import AuditFormat
import CMKCore
import Crypto
import Foundation
import KSI
import Logging
import NIOConcurrencyHelpers
import NodeProtocol
public import Orbital
import PKCS11
public import Registry

/// The kill-switch's last steps: nodes' purge acknowledgements stored, and the revocation's
/// progress to `LOCKED`.
extension Gateway {
    /// Stores a node's verified acknowledgement of a revocation event (`Orbital.verifyAck`);
    /// the node's lease of the tenant's key ends with it.
    public func acknowledge(_ verified: VerifiedAck, by context: AuditContext) async throws -> NodeAck {
        try auditReady()
        let (ack, event) = try await orbital.record(verified)
        let node = verified.node
        leases.end(node: node.id, tenants: [event.tenantID])
        _ = try await audit.append(AuditRecord(actor: context.actor, operation: "node.purge_ack", outcome: .success,
                                               tenant: event.tenantID, target: ack.linkID, requestID: context.requestID,
                                               clientAddress: context.clientAddress,
                                               details: ["event": ack.eventID, "keysDropped": String(ack.keysDropped), "node": node.id]))
        return ack
    }

    public func revocationProgress(tenantID: String, linkID: String) async throws -> RevocationProgress {
        let link = try await registry.link(tenantID: tenantID, id: linkID)
        return try await orbital.progress(of: link, exposureBound: await worstCaseExposure(tenantID: tenantID))
    }
}
