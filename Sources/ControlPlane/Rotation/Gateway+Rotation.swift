import Audit
import AuditFormat
import CMKCore
import Foundation
package import KSI
import Logging
public import Registry

/// Rotations that keep every L2 and re-wrap what protects it: L1 rotation (a tenant's sovereign
/// binding under a new L1 key, or a new version of a cloud key) and IVK rotation (active
/// bindings, sealed sovereign bindings and TOTP secrets under a new IVK version). Jobs walk
/// their records in id order, one commit per record with the job's cursor, so a crash resumes
/// where it stopped (`RotationService`).
extension Gateway {
    /// The new key of an L1 rotation, checked and probed before anything is re-wrapped.
    package struct RotationTarget {
        package var keystore: ConfiguredKeystore
        package var reference: KeyReference
    }

    /// Resolves and probes the new key (an audited L1 request on it). A PKCS#11 rotation must
    /// name another key; a cloud rotation may name the same key (its current version then
    /// re-wraps what older versions wrapped).
    package func rotationTarget(from link: (keystore: String, key: String), toKeystore: String?, toKey: String, tenant: String?,
                        by context: AuditContext) async throws -> RotationTarget {
        let keystore = try keystore(toKeystore ?? link.keystore)
        let old = try self.keystore(link.keystore)
        guard keystore.provider == old.provider else {
            throw DomainError.invalidInput("the new key must be on a keystore of the same kind (\(old.provider.rawValue)), not \(keystore.provider.rawValue)")
        }
        let reference = try Self.keyReference(toKey, keystore: keystore)
        if reference.description == link.key, keystore.id == link.keystore, keystore.provider == .pkcs11 {
            throw DomainError.invalidInput("the new L1 key is the current one; name another key (a PKCS#11 key has no versions)")
        }
        let report = try await keystore.run {
            try await l1Request("probe", L1Target(tenant: tenant ?? "", keystore: keystore.id, key: reference), by: context) {
                await keystore.token.probe(reference)
            }
        }
        guard report.passed else {
            throw DomainError(.probeFailed,
                           "the new L1 key did not pass its probe, so nothing was rotated: \(report.failure?.reason ?? "unknown reason")",
                           details: report)
        }
        return RotationTarget(keystore: keystore, reference: reference)
    }

    /// L1 rotation of one link, now: probe the new key, re-wrap, commit.
    public func rotateLink(tenantID: String, linkID: String, toKeystore: String?, toKey: String,
                           by context: AuditContext) async throws -> (L1Link, L2Key?) {
        let link = try await registry.link(tenantID: tenantID, id: linkID)
        guard link.state == .linked || link.state == .revoked else { throw Self.notLive(link) }
        let target = try await rotationTarget(from: (link.keystoreID, link.keyReference), toKeystore: toKeystore, toKey: toKey,
                                              tenant: tenantID, by: context)
        return try await rotate(link, to: target, job: nil, by: context)
    }

    /// One link's sovereign binding re-wrapped under the new key. Inside the token when both
    /// keys are on one PKCS#11 token; otherwise L2 passes in wiped memory, once.
    package func rotate(_ link: L1Link, to target: RotationTarget, job: String?, by context: AuditContext) async throws -> (L1Link, L2Key?) {
        guard let l2 = try await registry.l2Key(linkID: link.id), let l1Version = l2.sovereignL1Version else {
            throw DomainError(.conflict, "link \(link.id) has no sovereign binding to rotate")
        }
        let old = try keystore(link.keystoreID)
        let oldReference = try KeyReference(parsing: link.keyReference)
        let sovereign = try await sovereignBinding(of: l2)
        let oldTarget = L1Target(tenant: link.tenantID, keystore: old.id, key: oldReference, target: link.id)
        let newTarget = L1Target(tenant: link.tenantID, keystore: target.keystore.id, key: target.reference, target: link.id)
        let rewrapped: WrappedKey = try await mismatchExplained(link) {
            if let token = old.pkcs11, old.id == target.keystore.id {
                return try await old.run {
                    try await l1Request("rewrap", oldTarget, mechanism: sovereign.mechanism, by: context) {
                        try await token.rewrap(sovereign, from: oldReference, to: target.reference)
                    }
                }
            }
            let material = try await old.run {
                try await l1Request("unwrap", oldTarget, mechanism: sovereign.mechanism, by: context) {
                    try await unwrapSovereign(sovereign, l2: l2, keystore: old, key: oldReference)
                }
            }
            return try await target.keystore.run {
                try await l1Request("wrap", newTarget, by: context) {
                    if let cloud = target.keystore.token as? any ContextBindingKeystore {
                        return try await cloud.wrap(material, with: target.reference, context: BindingContext(tenant: l2.tenantID, l2Ref: l2.id))
                    }
                    return try await target.keystore.token.wrap(material, with: target.reference)
                }
            }
        }
        guard let ivk = try await registry.currentIVK() else { throw DomainError(.notReady, "no IVK version exists yet") }
        let sealed = try await measured("seal") {
            try await platform.seal(rewrapped.blob, with: try KeyReference(parsing: ivk.keyReference),
                                    aad: Self.sovereignAAD(tenantID: l2.tenantID, l2Ref: l2.id))
        }
        do {
            return try await registry.applyL1Rotation(jobID: job, linkID: link.id, expectedL1Version: l1Version, toKeystoreID: target.keystore.id,
                                                      toKey: target.reference.description, sealed: Data(sealed), mechanism: rewrapped.mechanism,
                                                      ivkVersion: ivk.version, at: Date())
        } catch let error as RegistryError where error.code == .conflict {
            throw DomainError(.conflict, error.message)
        }
    }

    /// Starts a job that rotates every linked or revoked link using `fromKey` on `keystoreID`.
    public func startL1Rotation(keystoreID: String, fromKey: String, toKeystore: String?, toKey: String, by principal: Principal,
                                context: AuditContext) async throws -> RotationJob {
        let keystore = try keystore(keystoreID)
        let from = try Self.keyReference(fromKey, keystore: keystore).description
        let target = try await rotationTarget(from: (keystoreID, from), toKeystore: toKeystore, toKey: toKey, tenant: nil, by: context)
        let job: RotationJob
        do {
            job = try await registry.createL1Rotation(keystoreID: keystoreID, fromKey: from, toKeystoreID: target.keystore.id,
                                                      toKey: target.reference.description, requestedBy: principal.name, at: Date())
        } catch let error as RegistryError where error.code == .conflict {
            throw DomainError(.rotationRunning, error.message)
        }
        guard job.total > 0 else {
            _ = try await registry.completeRotation(jobID: job.id, at: Date())
            throw DomainError.notFound("no linked or revoked link uses \(from) on keystore \(keystoreID)")
        }
        rotationWake.continuation.yield()
        await registry.announce(.rotation)
        return job
    }

    /// Makes the next IVK version on the platform token and starts the job that moves every
    /// binding and TOTP secret to it. New bindings use the new version at once.
    public func startIVKRotation(by principal: Principal) async throws -> RotationJob {
        guard let current = try await registry.currentIVK() else { throw DomainError(.notReady, "no IVK version exists yet") }
        if let running = try await registry.runningRotations().first(where: { $0.kind == .ivk }) {
            throw DomainError(.rotationRunning, "IVK rotation \(running.id) is still running")
        }
        let reference = try await platform.ensurePlatformKey(label: ivkLabelPrefix + String(current.version + 1))
        let next = try await registry.addIVKVersion(keyReference: reference.description)
        let job: RotationJob
        do {
            job = try await registry.createIVKRotation(fromVersion: current.version, toVersion: next.version, requestedBy: principal.name, at: Date())
        } catch let error as RegistryError where error.code == .conflict {
            throw DomainError(.rotationRunning, error.message)
        }
        logger.notice("IVK rotation started", metadata: ["from": "\(current.version)", "to": "\(next.version)", "job": "\(job.id)"])
        rotationWake.continuation.yield()
        await registry.announce(.rotation)
        return job
    }

    /// Runs every running job to its end (at start: the ones a crash interrupted).
    package func runRotations() async {
        guard let jobs = try? await registry.runningRotations() else { return }
        for job in jobs {
            do {
                switch job.kind {
                case .l1: try await runL1Rotation(job)
                case .ivk: try await runIVKRotation(job)
                }
            } catch {
                logger.error("rotation stopped; it resumes at the next start or job", metadata: ["job": "\(job.id)", "error.type": "\(type(of: error))"])
            }
        }
    }

    package static let rotationContext = AuditContext(actor: AuditActor(kind: .system, id: "rotation", authMethod: "internal"))

    package func runL1Rotation(_ started: RotationJob) async throws {
        guard let toKeystore = started.toKeystoreID, let toKey = started.toKey, let keystore = keystores[toKeystore] else {
            throw DomainError(.conflict, "rotation \(started.id) names a keystore that is not configured")
        }
        let target = RotationTarget(keystore: keystore, reference: try KeyReference(parsing: toKey))
        var job = started
        var handled = 0
        while true {
            try auditReady()
            let items = try await registry.nextL1RotationItems(job, limit: 50)
            if items.isEmpty { break }
            for item in items {
                do {
                    _ = try await rotate(item.link, to: target, job: job.id, by: Self.rotationContext)
                } catch let error as AuditError {
                    throw error
                } catch {
                    let translated = DomainError.from(error)
                    try await registry.recordRotationFailure(jobID: job.id, item: item.link.id, code: translated?.code.rawValue ?? ErrorCode.internal.rawValue,
                                                             reason: translated?.message ?? "unexpected error", at: Date())
                }
                handled += 1
                #if DEBUG
                // A failpoint for the crash test (debug builds only): die in the middle of a job.
                if let text = ProcessInfo.processInfo.environment["CMK_FAILPOINT"], text.hasPrefix("rotation-crash-after-"),
                   Int(text.dropFirst("rotation-crash-after-".count)) == handled {
                    kill(getpid(), SIGKILL)
                }
                #endif
            }
            job = try await registry.rotationJob(job.id)
        }
        try await finish(job)
    }

    package func runIVKRotation(_ started: RotationJob) async throws {
        guard let to = started.toIVKVersion else { return }
        let toReference = try await ivkReference(version: to)
        var job = started
        while job.phase == "l2" {
            try auditReady()
            let items = try await registry.nextIVKRotationL2(job, limit: 50)
            if items.isEmpty { try await registry.advanceIVKRotation(jobID: job.id, to: "accounts", at: Date()); break }
            for l2 in items {
                var sovereign: (sealed: Data, fromVersion: Int)?
                if let sealedVersion = l2.sovereignIVKVersion, sealedVersion != to {
                    let opened = try await sovereignBinding(of: l2)
                    let resealed = try await platform.seal(opened.blob, with: toReference, aad: Self.sovereignAAD(tenantID: l2.tenantID, l2Ref: l2.id))
                    sovereign = (Data(resealed), sealedVersion)
                }
                var active: (binding: Data, mechanism: String, fromVersion: Int)?
                if l2.state == .active, let binding = l2.activeBinding, let mechanism = l2.activeMechanism, let version = l2.activeIVKVersion, version != to {
                    // Both IVK versions live on the platform token: the L2 never leaves it.
                    let rewrapped = try await platform.rewrap(WrappedKey(mechanism: mechanism, blob: Array(binding)),
                                                              from: try await ivkReference(version: version), to: toReference)
                    active = (Data(rewrapped.blob), rewrapped.mechanism, version)
                }
                try await registry.applyIVKRotation(jobID: job.id, IVKRewrap(l2ID: l2.id, sovereign: sovereign, active: active), at: Date())
            }
            job = try await registry.rotationJob(job.id)
        }
        job = try await registry.rotationJob(job.id)
        while true {
            let accounts = try await registry.nextIVKRotationAccounts(job, limit: 50)
            if accounts.isEmpty { break }
            for account in accounts {
                let aad = SessionManager.totpAAD(account.username)
                var secret = try await platform.open(Array(account.totpSealed), with: try await ivkReference(version: account.totpIVKVersion), aad: aad)
                defer { secret.withUnsafeMutableBytes { _ = memset($0.baseAddress!, 0, $0.count) } }
                let resealed = try await platform.seal(secret, with: toReference, aad: aad)
                try await registry.applyIVKRotation(jobID: job.id, accountID: account.id, sealed: Data(resealed),
                                                    fromVersion: account.totpIVKVersion, at: Date())
            }
            job = try await registry.rotationJob(job.id)
        }
        try await finish(job)
    }

    private func finish(_ job: RotationJob) async throws {
        let done = try await registry.completeRotation(jobID: job.id, at: Date())
        var details = ["kind": done.kind.rawValue, "done": String(done.done), "failed": String(done.failed), "total": String(done.total)]
        if let from = done.fromIVKVersion, let to = done.toIVKVersion {
            details["from"] = String(from)
            details["to"] = String(to)
            details["stillUsingOld"] = String(try await registry.recordsUsingIVK(from))
        }
        _ = try await audit.append(AuditRecord(actor: Self.rotationContext.actor, operation: "rotation.complete",
                                               outcome: done.failed == 0 ? .success : .failure, keystore: done.keystoreID,
                                               keyReference: done.toKey, target: done.id, details: details))
        logger.notice("rotation finished", metadata: ["job": "\(done.id)", "done": "\(done.done)", "failed": "\(done.failed)"])
        dashboard.changed()
    }
}
