import Audit
public import AuditFormat
import CMKCore
import Foundation
package import KSI
import Logging
import Registry

/// Who asks, as the audit log records it.
public struct AuditContext: Sendable {
    public var actor: AuditActor
    public var requestID: String?
    public var clientAddress: String?

    public init(actor: AuditActor, requestID: String? = nil, clientAddress: String? = nil) {
        self.actor = actor
        self.requestID = requestID
        self.clientAddress = clientAddress
    }

    /// The scheduled prober.
    public static let prober = AuditContext(actor: .prober)
}

/// What an L1 request touches, for its audit record.
package struct L1Target {
    package var tenant: String
    package var keystore: String
    package var key: KeyReference
    package var target: String?
}

extension Gateway {
    /// Runs one request to an L1 key and appends its audit record, durably, before returning
    /// its result: success, a failed probe, or an error. If the record cannot be written the
    /// result is withheld and the call fails (fail closed).
    package func l1Request<T>(_ operation: String, _ l1: L1Target, mechanism: String? = nil, by context: AuditContext,
                      _ body: () async throws -> T) async throws -> T {
        try auditReady()
        let start = ContinuousClock.now
        let result: T
        do {
            result = try await measured(operation) { try await body() }
        } catch {
            try await record("l1.\(operation)", l1, outcome: .failure, errorCode: Self.auditCode(error), mechanism: mechanism,
                             since: start, by: context)
            throw error
        }
        var outcome = AuditRecord.Outcome.success
        var errorCode: String?
        var details: [String: String] = [:]
        var usedMechanism = mechanism
        if let report = result as? ProbeReport {
            usedMechanism = report.mechanism ?? mechanism
            if let failure = report.failure {
                outcome = .failure
                errorCode = failure.code.rawValue
                if let check = report.checks.first(where: { !$0.passed }) { details["check"] = check.name }
            }
        } else if let wrapped = result as? WrappedKey {
            usedMechanism = wrapped.mechanism
        } else if let pair = result as? (sovereign: WrappedKey, active: WrappedKey) {
            usedMechanism = pair.sovereign.mechanism
        }
        try await record("l1.\(operation)", l1, outcome: outcome, errorCode: errorCode, mechanism: usedMechanism,
                         details: details, since: start, by: context)
        return result
    }

    private func record(_ operation: String, _ l1: L1Target, outcome: AuditRecord.Outcome, errorCode: String?, mechanism: String?,
                        details: [String: String] = [:], since start: ContinuousClock.Instant, by context: AuditContext) async throws {
        _ = try await audit.append(AuditRecord(
            actor: context.actor, operation: operation, outcome: outcome, tenant: l1.tenant, keystore: l1.keystore,
            keyReference: l1.key.description, mechanism: mechanism, errorCode: errorCode, target: l1.target,
            requestID: context.requestID, clientAddress: context.clientAddress,
            latencyMicros: (ContinuousClock.now - start).microseconds, details: details))
    }

    /// Refuses new work once the audit store has failed: nothing may happen that cannot be recorded.
    package func auditReady() throws {
        if let failure = audit.store.failure { throw failure }
    }

    /// The stable code of an error, for the record (never its text, which may quote input).
    package static func auditCode(_ error: any Error) -> String {
        switch error {
        case let error as DomainError: error.code.rawValue
        case let error as KeystoreError: error.code.rawValue
        case let error as RegistryError: error.code.rawValue
        case let error as AuditError: "audit_\(error.code.rawValue)"
        default: "internal"
        }
    }
}

extension Gateway {
    /// Changes that reach nodes are committed to the registry (with their outbox event) before
    /// their audit record is appended; a crash in between would leave a revocation, a restore or
    /// a shred the audit log does not show. At start each link's events of a kind are counted
    /// against its successful records of the matching operation, and every event beyond them
    /// (the latest ones) gets a record by the system, marked `recovered`, so that the log names
    /// every kill-switch and every lifting of one, however often a link went back and forth.
    package func recoverRevocationRecords() async throws {
        let kinds: [(event: String, operation: String)] = [(EventType.l1Revoked.rawValue, "link.revoke"), (EventType.l1Restored.rawValue, "link.restore"),
                                                           (EventType.l2Shredded.rawValue, "l2.shred")]
        for kind in kinds {
            var recorded: [String: Int] = [:]
            var after: UInt64?
            repeat {
                let page = try audit.store.records(AuditQuery(operation: kind.operation, outcome: .success, after: after, limit: AuditQuery.maxLimit))
                for target in page.records.compactMap(\.target) { recorded[target, default: 0] += 1 }
                after = page.next
            } while after != nil
            var events: [String: [OutboxEvent]] = [:]
            var cursor: Int64 = 0
            while true {
                let page = try await registry.events(after: cursor, limit: 500)
                for event in page where event.type == kind.event { if let link = event.linkID { events[link, default: []].append(event) } }
                guard let last = page.last, page.count == 500 else { break }
                cursor = last.sequence
            }
            for (link, linkEvents) in events.sorted(by: { $0.key < $1.key }) where linkEvents.count > recorded[link] ?? 0 {
                for event in linkEvents.dropFirst(recorded[link] ?? 0) {
                    _ = try await audit.append(AuditRecord(
                        actor: AuditActor(kind: .system, id: "recovery", authMethod: "internal"), operation: kind.operation, outcome: .success,
                        tenant: event.tenantID, target: link, details: ["event": event.id, "recovered": "true",
                                                                        "at": RFC3339.format(event.createdAt)]))
                    logger.warning("recorded a change whose audit record was lost in a crash",
                                   metadata: ["operation": "\(kind.operation)", "link": "\(link)", "event": "\(event.id)"])
                }
            }
        }
    }
}

extension Gateway {
    /// Appends what `cmk admin` did on the host since the last time (account and token
    /// creation, unlocks, disables) to the audit log, oldest first, by `system/cli`, naming the
    /// host user and when. At least once: a crash between the append and the removal of the
    /// pending row repeats the record, with the same `hostAction` id, so it can be told apart.
    package func drainHostActions() async {
        guard (try? auditReady()) != nil else { return }
        while let batch = try? await registry.pendingAudit(limit: 100), !batch.isEmpty {
            for action in batch {
                var details = (try? JSONDecoder().decode([String: String].self, from: Data(action.details.utf8))) ?? [:]
                details["hostAction"] = action.id
                details["hostUser"] = action.actor
                details["at"] = RFC3339.format(action.at)
                do {
                    _ = try await audit.append(AuditRecord(actor: AuditActor(kind: .system, id: "cli", authMethod: "host"),
                                                           operation: action.operation, outcome: .success, target: action.target,
                                                           details: details))
                    try await registry.deletePendingAudit(id: action.id)
                } catch {
                    logger.warning("a host action could not be recorded yet", metadata: ["error.type": "\(type(of: error))"])
                    return
                }
            }
        }
    }
}

extension Gateway {
    /// Runs an administrative action and appends its audit record, successful or not, before
    /// the response is sent. Refused up front once the audit store has failed (fail closed).
    /// `target` names the object when it is known in advance (also on failure); `resultTarget`
    /// reads it from the result.
    @discardableResult
    package func recorded<T>(_ operation: String, tenant: String? = nil, keystore: String? = nil, key: String? = nil, target: String? = nil,
                     details: [String: String] = [:], resultTarget: ((T) -> String?)? = nil, context audit: AuditContext,
                     _ action: () async throws -> T) async throws -> T {
        try auditReady()
        let start = ContinuousClock.now
        func record(_ outcome: AuditRecord.Outcome, errorCode: String?, target: String?) async throws {
            _ = try await self.audit.append(AuditRecord(
                actor: audit.actor, operation: operation, outcome: outcome, tenant: tenant, keystore: keystore,
                keyReference: key.map { String($0.prefix(2048)) }, errorCode: errorCode, target: target,
                requestID: audit.requestID, clientAddress: audit.clientAddress,
                latencyMicros: (ContinuousClock.now - start).microseconds, details: details))
        }
        let result: T
        do {
            result = try await action()
        } catch {
            try await record(.failure, errorCode: Self.auditCode(error), target: target)
            throw error
        }
        try await record(.success, errorCode: nil, target: resultTarget?(result) ?? target)
        return result
    }
}
