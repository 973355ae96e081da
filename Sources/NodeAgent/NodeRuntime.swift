public import AsyncHTTPClient
import CMKCore
import Crypto
import Foundation
public import Logging
import NIOConcurrencyHelpers
import NIOCore
import NodeProtocol
public import Prometheus
public import ServiceLifecycle
public import TLSSupport

/// A running regional node: its identity, the keys it holds (`NodeKeyring`), and the loops
/// that keep them honest — the Orbital event stream (purge and signed acknowledgement on a
/// revocation, reconnecting with backoff and resuming after the last event handled), lease
/// renewal (keys dropped when a lease ends unrenewed: fail closed), and heartbeats.
public final class NodeRuntime: Service, Sendable {
    public struct Configuration: Sendable {
        public var gateway: String
        public var region: String
        public var dataDirectory: String
        /// Needed on first start only.
        public var enrolmentToken: String?
        public var heartbeatInterval: Duration = .seconds(5)
        /// A stream that shows nothing, not even a heartbeat, for this long is reconnected.
        public var streamIdleTimeout: Duration = .seconds(45)
        /// A tenant whose key was revoked is refused locally; the gateway is asked again at
        /// most this often (it may have been restored by a new handshake, with a new link).
        public var revokedRecheck: Duration = .seconds(10)
        public var maximumBackoff: Duration = .seconds(5)
        /// Replace the node's keys at start (a routine rotation; `cmk node --rekey`).
        public var rekey = false
        /// For an HTTPS gateway: the CA to trust and the node's client certificate (mTLS).
        public var gatewayTLS: ClientTLS?
        /// The node's `/metrics` registry (application refusals, TLS reloads).
        public var metrics = PrometheusCollectorRegistry()

        public init(gateway: String, region: String, dataDirectory: String, enrolmentToken: String? = nil) {
            self.gateway = gateway
            self.region = region
            self.dataDirectory = dataDirectory
            self.enrolmentToken = enrolmentToken
        }
    }

    /// What the node did, for embedding programs (the benchmark) and tests.
    public enum Activity: Sendable {
        case connected
        case disconnected(String)
        case acknowledged(event: String, tenant: String, keysDropped: Int)
        case leaseEnded([String])
    }

    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    struct State {
        var lastEvent: Int64
        var savedEvent: Int64
        var connected = false
        /// Dropped at a lease end, not yet reported to the gateway.
        var leaseDrops: [String] = []
        /// One heartbeat at a time, so that a drop is reported once.
        var heartbeating = false
        /// Signed acknowledgements not yet accepted, by event id: a retry resends the same statement.
        var unsentAcks: [String: (statement: String, signature: Data, tenant: String, dropped: Int)] = [:]
        var unsealing: [String: Task<Void, any Error>] = [:]
        var lastRecheck: [String: ContinuousClock.Instant] = [:]
        /// The gateway said this node is disabled or removed (logged once).
        var cutOff = false
        var activity: AsyncStream<Activity>.Continuation?
    }

    public let configuration: Configuration
    public let keyring: NodeKeyring
    /// Who may use the application API (credentials the gateway signed).
    public let applications: AppAuthenticator
    public let client: GatewayClient
    public let http: HTTPClient
    private let ownsHTTP: Bool
    private let state: NIOLockedValueBox<State>
    private let identity: NodeIdentity
    private let logger: Logger

    public var nodeID: String { keyring.nodeID }
    public var isConnected: Bool { state.withLockedValue { $0.connected } }
    public var region: String { configuration.region }

    /// Loads the identity in the data directory, enrolling with the gateway on first start.
    public static func start(_ configuration: Configuration, http: HTTPClient? = nil, logger: Logger) async throws -> NodeRuntime {
        var identity = try NodeIdentity.loadOrCreate(directory: configuration.dataDirectory)
        let client = http ?? HTTPClient(eventLoopGroupProvider: .singleton,
                                        configuration: .init(timeout: .init(connect: .seconds(2), read: nil)))
        do {
            if let id = identity.state.id {
                guard identity.state.region == configuration.region else {
                    throw Failure(description: "this data directory belongs to node \(id) of region \(identity.state.region ?? "?"), not \(configuration.region)")
                }
            } else {
                guard let token = configuration.enrolmentToken, !token.isEmpty else {
                    throw Failure(description: "this node is not enrolled yet: pass the enrolment token an administrator issued (--enrolment-token-file or CMK_NODE_ENROLMENT_TOKEN)")
                }
                let enrolment: GatewayClient.Enrolment
                do {
                    enrolment = try await GatewayClient.enrol(base: configuration.gateway, token: token, signingKey: identity.signingKey,
                                                              hpkeKey: identity.hpkeKey.publicKey, http: client,
                                                              tls: configuration.gatewayTLS)
                } catch let failure as GatewayClient.Failure {
                    throw Failure(description: "enrolment refused: \(failure)")
                }
                guard enrolment.region == configuration.region else {
                    throw Failure(description: "the enrolment token is for region \(enrolment.region), not \(configuration.region)")
                }
                try identity.update {
                    $0.id = enrolment.id
                    $0.region = enrolment.region
                    $0.gateway = configuration.gateway
                    $0.enrolledAt = enrolment.enrolledAt
                    $0.lastEvent = enrolment.eventSequence ?? 0
                    $0.gatewayKey = enrolment.gatewayKey
                }
                logger.notice("node enrolled", metadata: ["node": "\(enrolment.id)", "region": "\(enrolment.region)"])
            }
            identity = try await settleKeys(identity, configuration: configuration, http: client, logger: logger)
        } catch {
            if http == nil { try? await client.shutdown() }
            throw error
        }
        return NodeRuntime(configuration: configuration, identity: identity, http: client, ownsHTTP: http == nil, logger: logger)
    }

    /// Finishes a re-key a crash interrupted (the gateway has the pending keys if it no longer
    /// knows the current ones), then re-keys if asked. Returns the identity to run with.
    static func settleKeys(_ identity: NodeIdentity, configuration: Configuration, http: HTTPClient, logger: Logger) async throws -> NodeIdentity {
        guard let id = identity.state.id else { return identity }
        func client(_ identity: NodeIdentity) -> GatewayClient {
            GatewayClient(base: configuration.gateway, nodeID: id, signingKey: identity.signingKey, hpkeKey: identity.hpkeKey, http: http,
                          tls: configuration.gatewayTLS)
        }
        var identity = identity
        if identity.pendingKeys != nil {
            do {
                try await client(identity).heartbeat(keysHeld: 0, leaseDrops: [])
                identity.discardPendingKeys()   // the gateway never took them
            } catch let failure as GatewayClient.Failure where failure.status == 401 {
                try identity.adoptPendingKeys()
                identity = try NodeIdentity.loadOrCreate(directory: configuration.dataDirectory)
                logger.notice("finished a key replacement interrupted earlier")
            }
        }
        guard configuration.rekey else { return identity }
        let (signing, hpke) = try identity.preparePendingKeys()
        do {
            try await client(identity).rekey(to: signing, hpke: hpke)
        } catch let failure as GatewayClient.Failure where failure.status != nil {
            identity.discardPendingKeys()
            throw Failure(description: "the gateway refused the new keys: \(failure)")
        }
        try identity.adoptPendingKeys()
        logger.notice("node keys replaced", metadata: ["node": "\(id)"])
        return try NodeIdentity.loadOrCreate(directory: configuration.dataDirectory)
    }

    private init(configuration: Configuration, identity: NodeIdentity, http: HTTPClient, ownsHTTP: Bool, logger: Logger) {
        self.configuration = configuration
        applications = AppAuthenticator(metrics: configuration.metrics)
        let id = identity.state.id!
        keyring = NodeKeyring(nodeID: id, signingKey: identity.signingKey)
        client = GatewayClient(base: configuration.gateway, nodeID: id, signingKey: identity.signingKey, hpkeKey: identity.hpkeKey, http: http,
                               tls: configuration.gatewayTLS)
        if let pinned = identity.state.gatewayKey.flatMap({ Data(base64Encoded: $0) }).flatMap({ try? Curve25519.Signing.PublicKey(rawRepresentation: $0) }) {
            client.gatewayKey.withLockedValue { $0 = pinned }
        }
        self.http = http
        self.ownsHTTP = ownsHTTP
        self.identity = identity
        state = NIOLockedValueBox(State(lastEvent: identity.state.lastEvent, savedEvent: identity.state.lastEvent))
        var logger = logger
        logger[metadataKey: "node"] = "\(id)"
        self.logger = logger
    }

    /// A stream of what the node does from now on (one consumer).
    public func activity() -> AsyncStream<Activity> {
        let (stream, continuation) = AsyncStream<Activity>.makeStream()
        state.withLockedValue { $0.activity = continuation }
        return stream
    }

    private func report(_ activity: Activity) {
        _ = state.withLockedValue { $0.activity }?.yield(activity)
    }

    public var lastEvent: Int64 { state.withLockedValue { $0.lastEvent } }

    // MARK: Service

    public func run() async throws {
        logger.info("node running", metadata: ["gateway": "\(configuration.gateway)", "region": "\(configuration.region)"])
        await withDiscardingTaskGroup { group in
            group.addTask { await self.streamLoop() }
            group.addTask { await self.leaseLoop() }
            group.addTask { await self.heartbeatLoop() }
            try? await gracefulShutdown()
            group.cancelAll()
        }
        // Keys live in memory only; they go with the process, wiped as they are released.
        saveCursor()
        let dropped = keyring.dropAll()
        state.withLockedValue { $0.activity?.finish() }
        if ownsHTTP { try? await http.shutdown() }
        logger.info("node stopped", metadata: ["keysDropped": "\(dropped)"])
    }

    // MARK: Application keys

    /// Makes sure the tenant's key is held (unsealing it if needed) and runs `body` with the keyring.
    public func withKey<T>(tenant: String, _ body: (NodeKeyring) throws -> T) async throws -> T {
        do {
            return try body(keyring)
        } catch NodeKeyring.Failure.keyUnavailable {
            try await unseal(tenant: tenant)
        } catch let failure as NodeKeyring.Failure where failure == .keyRevoked(tenant: tenant) || failure == .keyShredScheduled(tenant: tenant) {
            // Not final: a restore (pushed as an event) or a new handshake brings the tenant back;
            // the gateway is asked again now and then in case the event was missed.
            let due = state.withLockedValue { state -> Bool in
                if let last = state.lastRecheck[tenant], ContinuousClock.now - last < configuration.revokedRecheck { return false }
                state.lastRecheck[tenant] = .now
                return true
            }
            guard due else { throw failure }
            try await unseal(tenant: tenant)
        }
        return try body(keyring)
    }

    /// Unseals the tenant's key (one request per tenant at a time, however many callers wait).
    func unseal(tenant: String) async throws {
        let task = state.withLockedValue { state -> Task<Void, any Error> in
            if let running = state.unsealing[tenant] { return running }
            let task = Task { try await self.fetch(tenant: tenant) }
            state.unsealing[tenant] = task
            return task
        }
        defer { state.withLockedValue { if $0.unsealing[tenant] == task { $0.unsealing[tenant] = nil } } }
        try await task.value
    }

    private func fetch(tenant: String) async throws {
        let asked = Date()
        let unsealed: GatewayClient.Unsealed
        do {
            unsealed = try await client.unseal(tenant: tenant)
        } catch let failure as GatewayClient.Failure {
            switch failure.gatewayCode {
            case .keyRevoked:
                keyring.markRevoked(tenant: tenant, .revoked)
                throw NodeKeyring.Failure.keyRevoked(tenant: tenant)
            case .keyShredScheduled:
                keyring.markRevoked(tenant: tenant, .shredScheduled)
                throw NodeKeyring.Failure.keyShredScheduled(tenant: tenant)
            case .keyShredded:
                keyring.markRevoked(tenant: tenant, .shredded)
                throw NodeKeyring.Failure.keyShredded(tenant: tenant)
            case .regionNotAllowed:
                keyring.drop(tenant: tenant)
                throw NodeKeyring.Failure.regionNotAllowed(tenant: tenant)
            case .nodeDisabled, .nodeRemoved:
                cutOffIfRefused(failure)
                throw NodeKeyring.Failure.keyUnavailable(tenant: tenant)
            case .notFound: throw NodeKeyring.Failure.unknownTenant(tenant: tenant)
            default:
                logger.warning("unseal failed", metadata: ["tenant": "\(tenant)", "error": "\(failure)"])
                throw NodeKeyring.Failure.keyUnavailable(tenant: tenant)
            }
        }
        // Counted from before the request went out, so no clock difference lengthens it.
        try keyring.install(tenant: tenant, l2Ref: unsealed.l2Ref, link: unsealed.link, epoch: unsealed.epoch, key: unsealed.key,
                            leaseExpiresAt: asked.addingTimeInterval(Double(unsealed.leaseSeconds)),
                            leaseSeconds: unsealed.leaseSeconds)
    }

    /// A node enrolled before the gateway's key was given at enrolment pins it at its first
    /// connection (trust on first use), and keeps it in `node.json`.
    func pinGatewayKeyIfNeeded() async throws {
        guard client.gatewayKey.withLockedValue({ $0 }) == nil else { return }
        let (key, _) = try await client.appCredentialState()
        var copy = identity
        try copy.update { $0.gatewayKey = key.rawRepresentation.base64EncodedString() }
        client.gatewayKey.withLockedValue { $0 = key }
        logger.notice("pinned the gateway's signing key (first connection)")
    }

    /// The gateway's app credential key and the revocations so far, at every connection (an
    /// event missed while disconnected is in the list).
    func refreshAppCredentials() async {
        do {
            let (key, revoked) = try await client.appCredentialState()
            guard let pinned = client.gatewayKey.withLockedValue({ $0 }), pinned.rawRepresentation == key.rawRepresentation else {
                logger.error("the gateway presents another signing key than the one pinned; applications stay refused")
                return
            }
            applications.setKey(pinned)
            applications.setRevoked(revoked)
        } catch {
            cutOffIfRefused(error)
            logger.warning("cannot read the application credential state; applications stay refused until it is read",
                           metadata: ["error": "\(error)"])
        }
    }

    /// The gateway disabled or removed this node: every key goes now (fail closed), however
    /// long its lease; the node keeps asking, and serves again once enabled.
    private func cutOffIfRefused(_ error: any Error) {
        guard let failure = error as? GatewayClient.Failure, [.nodeDisabled, .nodeRemoved].contains(failure.gatewayCode) else { return }
        let dropped = keyring.dropAll()
        if dropped > 0 || state.withLockedValue({ !$0.cutOff }) {
            logger.error("the gateway refuses this node; every key dropped", metadata: ["reason": "\(failure.code)", "keysDropped": "\(dropped)"])
        }
        state.withLockedValue { $0.cutOff = true }
    }

    // MARK: Loops

    private func streamLoop() async {
        var backoff = Duration.milliseconds(100)
        while !Task.isCancelled {
            do {
                try await pinGatewayKeyIfNeeded()
                try await client.stream(after: lastEvent, idleTimeout: configuration.streamIdleTimeout, onOpen: { [self] in
                    state.withLockedValue { $0.connected = true; $0.cutOff = false }
                    await refreshAppCredentials()
                    logger.info("event stream open", metadata: ["after": "\(lastEvent)"])
                    report(.connected)
                    await sendHeartbeat()
                }, handle: { [self] event in
                    try await handle(event)
                })
            } catch is CancellationError {
                break
            } catch {
                if Task.isCancelled { break }
                cutOffIfRefused(error)
                let wasConnected = state.withLockedValue { state in defer { state.connected = false }; return state.connected }
                if wasConnected {
                    logger.warning("event stream lost; reconnecting", metadata: ["error": "\(error)"])
                    report(.disconnected("\(error)"))
                    backoff = .milliseconds(100)
                } else {
                    logger.debug("gateway unreachable", metadata: ["error": "\(error)", "retryIn": "\(backoff)"])
                }
            }
            // Full jitter: nodes that lost the gateway together do not all return at once.
            let wait = Duration.milliseconds(Int64.random(in: 50...max(50, Int64(backoff.components.seconds * 1000 + backoff.components.attoseconds / 1_000_000_000_000_000))))
            do { try await Task.sleep(for: wait) } catch { break }
            backoff = min(backoff * 2, configuration.maximumBackoff)
        }
        state.withLockedValue { $0.connected = false }
    }

    /// One event: a revocation purges the link's keys and acknowledges with a signed statement;
    /// the event counts as handled (and the stream resumes after it) only once the gateway has
    /// the acknowledgement.
    func handle(_ event: GatewayClient.Event) async throws {
        switch event.type {
        case EventType.l1Restored.rawValue:
            if let link = event.link {
                keyring.restored(tenant: event.tenant, link: link, epoch: event.epoch)
                state.withLockedValue { _ = $0.lastRecheck.removeValue(forKey: event.tenant) }
                logger.notice("link restored: the tenant's key is served again", metadata: ["tenant": "\(event.tenant)", "link": "\(link)",
                                                                                           "epoch": "\(event.epoch)"])
            }
        case EventType.l2Shredded.rawValue:
            if let link = event.link {
                keyring.shredded(tenant: event.tenant, link: link)
                logger.notice("the tenant's key was shredded", metadata: ["tenant": "\(event.tenant)", "link": "\(link)"])
            }
        case EventType.credentialRevoked.rawValue:
            if let id = event.field("id"), let expires = event.field("expiresAt").flatMap(Int64.init) {
                applications.revoke(id: id, expiresAt: expires)
                logger.notice("an application credential was revoked", metadata: ["credential": "\(id)"])
            }
        case EventType.tenantRegions.rawValue:
            if let allowed = event.allowedRegions, !allowed.contains(configuration.region), keyring.drop(tenant: event.tenant) {
                logger.notice("key dropped: the tenant no longer allows this region", metadata: ["tenant": "\(event.tenant)"])
            }
        default:
            break
        }
        if event.type == EventType.l1Revoked.rawValue, let link = event.link {
            let pending = try state.withLockedValue { state in
                if let pending = state.unsentAcks[event.id] { return pending }
                let (statement, signature) = try keyring.purge(tenant: event.tenant, link: link, epoch: event.epoch, event: event.id)
                let dropped = NodeProtocol.parseAck(statement)?.keysDropped ?? 0
                state.unsentAcks[event.id] = (statement, signature, event.tenant, dropped)
                return (statement, signature, event.tenant, dropped)
            }
            if pending.dropped > 0 {
                logger.notice("keys purged for a revoked link", metadata: ["tenant": "\(event.tenant)", "link": "\(link)",
                                                                          "event": "\(event.id)", "keysDropped": "\(pending.dropped)"])
            }
            do {
                try await client.acknowledge(statement: pending.statement, signature: pending.signature)
            } catch let failure as GatewayClient.Failure where failure.status != nil && failure.status! < 500 {
                // Refused for good (not a transport problem): retrying the same statement cannot help.
                logger.error("acknowledgement refused", metadata: ["event": "\(event.id)", "error": "\(failure)"])
            }
            state.withLockedValue { _ = $0.unsentAcks.removeValue(forKey: event.id) }
            report(.acknowledged(event: event.id, tenant: event.tenant, keysDropped: pending.dropped))
        }
        // Saved by the lease loop within half a second, and at shutdown: not once per event.
        state.withLockedValue { $0.lastEvent = max($0.lastEvent, event.sequence) }
    }

    /// Writes the cursor if it moved.
    private func saveCursor() {
        let (current, saved) = state.withLockedValue { ($0.lastEvent, $0.savedEvent) }
        guard current != saved else { return }
        do {
            try identity.saveCursor(current)
            state.withLockedValue { $0.savedEvent = max($0.savedEvent, current) }
        } catch {
            logger.warning("cannot save the event cursor", metadata: ["error": "\(error)"])
        }
    }

    private func leaseLoop() async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: .milliseconds(500)) } catch { return }
            saveCursor()
            applications.prune()
            let ended = keyring.expireLeases()
            if !ended.isEmpty {
                logger.warning("keys dropped: their lease ended without renewal (fail closed)", metadata: ["tenants": "\(ended.joined(separator: ","))"])
                state.withLockedValue { $0.leaseDrops.append(contentsOf: ended) }
                report(.leaseEnded(ended))
            }
            // Renew a third of the lease before its end (at least two seconds).
            for tenant in keyring.leasesToRenew(minimumMargin: 2) {
                do {
                    try await unseal(tenant: tenant)
                } catch {
                    logger.debug("lease renewal failed", metadata: ["tenant": "\(tenant)", "error": "\(error)"])
                }
            }
        }
    }

    private func heartbeatLoop() async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: configuration.heartbeatInterval) } catch { return }
            await sendHeartbeat()
        }
    }

    private func sendHeartbeat() async {
        let claimed = state.withLockedValue { state -> [String]? in
            guard !state.heartbeating else { return nil }
            state.heartbeating = true
            return state.leaseDrops
        }
        guard let drops = claimed else { return }
        defer { state.withLockedValue { $0.heartbeating = false } }
        do {
            try await client.heartbeat(keysHeld: keyring.keysHeld, leaseDrops: drops)
            if !drops.isEmpty {
                state.withLockedValue { $0.leaseDrops.removeFirst(min(drops.count, $0.leaseDrops.count)) }
                logger.notice("reported keys dropped at lease end to the gateway", metadata: ["tenants": "\(drops.count)"])
            }
        } catch {
            cutOffIfRefused(error)
            logger.debug("heartbeat failed", metadata: ["error": "\(error)"])
        }
    }
}
