import CMKCore
public import Foundation
import Storage

extension Registry {
    /// The kill-switch, in ONE transaction: the link becomes `REVOKED`, its L2 becomes `LOCKED`
    /// with the active binding destroyed (the sovereign binding stays: only L1 can open it), and
    /// an `l1.revoked` event goes into the outbox. A crash can keep all three or none; the
    /// revocation can never be committed without the event that makes the nodes purge.
    ///
    /// `notFound` if the link does not exist or belongs to another tenant. `conflict` if it is
    /// already revoked, checked before the version: a retried kill-switch (whose ETag the first
    /// attempt made stale) should hear "already revoked", not "stale version".
    /// `preconditionFailed` if `expectedVersion` is given and is not the link's version.
    public func revoke(tenantID: String, linkID: String, expectedVersion: Int?, at: Date)
        async throws -> (link: L1Link, l2: L2Key?, event: OutboxEvent) {
        let revokedAt = at.registryNormalized
        let milliseconds = at.registryMilliseconds
        let eventID = Self.newID()
        return try await durableWrite { db in
            guard let link = try L1Link.fetch(db, tenantID: tenantID, id: linkID) else {
                throw RegistryError(.notFound, "no link \(linkID) for tenant \(tenantID)")
            }
            if link.state.isRevoked {
                throw RegistryError(.conflict, "link \(linkID) is already revoked (\(link.state.rawValue))")
            }
            if let expectedVersion, expectedVersion != link.version {
                throw RegistryError(.preconditionFailed, "link \(linkID) is at version \(link.version), not \(expectedVersion)")
            }
            // L2 first: the schema refuses a REVOKED link whose L2 is still ACTIVE.
            try db.execute(sql: """
                UPDATE l2_key SET state = 'LOCKED', locked_at = ?, active_binding = NULL, active_mechanism = NULL,
                                  active_ivk_version = NULL, version = version + 1
                WHERE link_id = ? AND state = 'ACTIVE'
                """, arguments: [milliseconds, linkID])
            try db.execute(sql: """
                UPDATE l1_link SET state = 'REVOKED', revoked_at = ?, version = version + 1 WHERE id = ?
                """, arguments: [milliseconds, linkID])
            let l2 = try L2Key.fetch(db, linkID: linkID)
            let payload = try RevocationPayload(tenant: tenantID, link: linkID, l2Ref: l2?.id, epoch: link.epoch, revokedAt: revokedAt).json()
            let event = try OutboxEvent.insert(db, id: eventID, type: EventType.l1Revoked.rawValue, tenantID: tenantID,
                                               linkID: linkID, payload: payload, createdAt: milliseconds)
            guard let revoked = try L1Link.fetch(db, id: linkID) else {
                throw RegistryError(.notFound, "link \(linkID) vanished inside its own transaction")
            }
            return (revoked, l2, event)
        }
    }
}
