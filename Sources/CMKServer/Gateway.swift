public import Audit
import CMKCore
import Crypto
import Foundation
import HTTPTypes
public import KSI
public import Logging
import Metrics
import NIOConcurrencyHelpers
public import Orbital
import PKCS11
public import Registry

/// The gateway's operations, between the HTTP routes and the lower layers: the handshake, the
/// re-probe, the kill-switch, keystore listings. Routes stay thin; this type holds the rules.
public final class Gateway: Sendable {
    /// A configured keystore: its id, what reaches it (an HSM profile, or a cloud KMS's
    /// settings), its token.
    public struct ConfiguredKeystore: Sendable {
        public let id: String
        public let provider: Provider
        /// The HSM profile's name, or where the cloud keystore is (region, project, vault).
        public let profileName: String
        public let token: any Token
        /// For PKCS#11 keystores: the profile, which fills in a key URI's token.
        public let profile: HSMProfile?

        public init(id: String, profile: HSMProfile, token: PKCS11Token) {
            (self.id, provider, profileName, self.token, self.profile) = (id, .pkcs11, profile.name, token, profile)
        }

        public init(id: String, description: String, token: any Token) {
            (self.id, provider, profileName, self.token, profile) = (id, token.provider, description, token, nil)
        }

        /// The PKCS#11 token behind a PKCS#11 keystore.
        public var pkcs11: PKCS11Token? { token as? PKCS11Token }

        /// Runs `body` on the keystore's PKCS#11 threads when it has them (the token and the
        /// registry are then called without a thread hand-off per step, see PKCS11Executor);
        /// a cloud keystore's calls are asynchronous I/O and need no such threads.
        func run<T: Sendable>(_ body: () async throws -> T) async throws -> T {
            if let pkcs11 { return try await withTaskExecutorPreference(pkcs11.executor) { try await body() } }
            return try await body()
        }
    }

    public let registry: Registry
    public let keystores: [String: ConfiguredKeystore]
    public let platform: PKCS11Token
    let pkcs11: PKCS11Keystore
    let logger: Logger
    /// Every request to an L1 key and every administrative action is recorded here.
    public let audit: AuditLog
    /// How long an unsealed L2 may be held by a node before it must renew (unseal again).
    public let leaseDuration: Duration
    /// Each node's latest heartbeat (in memory: it describes the present).
    let heartbeats = NIOLockedValueBox<[String: NodeHeartbeat]>([:])
    /// The way to the nodes: outbox events pushed on their streams, their acknowledgements.
    public let orbital: Orbital
    /// Enrolled nodes seen by this process (a node's keys never change), with when its
    /// `last_seen_at` was last written: written at most every `nodeTouchInterval`, not on
    /// every signed request.
    let knownNodes = NIOLockedValueBox<[String: (node: Node, touched: Date)]>([:])
    static let nodeTouchInterval: TimeInterval = 5
    /// Outstanding leases, by node and tenant; kept in the registry too (`LeaseRecorder`) and
    /// read back at start, so that a restart forgets no exposure.
    let leases = NIOLockedValueBox<[LeaseKey: Date]>([:])
    /// Lease changes, stored in batches (a lease that ended, or whose key was dropped, is
    /// forgotten without waiting: keeping it a little longer only makes the exposure bound cautious).
    let leaseRecorder: BatchWriter<LeaseChange, Void>
    /// Open portal dashboards, woken on changes.
    let dashboard = DashboardFeed()
    /// Approvals, the shred's waiting period.
    public let lifecycle: LifecycleSettings
    /// The IVK label prefix, for new IVK versions.
    let ivkLabelPrefix: String
    /// Whether a fence is scheduled (revocations within `fenceDelay` share one).
    let fencePending = NIOLockedValueBox(false)
    /// How long after a revocation its fence runs: after the nodes' acknowledgements, which the
    /// checkpoint's fsyncs would otherwise delay (D76).
    static let fenceDelay: Duration = .seconds(1)
    /// The gateway's signing key: applications' credentials for nodes, and its answers to nodes
    /// (unseal answers, events, stream heartbeats), each under its own statement type; nodes pin
    /// its public half at enrolment.
    let appCredentialKey: Curve25519.Signing.PrivateKey
    /// Wakes the rotation service when a job is started.
    let rotationWake = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))

    init(registry: Registry, keystores: [String: ConfiguredKeystore], platform: PKCS11Token, pkcs11: PKCS11Keystore,
         audit: AuditLog, leaseDuration: Duration = .seconds(30), streamHeartbeat: Duration = .seconds(15),
         lifecycle: LifecycleSettings = LifecycleSettings(), ivkLabelPrefix: String = "openkcm-ivk-",
         appCredentialKey: Curve25519.Signing.PrivateKey = .init(), logger: Logger) {
        self.appCredentialKey = appCredentialKey
        self.lifecycle = lifecycle
        self.ivkLabelPrefix = ivkLabelPrefix
        self.audit = audit
        self.orbital = Orbital(registry: registry, signer: appCredentialKey, heartbeat: streamHeartbeat)
        self.leaseDuration = leaseDuration
        self.registry = registry
        self.leaseRecorder = BatchWriter { [registry] changes in
            try await registry.applyLeases(changes)
            return changes.map { _ in () }
        }
        self.keystores = keystores
        self.platform = platform
        self.pkcs11 = pkcs11
        self.logger = logger
    }

    /// Opens the registry, loads every configured keystore's module, and makes sure an IVK
    /// version exists on the platform token.
    public static func start(_ configuration: ServerConfiguration, audit: AuditLog, pkcs11: PKCS11Keystore = PKCS11Keystore(),
                             logger: Logger) async throws -> Gateway {
        let registry = try Registry(path: configuration.database, blockingAllowed: { PKCS11Executor.isOnAnyExecutor })
        var keystores: [String: ConfiguredKeystore] = [:]
        for keystore in configuration.keystores {
            keystores[keystore.id] = try await keystore.open(pkcs11: pkcs11)
        }
        let platform = try await openPlatform(configuration, registry: registry, pkcs11: pkcs11, logger: logger)
        let gateway = Gateway(registry: registry, keystores: keystores, platform: platform, pkcs11: pkcs11, audit: audit,
                              leaseDuration: .seconds(configuration.leaseSeconds),
                              streamHeartbeat: .seconds(configuration.streamHeartbeatSeconds), lifecycle: configuration.lifecycle,
                              ivkLabelPrefix: configuration.platform.ivkLabelPrefix,
                              appCredentialKey: try loadAppCredentialKey(configuration.appCredentialKeyPath, logger: logger), logger: logger)
        let head = (try? await registry.latestEventSequence()) ?? 0
        gateway.orbital.start(at: head)
        for lease in try await registry.leases() {
            if let expiresAt = lease.expiresAt { gateway.leases.withLockedValue { $0[LeaseKey(node: lease.node, tenant: lease.tenant)] = expiresAt } }
        }
        try await gateway.recoverRevocationRecords()
        await gateway.drainHostActions()
        // A crash between a revocation (or a shred) and its fence leaves the overwritten pages
        // in the write-ahead log: fence at every start.
        await gateway.fence()
        return gateway
    }

    /// The platform token, with an IVK version made on it if the registry has none yet.
    static func openPlatform(_ configuration: ServerConfiguration, registry: Registry, pkcs11: PKCS11Keystore,
                             logger: Logger) async throws -> PKCS11Token {
        let platform = try await pkcs11.token(profile: try HSMProfile.load(from: configuration.platform.profile))
        if try await registry.currentIVK() == nil {
            let reference = try await platform.ensurePlatformKey(label: configuration.platform.ivkLabelPrefix + "1")
            let version = try await registry.addIVKVersion(keyReference: reference.description)
            logger.notice("created IVK version", metadata: ["ivk.version": "\(version.version)"])
        }
        return platform
    }

    /// For the command line (`cmk admin`): accounts and tokens on the registry and platform
    /// token of `configuration`, without the audit log, which belongs to the server process.
    public static func administration(_ configuration: ServerConfiguration, pkcs11: PKCS11Keystore,
                                      logger: Logger) async throws -> SessionManager {
        let registry = try Registry(path: configuration.database, blockingAllowed: { PKCS11Executor.isOnAnyExecutor })
        let platform = try await openPlatform(configuration, registry: registry, pkcs11: pkcs11, logger: logger)
        return SessionManager(registry: registry, platform: platform, audit: nil, settings: configuration.sessions, logger: logger)
    }

    /// Closes every session; finalises the modules unless other components of the process
    /// still use them (tests).
    public func shutdown(finalizingModules: Bool = true) async {
        await pkcs11.shutdown(finalizingModules: finalizingModules)
    }

    // MARK: Keystores

    func keystore(_ id: String) throws -> ConfiguredKeystore {
        guard let keystore = keystores[id] else {
            throw DomainError.notFound("no keystore \"\(id)\" is configured; GET /api/v1/keystores lists them")
        }
        return keystore
    }

    // MARK: Handshake

    public struct HandshakeRequest: Codable, Sendable {
        public var provider: String
        public var keystore: String
        public var key: String
    }

    /// The BYOK/HYOK handshake: probe the L1 key; on success record the link and make the
    /// tenant's L2, held only wrapped. On failure, record the attempt and nothing else.
    public func handshake(tenantID: String, _ request: HandshakeRequest, by context: AuditContext) async throws -> (L1Link, L2Key) {
        let keystore = try handshakeKeystore(request)
        return try await keystore.run { try await handshake(tenantID: tenantID, request, keystore: keystore, by: context) }
    }

    /// The handshake's probe alone, for the portal's wizard: the same checks in the same order
    /// and the same report, an audited L1 request, but nothing is linked or recorded as an
    /// attempt. A failed probe is a result (the report says why), not an error.
    public func validate(tenantID: String, _ request: HandshakeRequest, by context: AuditContext) async throws -> ProbeReport {
        let keystore = try handshakeKeystore(request)
        return try await keystore.run {
            let (l1, reference) = try await handshakeTarget(tenantID: tenantID, request, keystore: keystore)
            return try await l1Request("probe", l1, by: context) { await keystore.token.probe(reference) }
        }
    }

    private func handshakeKeystore(_ request: HandshakeRequest) throws -> ConfiguredKeystore {
        guard let provider = Provider(rawValue: request.provider) else {
            throw DomainError(.unsupportedProvider,
                           "provider \"\(request.provider)\" is not known; supported: \(Provider.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let keystore = try keystore(request.keystore)
        guard keystore.provider == provider else {
            throw DomainError(.unsupportedProvider,
                           "keystore \(keystore.id) is \(keystore.provider.displayName) (\(keystore.provider.rawValue)), not \(provider.rawValue)")
        }
        return keystore
    }

    /// What the handshake checks before it touches the token: the tenant exists, the key
    /// reference is acceptable, and the tenant has no active link.
    private func handshakeTarget(tenantID: String, _ request: HandshakeRequest,
                                 keystore: ConfiguredKeystore) async throws -> (L1Target, KeyReference) {
        _ = try await registry.tenant(tenantID)
        let reference = try Self.keyReference(request.key, keystore: keystore)
        // Refuse before touching the HSM: the registry enforces it again in its transaction.
        let links = try await registry.links(tenantID: tenantID, limit: 500, after: nil).items
        if links.contains(where: { $0.state == .linked || $0.state == .pendingValidation }) {
            throw DomainError(.conflict, "tenant \(tenantID) already has an active L1 link; revoke it first")
        }
        if let restorable = links.first(where: { $0.state.isRestorable }) {
            throw DomainError(.linkRestorable,
                           "tenant \(tenantID) has revoked link \(restorable.id), whose L2 (and the data under it) can be restored with L1: restore it (POST …/l1-links/\(restorable.id)/restore), or shred it before linking a new key")
        }
        return (L1Target(tenant: tenantID, keystore: keystore.id, key: reference), reference)
    }

    private func handshake(tenantID: String, _ request: HandshakeRequest, keystore: ConfiguredKeystore,
                           by context: AuditContext) async throws -> (L1Link, L2Key) {
        let (l1, reference) = try await handshakeTarget(tenantID: tenantID, request, keystore: keystore)
        let report = try await l1Request("probe", l1, by: context) { await keystore.token.probe(reference) }
        let reportJSON = Self.json(report)
        try await registry.recordAttempt(HandshakeAttempt(
            id: UUID().uuidString.lowercased(), tenantID: tenantID, provider: request.provider, keystoreID: keystore.id,
            keyReference: reference.description, passed: report.passed, failureCode: report.failure?.code.rawValue,
            failureReason: report.failure?.reason, at: Date()))
        guard report.passed else {
            throw DomainError(.probeFailed, "the handshake probe failed: \(report.failure?.reason ?? "unknown reason")",
                           details: report)
        }
        let l2 = try await makeL2(l1, on: keystore, by: context)
        return try await registry.createLink(tenantID: tenantID, provider: request.provider, keystoreID: keystore.id,
                                             keyReference: reference.description, probeReport: reportJSON, probedAt: Date(), l2: l2)
    }

    /// Accepts a reference to a key on the keystore, of the keystore's kind. A PKCS#11 URI may
    /// not name a module or a PIN (the keystore's profile provides them), so an API caller
    /// cannot make the server load a library or read a file of their choice; an Azure key URI
    /// must name the configured vault, so a caller cannot send the server's credentials
    /// elsewhere. Cloud endpoints always come from the configuration.
    static func keyReference(_ text: String, keystore: ConfiguredKeystore) throws -> KeyReference {
        guard text.count <= 2048 else { throw DomainError.invalidInput("the key reference is longer than 2048 characters") }
        let reference = try KeyReference(parsing: text)
        guard reference.provider == keystore.provider else {
            throw DomainError.invalidInput("keystore \(keystore.id) is \(keystore.provider.displayName): expected \(Self.referenceForm(keystore.provider)), not \(reference.provider.displayName)'s")
        }
        switch reference {
        case .pkcs11(var uri):
            if uri.modulePath != nil || uri.moduleName != nil || uri.pinSource != nil || uri.pinValue != nil {
                throw DomainError.invalidInput("the key reference may not name a module or a PIN: the keystore's profile provides them")
            }
            if uri.token == nil && uri.serial == nil { uri.token = keystore.profile?.token.label }
            if uri.serial == nil, uri.token == nil { uri.serial = keystore.profile?.token.serial }
            if uri.type == nil { uri.type = "secret-key" }
            return .pkcs11(uri)
        case .azureKeyVault(let key):
            if let vault = (keystore.token as? any VaultBound)?.vault, vault != key.vault {
                throw DomainError.invalidInput("the key URI names \(key.vault), but keystore \(keystore.id) is the vault \(vault)")
            }
            return reference
        case .awsKMS, .gcpKMS:
            return reference
        }
    }

    static func referenceForm(_ provider: Provider) -> String {
        switch provider {
        case .pkcs11: return "a PKCS#11 URI (pkcs11:object=…)"
        case .awsKMS: return "a key ARN, alias ARN, alias/<name> or key id"
        case .gcpKMS: return "a CryptoKey name (projects/…/cryptoKeys/…)"
        case .azureKeyVault: return "a key URI (https://<vault>/keys/<name>[/<version>])"
        }
    }

    /// The L2: made inside the token when the L1 key and the current IVK share it (the
    /// plaintext never leaves the token); otherwise generated on the L1 token, wrapped there,
    /// and carried to the platform token in wiped memory to be wrapped by the IVK. The sovereign
    /// binding is then sealed under the IVK (AES-GCM, bound to tenant and L2Ref).
    /// A cloud KMS makes the L2 itself and returns it only wrapped, bound to tenant and L2Ref
    /// (GenerateDataKeyWithoutPlaintext, or the provider's equivalent); the gateway then
    /// unwraps it once, with the same binding, to make the IVK-wrapped active binding.
    func makeL2(_ target: L1Target, on keystore: ConfiguredKeystore, by context: AuditContext) async throws -> NewL2 {
        let (tenantID, l1) = (target.tenant, target.key)
        guard let ivk = try await registry.currentIVK() else {
            throw DomainError(.notReady, "no IVK version exists yet")
        }
        let ivkReference = try KeyReference(parsing: ivk.keyReference)
        let l2Ref = UUID().uuidString.lowercased()
        let sovereign: WrappedKey
        let active: WrappedKey
        if let cloud = keystore.token as? any ContextBindingKeystore {
            let binding = BindingContext(tenant: tenantID, l2Ref: l2Ref)
            sovereign = try await l1Request("generate_l2", target, by: context) { try await cloud.generateWrappedKey(with: l1, context: binding) }
            let material = try await l1Request("unwrap", target, mechanism: sovereign.mechanism, by: context) {
                try await cloud.unwrap(sovereign, with: l1, context: binding)
            }
            active = try await measured("wrap") { try await platform.wrap(material, with: ivkReference) }
        } else if let token = keystore.pkcs11, token.configuration.modulePath == platform.configuration.modulePath, platform.holds(l1) {
            (sovereign, active) = try await l1Request("generate_l2", target, by: context) {
                try await platform.generateL2(wrappedBy: l1, and: ivkReference)
            }
        } else if let token = keystore.token as? any WrappedKeyGenerating {
            sovereign = try await l1Request("generate_l2", target, by: context) { try await token.generateWrappedKey(with: l1) }
            let material = try await l1Request("unwrap", target, mechanism: sovereign.mechanism, by: context) {
                try await token.unwrap(sovereign, with: l1)
            }
            active = try await measured("wrap") { try await platform.wrap(material, with: ivkReference) }
        } else {
            throw DomainError(.keystoreUnsupported, "keystore \(keystore.id) cannot make a wrapped key")
        }
        let sealed = try await measured("seal") {
            try await platform.seal(sovereign.blob, with: ivkReference, aad: Self.sovereignAAD(tenantID: tenantID, l2Ref: l2Ref))
        }
        return NewL2(id: l2Ref, sovereignBinding: Data(sealed), sovereignMechanism: sovereign.mechanism, sovereignIVKVersion: ivk.version,
                     activeBinding: Data(active.blob), activeMechanism: active.mechanism, activeIVKVersion: ivk.version)
    }

    /// Binds a sealed sovereign binding to its record: moved to another tenant or L2, it does not open.
    static func sovereignAAD(tenantID: String, l2Ref: String) -> [UInt8] {
        Array("openkcm/sovereign-binding/v1|\(tenantID)|\(l2Ref)".utf8)
    }

    /// The sovereign binding as L1 wrapped it: opens the seal with the IVK version that made it.
    public func sovereignBinding(of l2: L2Key) async throws -> WrappedKey {
        guard let sealed = l2.sovereignBinding, let mechanism = l2.sovereignMechanism, let ivkVersion = l2.sovereignIVKVersion else {
            throw DomainError(.linkShredded, "the L2 key \(l2.id) was shredded: its sovereign binding no longer exists")
        }
        let blob = try await platform.open(Array(sealed), with: try await ivkReference(version: ivkVersion),
                                           aad: Self.sovereignAAD(tenantID: l2.tenantID, l2Ref: l2.id))
        return WrappedKey(mechanism: mechanism, blob: blob)
    }

    /// The key of IVK version `version` on the platform token.
    func ivkReference(version: Int) async throws -> KeyReference {
        guard let found = try await registry.ivkVersions().first(where: { $0.version == version }) else {
            throw DomainError(.internal, "IVK version \(version) is missing")
        }
        return try KeyReference(parsing: found.keyReference)
    }

    // MARK: Re-probe and kill-switch

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

    func probe(_ link: L1Link, by context: AuditContext) async throws -> L1Link {
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

    // MARK: Helpers

    /// Times a keystore operation into the `cmk_keystore_operation*` metrics.
    func measured<T>(_ operation: String, _ body: () async throws -> T) async rethrows -> T {
        let start = ContinuousClock.now
        do {
            let result = try await body()
            record(operation, outcome: (result as? ProbeReport).map { $0.passed ? "ok" : "failed" } ?? "ok", since: start)
            return result
        } catch {
            record(operation, outcome: "error", since: start)
            throw error
        }
    }

    private func record(_ operation: String, outcome: String, since start: ContinuousClock.Instant) {
        Counter(label: "cmk_keystore_operations_total", dimensions: [("operation", operation), ("outcome", outcome)]).increment()
        Timer(label: "cmk_keystore_operation_duration_seconds", dimensions: [("operation", operation)])
            .recordNanoseconds((ContinuousClock.now - start).nanoseconds)
    }

    static func json<T: Encodable>(_ value: T) -> String {
        (try? JSONEncoder.api.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}
