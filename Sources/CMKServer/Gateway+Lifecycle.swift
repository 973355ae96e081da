import Audit
import AuditFormat
import CMKCore
import Crypto
public import Foundation
import HTTPTypes
import KSI
import Logging
import NIOConcurrencyHelpers
import PKCS11
public import Registry

/// The key lifecycle past the kill-switch: restore with L1, crypto-shred with a waiting period,
/// and the four-eyes approvals both need (Docs/Architecture.md, "The key lifecycle").
extension Gateway {
    /// The error for an operation that needs a live link, by the link's state.
    static func notLive(_ link: L1Link) -> APIError {
        switch link.state {
        case .shredded:
            APIError(.gone, code: "link_shredded", "link \(link.id) was shredded: its L2 key is destroyed and cannot come back")
        case .shredScheduled:
            APIError(.conflict, code: "shred_scheduled",
                     "link \(link.id) is revoked and scheduled for shredding at \(rfc3339(link.shredAfter ?? Date())); cancel the shred to restore it")
        case .revoked:
            APIError(.conflict, code: "link_revoked", "link \(link.id) is revoked; restore it (with L1, and approval) to use it again")
        case .linked, .pendingValidation:
            APIError(.conflict, code: "link_not_revoked", "link \(link.id) is \(link.state.rawValue), not revoked")
        }
    }

    /// Refuses unless the link is `REVOKED`, with the code of the state it is in.
    static func requireRevoked(_ link: L1Link) throws {
        guard link.state == .revoked else { throw notLive(link) }
    }

    // MARK: Approvals

    /// People an operation needs under the configured policy, the requester included.
    public func people(for operation: ApprovalOperation) -> Int { lifecycle.approvals.people(for: operation) }

    /// The role whose members request and approve an operation.
    static func role(for operation: ApprovalOperation) -> AdminRole {
        switch operation {
        case .restore, .shred: .securityAdmin
        case .nodeEnrolment: .platformOperator
        }
    }

    /// Whether `principal` may see a request: within its tenants, auditors and security
    /// administrators see every request (node enrolments too: who may unseal is their concern);
    /// a platform operator sees the requests of its own duty only.
    func mayView(_ request: ApprovalRequest, _ principal: Principal) -> Bool {
        if let tenant = request.tenantID, !principal.mayAccess(tenant: tenant) { return false }
        return principal.role != .platformOperator || Self.role(for: request.operation) == .platformOperator
    }

    /// Checks that `principal` may take part in a request for `operation` on `tenant`.
    func checkParticipant(_ principal: Principal, operation: ApprovalOperation, tenant: String?) throws {
        guard principal.isPerson else {
            throw APIError(.forbidden, code: "forbidden", "approvals are made by people with a fresh one-time code, not by tokens")
        }
        guard principal.role == Self.role(for: operation) else {
            throw APIError(.forbidden, code: "forbidden",
                           "\(operation.rawValue) is requested and approved by a \(Self.role(for: operation).rawValue), not a \(principal.role.rawValue)")
        }
        if let tenant, !principal.mayAccess(tenant: tenant) { throw APIError.notFound("no tenant \(tenant)") }
    }

    public struct ApprovalInput: Sendable {
        public var operation: ApprovalOperation
        public var tenant: String?
        public var link: String?
        public var region: String?
        public var waitingPeriodHours: Int?
        public var ttlSeconds: Int?
        public var reason: String?
    }

    /// A request for an operation the policy gives to more than one person. The target must be
    /// in a state the operation applies to, so that nobody approves what cannot be done.
    public func requestApproval(_ input: ApprovalInput, by principal: Principal) async throws -> ApprovalRequest {
        try checkParticipant(principal, operation: input.operation, tenant: input.tenant)
        let people = people(for: input.operation)
        guard people > 1 else {
            throw APIError(.conflict, code: "approval_not_required",
                           "\(input.operation.rawValue) needs one person here (lifecycle.approvals): carry it out directly")
        }
        var parameters: [String: JSONValue] = [:]
        let target: String
        switch input.operation {
        case .restore, .shred:
            guard let tenant = input.tenant, let linkID = input.link else {
                throw APIError.badRequest("\(input.operation.rawValue) names the tenant and the link")
            }
            let link = try await registry.link(tenantID: tenant, id: linkID)
            try Self.requireRevoked(link)
            if input.operation == .shred {
                let hours = try shredWaitingHours(input.waitingPeriodHours)
                if let hours { parameters["waitingPeriodHours"] = .integer(Int64(hours)) }
            }
            target = linkID
        case .nodeEnrolment:
            guard input.tenant == nil, let region = input.region,
                  region.range(of: #"^[a-z0-9][a-z0-9-]{0,62}$"#, options: .regularExpression) != nil else {
                throw APIError.badRequest("node.enrolment names the region (1-63 characters of a-z, 0-9 and -), and no tenant")
            }
            if let ttl = input.ttlSeconds { parameters["ttlSeconds"] = .integer(Int64(try Self.enrolmentTTL(ttl))) }
            target = region
        }
        if let reason = input.reason, reason.count > 500 { throw APIError.badRequest("a reason is at most 500 characters") }
        let now = Date()
        do {
            return try await registry.createApprovalRequest(
                operation: input.operation, tenantID: input.tenant, target: target,
                parameters: String(decoding: try JSONValue.object(parameters).canonicalBytes(), as: UTF8.self), reason: input.reason,
                requestedBy: principal.name, requesterRole: principal.role.rawValue, requiredApprovals: people - 1,
                expiresAt: now.addingTimeInterval(Double(lifecycle.approvalExpiryMinutes) * 60), at: now)
        } catch let error as RegistryError where error.code == .conflict {
            throw APIError(.conflict, code: "approval_pending", error.message)
        }
    }

    /// One approval or rejection, each person once, never the requester's own.
    public func vote(on id: String, _ decision: ApprovalDecision, by principal: Principal) async throws -> ApprovalRequest {
        let request = try await registry.approvalRequest(id)
        guard mayView(request, principal) else { throw APIError.notFound("no approval request \(id)") }
        try checkParticipant(principal, operation: request.operation, tenant: request.tenantID)
        let now = Date()
        if request.requestedBy == principal.name {
            throw APIError(.forbidden, code: "self_approval", "the requester cannot approve or reject their own request; another \(Self.role(for: request.operation).rawValue) must")
        }
        if request.votes.contains(where: { $0.approver == principal.name }) {
            throw APIError(.conflict, code: "already_voted", "\(principal.name) has already voted on request \(id)")
        }
        try Self.requireOpen(request, at: now)
        do {
            return try await registry.vote(on: id, by: principal.name, decision, at: now)
        } catch let error as RegistryError where error.code == .conflict {
            throw APIError(.conflict, code: "approval_closed", error.message)
        }
    }

    public func cancelApproval(_ id: String, by principal: Principal) async throws -> ApprovalRequest {
        let request = try await registry.approvalRequest(id)
        guard mayView(request, principal) else { throw APIError.notFound("no approval request \(id)") }
        guard request.requestedBy == principal.name else {
            throw APIError(.forbidden, code: "forbidden", "only the requester (\(request.requestedBy)) can cancel request \(id); others reject it")
        }
        let state = request.state(at: Date())
        guard state == .pending || state == .approved else {
            throw APIError(.conflict, code: state == .expired ? "approval_expired" : "approval_closed", "request \(id) is \(state.rawValue)")
        }
        return try await registry.cancelApprovalRequest(id, by: principal.name, at: Date())
    }

    static func requireOpen(_ request: ApprovalRequest, at now: Date) throws {
        switch request.state(at: now) {
        case .pending: return
        case .expired: throw APIError(.conflict, code: "approval_expired", "request \(request.id) expired at \(rfc3339(request.expiresAt))")
        case let state: throw APIError(.conflict, code: "approval_closed", "request \(request.id) is \(state.rawValue), not open for votes")
        }
    }

    /// Before any keystore is touched: the approval an operation needs, when the policy needs
    /// one, must be approved, unexpired, for this operation and target, and `principal` must
    /// have taken part. The registry checks all of it again when it uses the request.
    func checkApproval(_ id: String?, operation: ApprovalOperation, target: String, by principal: Principal) async throws -> (id: String, by: String)? {
        guard people(for: operation) > 1 else {
            return try id.map { _ in throw APIError.badRequest("\(operation.rawValue) needs no approval here; leave out \"approval\"") }
        }
        guard let id else {
            throw APIError(.forbidden, code: "approval_required",
                           "\(operation.rawValue) needs \(people(for: operation)) people: request it (POST /api/v1/approvals), have it approved, then pass its id as \"approval\"")
        }
        let request: ApprovalRequest
        do {
            request = try await registry.approvalRequest(id)
        } catch let error as RegistryError where error.code == .notFound {
            throw APIError.notFound("no approval request \(id)")
        }
        guard request.operation == operation, request.target == target else {
            throw APIError(.conflict, code: "approval_mismatch", "request \(id) approves \(request.operation.rawValue) of \(request.target), not this")
        }
        switch request.state(at: Date()) {
        case .approved: break
        case .pending:
            throw APIError(.forbidden, code: "approval_required",
                           "request \(id) has \(request.approvals) of \(request.requiredApprovals) approvals")
        case .expired: throw APIError(.conflict, code: "approval_expired", "request \(id) expired at \(rfc3339(request.expiresAt))")
        case let state: throw APIError(.conflict, code: "approval_closed", "request \(id) is \(state.rawValue)")
        }
        guard request.participants.contains(principal.name) else {
            throw APIError(.forbidden, code: "forbidden", "request \(id) is carried out by its requester or an approver")
        }
        return (id, principal.name)
    }

    // MARK: Restore

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
            throw APIError(.conflict, code: "conflict", "link \(linkID) has no locked L2 key to restore")
        }
        let keystore = try keystore(link.keystoreID)
        let reference = try KeyReference(parsing: link.keyReference)
        let target = L1Target(tenant: tenantID, keystore: keystore.id, key: reference, target: linkID)
        let active: WrappedKey = try await keystore.run {
            let report = try await l1Request("probe", target, by: context) { await keystore.token.probe(reference) }
            guard report.passed else {
                throw APIError(.unprocessableContent, code: "probe_failed",
                               "the L1 key did not pass its probe, so the link stays revoked: \(report.failure?.reason ?? "unknown reason")",
                               details: report)
            }
            return try await activeBinding(for: l2, link: link, keystore: keystore, target: target, by: context)
        }
        guard let ivk = try await registry.currentIVK() else { throw APIError(.serviceUnavailable, code: "not_ready", "no IVK version exists yet") }
        let result: (link: L1Link, l2: L2Key, event: OutboxEvent)
        do {
            result = try await registry.restore(
                tenantID: tenantID, linkID: linkID, expectedVersion: expectedVersion,
                binding: .init(activeBinding: Data(active.blob), activeMechanism: active.mechanism, activeIVKVersion: ivk.version,
                               sovereignL1Version: l1Version),
                approval: approval, at: Date())
        } catch let error as RegistryError where error.code == .conflict {
            throw APIError(.conflict, code: "conflict", error.message)
        }
        logger.notice("L1 link restored", metadata: ["tenant": "\(tenantID)", "link": "\(linkID)", "epoch": "\(result.link.epoch)"])
        #if DEBUG
        // The crash tests' failpoint (D49): die between the commit and the push and record.
        if ProcessInfo.processInfo.environment["CMK_FAILPOINT"] == "restore-before-dispatch" { kill(getpid(), SIGKILL) }
        #endif
        broadcaster.notify([result.event])
        return result
    }

    /// The L2 of a locked record wrapped by the current IVK, made from its sovereign binding
    /// with L1. Inside the token when L1 and the IVK share it (the plaintext never leaves it);
    /// otherwise in wiped memory between the two tokens, as at the handshake.
    func activeBinding(for l2: L2Key, link: L1Link, keystore: ConfiguredKeystore, target: L1Target,
                       by context: AuditContext) async throws -> WrappedKey {
        guard let ivk = try await registry.currentIVK() else { throw APIError(.serviceUnavailable, code: "not_ready", "no IVK version exists yet") }
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
    func unwrapSovereign(_ sovereign: WrappedKey, l2: L2Key, keystore: ConfiguredKeystore, key: KeyReference) async throws -> SecretBytes {
        if let cloud = keystore.token as? any ContextBindingKeystore {
            return try await cloud.unwrap(sovereign, with: key, context: BindingContext(tenant: l2.tenantID, l2Ref: l2.id))
        }
        return try await keystore.token.unwrap(sovereign, with: key)
    }

    /// A sovereign binding that does not open under the link's key was made by another key: the
    /// key the link names was replaced. Said in those words, with the keystore's own reason kept.
    func mismatchExplained<T>(_ link: L1Link, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as KeystoreError where error.code == .invalidInput {
            throw APIError(.conflict, code: "l1_key_mismatch",
                           "the L1 key \(link.keyReference) does not open the tenant's sovereign binding: it is not the key the L2 was bound to (was it replaced by another key with the same name?). Nothing was changed; restore needs the original key. Keystore: \(error.reason)")
        }
    }

    // MARK: Crypto-shred

    /// The waiting period a shred request asks for, in hours (nil: the configured one); never
    /// shorter than the configuration, at most 30 days.
    func shredWaitingHours(_ hours: Int?) throws -> Int? {
        guard let hours else { return nil }
        guard hours <= 720, Double(hours) * 3600 >= lifecycle.shredWaitingPeriod else {
            throw APIError.badRequest("waitingPeriodHours is at least \(lifecycle.shredWaitingPeriodHours) (lifecycle.shredWaitingPeriodHours) and at most 720")
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
            throw APIError(.conflict, code: "conflict", error.message)
        }
    }

    /// `SHRED_SCHEDULED → REVOKED`. One person: stopping a destruction is always allowed.
    public func cancelShred(tenantID: String, linkID: String) async throws -> L1Link {
        let link = try await registry.link(tenantID: tenantID, id: linkID)
        guard link.state == .shredScheduled else {
            if link.state == .shredded { throw Self.notLive(link) }
            throw APIError(.conflict, code: "shred_not_scheduled", "link \(linkID) is \(link.state.rawValue): no shred is scheduled")
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
                broadcaster.notify([result.event])
                dashboard.changed()
                shredded.append(result.link)
            } catch {
                logger.error("a scheduled shred failed; it is tried again", metadata: ["link": "\(link.id)", "error.type": "\(type(of: error))"])
            }
        }
        return shredded
    }

    /// Fences soon, once for every revocation in the next `fenceDelay`.
    func scheduleFence() {
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
    func fence() async -> Bool {
        for attempt in 0..<20 {
            if (try? await registry.fenceOverwrittenContent()) == true { return true }
            try? await Task.sleep(for: .milliseconds(50 * (attempt + 1)))
        }
        logger.warning("could not truncate the registry's write-ahead log; overwritten bindings may stay in it until the next checkpoint")
        return false
    }
}
