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

/// Re-probing linked L1 keys, on request and on a schedule.
extension Gateway {

    /// Probes a link's L1 key again and records the result; returns the link and its L2. A
    /// revoked link refuses.
    public func reprobe(tenantID: String, linkID: String, by context: AuditContext) async throws -> (L1Link, L2Key?) {
        let link = try await registry.link(tenantID: tenantID, id: linkID)
        guard !link.state.isRevoked else { throw Self.notLive(link) }
        let keystore = try keystore(link.keystoreID)
        return try await keystore.run {
            let probed = try await probe(link, by: context)
            return (probed, try await registry.l2Key(linkID: probed.id))
        }
    }

    package func probe(_ link: L1Link, by context: AuditContext) async throws -> L1Link {
        let keystore = try keystore(link.keystoreID)
        let reference = try KeyReference(parsing: link.keyReference)
        let report = try await l1Request("probe", L1Target(tenant: link.tenantID, keystore: keystore.id, key: reference, target: link.id),
                                         by: context) { await keystore.token.probe(reference) }
        return try await registry.recordProbe(linkID: link.id, passed: report.passed, report: Self.json(report), at: Date())
    }

    /// Re-probes every linked key (the scheduled prober). Failures are recorded, not thrown.
    public func probeAllLinked() async {
        guard let links = try? await registry.links(state: .linked) else { return }
        for link in links {
            do {
                _ = try await probe(link, by: .prober)
            } catch {
                logger.warning("scheduled probe failed", metadata: ["link": "\(link.id)", "error.type": "\(type(of: error))"])
            }
        }
    }
}
