

public import Audit
import AuditFormat
import CMKCore
package import Crypto
package import Foundation
public import KSI
public import Logging
import Metrics
package import NIOConcurrencyHelpers
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
        package func run<T: Sendable>(_ body: () async throws -> T) async throws -> T {
            if let pkcs11 { return try await withTaskExecutorPreference(pkcs11.executor) { try await body() } }
            return try await body()
        }
    }

    public let registry: Registry
    public let keystores: [String: ConfiguredKeystore]
    public let platform: PKCS11Token
    package let pkcs11: PKCS11Keystore
    package let logger: Logger
    /// Every request to an L1 key and every administrative action is recorded here.
    public let audit: AuditLog
    /// How long an unsealed L2 may be held by a node before it must renew (unseal again).
    public let leaseDuration: Duration
    /// Each node's latest heartbeat (in memory: it describes the present).
    package let heartbeats = NIOLockedValueBox<[String: NodeHeartbeat]>([:])
    /// The way to the nodes: outbox events pushed on their streams, their acknowledgements.
    public let orbital: Orbital
    /// Enrolled nodes seen by this process (a node's keys never change), with when its
    /// `last_seen_at` was last written: written at most every `nodeTouchInterval`, not on
    /// every signed request.
    package let knownNodes = NIOLockedValueBox<[String: (node: Node, touched: Date)]>([:])
    package static let nodeTouchInterval: TimeInterval = 5
    /// Outstanding leases: the exposure bound after a revocation.
    package let leases: LeaseBook
    /// Open portal dashboards, woken on changes.
    package let dashboard = DashboardFeed()
    /// Approvals, the shred's waiting period.
    public let lifecycle: LifecycleSettings
    /// The IVK label prefix, for new IVK versions.
    package let ivkLabelPrefix: String
    /// Whether a fence is scheduled (revocations within `fenceDelay` share one).
    package let fencePending = NIOLockedValueBox(false)
    /// How long after a revocation its fence runs: after the nodes' acknowledgements, which the
    /// checkpoint's fsyncs would otherwise delay (D76).
    package static let fenceDelay: Duration = .seconds(1)
    /// The gateway's signing key: applications' credentials for nodes, and its answers to nodes
    /// (unseal answers, events, stream heartbeats), each under its own statement type; nodes pin
    /// its public half at enrolment.
    package let appCredentialKey: Curve25519.Signing.PrivateKey
    /// Wakes the rotation service when a job is started.
    package let rotationWake = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    /// Whether this replica runs the work one replica should do at a time (scheduled probes,
    /// shreds, rotations, recording host actions): always on SQLite; on PostgreSQL, the holder of
    /// the leader lock (`ClusterService`).
    package let leading: NIOLockedValueBox<Bool>
    public var isLeading: Bool { leading.withLockedValue { $0 } }
    /// Records whether this replica leads; returns whether it did.
    package func setLeading(_ now: Bool) -> Bool { leading.withLockedValue { previous in defer { previous = now }; return previous } }

    package init(registry: Registry, keystores: [String: ConfiguredKeystore], platform: PKCS11Token, pkcs11: PKCS11Keystore,
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
        self.leading = NIOLockedValueBox(!registry.isShared)
        self.leases = LeaseBook(registry: registry)
        self.keystores = keystores
        self.platform = platform
        self.pkcs11 = pkcs11
        self.logger = logger
    }

    /// Opens the registry, loads every configured keystore's module, and makes sure an IVK
    /// version exists on the platform token.
    public static func start(_ configuration: ServerConfiguration, audit: AuditLog, pkcs11: PKCS11Keystore = PKCS11Keystore(),
                             logger: Logger) async throws -> Gateway {
        let registry = try await configuration.openRegistry(blockingAllowed: { PKCS11Executor.isOnAnyExecutor })
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
        gateway.leases.load(try await registry.leases())
        try await gateway.recoverRevocationRecords()
        await gateway.drainHostActions()
        // A crash between a revocation (or a shred) and its fence leaves the overwritten pages
        // in the write-ahead log: fence at every start.
        await gateway.fence()
        return gateway
    }

    /// The platform token, with an IVK version made on it if the registry has none yet.
    package static func openPlatform(_ configuration: ServerConfiguration, registry: Registry, pkcs11: PKCS11Keystore,
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
        let registry = try await configuration.openRegistry(blockingAllowed: { PKCS11Executor.isOnAnyExecutor })
        let platform = try await openPlatform(configuration, registry: registry, pkcs11: pkcs11, logger: logger)
        return SessionManager(registry: registry, platform: platform, audit: nil, settings: configuration.sessions, logger: logger)
    }

    /// Closes every session; finalises the modules unless other components of the process
    /// still use them (tests).
    public func shutdown(finalizingModules: Bool = true) async {
        await pkcs11.shutdown(finalizingModules: finalizingModules)
    }

    // MARK: Keystores

    package func keystore(_ id: String) throws -> ConfiguredKeystore {
        guard let keystore = keystores[id] else {
            throw DomainError.notFound("no keystore \"\(id)\" is configured; GET /api/v1/keystores lists them")
        }
        return keystore
    }

    // MARK: Helpers

    /// Times a keystore operation into the `cmk_keystore_operation*` metrics.
    package func measured<T>(_ operation: String, _ body: () async throws -> T) async rethrows -> T {
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

    package static func json<T: Encodable>(_ value: T) -> String {
        (try? JSONEncoder.api.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}
