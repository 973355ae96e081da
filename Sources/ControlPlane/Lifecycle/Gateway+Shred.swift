import Audit
import AuditFormat
import CMKCore
import Crypto
public import Foundation
import KSI
import Logging
import NIOConcurrencyHelpers
import Orbital
import PKCS11
public import Registry

/// Crypto-shred: a revoked link's L2 destroyed for good, after a waiting period.
extension Gateway {

    /// The waiting period a shred request asks for, in hours (nil: the configured one); never
    /// shorter than the configuration, at most 30 days.
    package func shredWaitingHours(_ hours: Int?) throws -> Int? {
        guard let hours else { return nil }
        guard hours <= 720, Double(hours) * 3600 >= lifecycle.shredWaitingPeriod else {
            throw DomainError.invalidInput("waitingPeriodHours is at least \(lifecycle.shredWaitingPeriodHours) (lifecycle.shredWaitingPeriodHours) and at most 720")
        }
        return hours
    }

    /// `REVOKED → SHRED_SCHEDULED`: destruction after the waiting period, cancellable until then.
    public func scheduleShred(tenantID: String, linkID: String, waitingPeriodHours: Int?, approval approvalID: String?,
                              by principal: Principal) async throws -> L1Link {
        let link = try await registry.link(tenantID: tenantID, id: linkID)
        try Self.requireRevoked(link)
        let approval = try await checkApproval(approvalID, operation: .shred, target: linkID, by: principal)
        var hours = try shredWaitingHours(waitingPeriodHours)
        if hours == nil, let approvalID, let parameters = try? CanonicalJSON.parse(Array(try await registry.approvalRequest(approvalID).parameters.utf8)),
           let approved = parameters["waitingPeriodHours"]?.integerValue {
            hours = Int(approved)
        }
        let now = Date()
        let wait = hours.map { Double($0) * 3600 } ?? lifecycle.shredWaitingPeriod
        do {
            return try await registry.scheduleShred(tenantID: tenantID, linkID: linkID, shredAfter: now.addingTimeInterval(wait),
                                                    approval: approval, at: now)
        } catch let error as RegistryError where error.code == .conflict {
            throw DomainError(.conflict, error.message)
        }
    }

    /// `SHRED_SCHEDULED → REVOKED`. One person: stopping a destruction is always allowed.
    public func cancelShred(tenantID: String, linkID: String) async throws -> L1Link {
        let link = try await registry.link(tenantID: tenantID, id: linkID)
        guard link.state == .shredScheduled else {
            if link.state == .shredded { throw Self.notLive(link) }
            throw DomainError(.shredNotScheduled, "link \(linkID) is \(link.state.rawValue): no shred is scheduled")
        }
        return try await registry.cancelShred(tenantID: tenantID, linkID: linkID)
    }

    /// Runs every shred due at `now`: each L2's sovereign binding is destroyed in one durable
    /// transaction, the registry files are fenced so no copy survives in them, and the audit
    /// log records the destruction with the SHA-256 of what was destroyed. Returns the links.
    @discardableResult
    public func runDueShreds(now: Date = Date()) async -> [L1Link] {
        guard (try? auditReady()) != nil, let due = try? await registry.dueShreds(at: now) else { return [] }
        var shredded: [L1Link] = []
        for link in due {
            do {
                let l2 = try await registry.l2Key(linkID: link.id)
                let sealed = l2?.sovereignBinding ?? Data()
                let hash = Data(SHA256.hash(data: sealed))
                let result = try await registry.shred(linkID: link.id, sealedBinding: sealed, bindingSHA256: hash, at: now)
                let fenced = await fence()
                var details = ["event": result.event.id, "sovereignBindingSHA256": Hex.encode(Array(hash)), "fenced": String(fenced)]
                if let l2 { details["l2Ref"] = l2.id; details["destroyed"] = "sovereign binding (sealed under IVK \(l2.sovereignIVKVersion ?? 0))" }
                _ = try await audit.append(AuditRecord(actor: AuditActor(kind: .system, id: "shredder", authMethod: "internal"),
                                                       operation: "l2.shred", outcome: .success, tenant: link.tenantID,
                                                       target: link.id, details: details))
                logger.notice("L2 key shredded", metadata: ["tenant": "\(link.tenantID)", "link": "\(link.id)"])
                orbital.committed([result.event])
                dashboard.changed()
                shredded.append(result.link)
            } catch {
                logger.error("a scheduled shred failed; it is tried again", metadata: ["link": "\(link.id)", "error.type": "\(type(of: error))"])
            }
        }
        return shredded
    }

    /// Fences soon, once for every revocation in the next `fenceDelay`.
    package func scheduleFence() {
        let start = fencePending.withLockedValue { pending in
            defer { pending = true }
            return !pending
        }
        guard start else { return }
        Task {
            try? await Task.sleep(for: Self.fenceDelay)
            fencePending.withLockedValue { $0 = false }
            await fence()
        }
    }

    /// Checkpoints the registry's write-ahead log into the database file and truncates it, so
    /// that a binding the last commits overwrote survives in no file (a backup of the registry
    /// holds no active binding after a revocation, no sovereign binding after a shred). Tried a
    /// few times when readers hold the log; false if it never completed (logged).
    @discardableResult
    package func fence() async -> Bool {
        for attempt in 0..<20 {
            if (try? await registry.fenceOverwrittenContent()) == true { return true }
            try? await Task.sleep(for: .milliseconds(50 * (attempt + 1)))
        }
        logger.warning("could not truncate the registry's write-ahead log; overwritten bindings may stay in it until the next checkpoint")
        return false
    }
}
