import Audit
import AuditFormat
import CMKCore
public import ControlPlane
import Foundation
public import Hummingbird
import HummingbirdCore
public import HummingbirdTLS
import KSI
import Logging
import Metrics
import NIOFoundationEssentialsCompat
import Orbital
import Prometheus
import Registry
import ServiceLifecycle
import Storage
public import TLSSupport

/// The process's Prometheus registry, bootstrapped into swift-metrics once.
enum MetricsBootstrap {
    static let registry: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return registry
    }()
}

/// Builds the router: health, readiness and metrics without authentication; everything under
/// `/api/v1` behind the authentication middleware.
public func buildRouter(gateway: Gateway, openAPI: ByteBuffer?,
                        sessions settings: SessionSettings = SessionSettings(),
                        assertions: IdentityAssertionVerifier? = nil, tls: ListenerTLS? = nil,
                        sessionManager: SessionManager? = nil) -> Router<CMKRequestContext> {
    let prometheus = MetricsBootstrap.registry
    let router = Router(context: CMKRequestContext.self)
    // Outside the error middleware, so that error answers carry it too.
    if tls != nil { router.add(middleware: StrictTransportSecurityMiddleware()) }
    router.add(middleware: ErrorMiddleware())
    router.add(middleware: MetricsMiddleware())
    router.get("healthz") { _, _ in
        Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: #"{"status":"ok"}"#)))
    }
    router.get("readyz") { _, _ -> Response in
        let reasons = await readinessProblems(gateway: gateway, tls: tls)
        let certificate = tls?.files.status
        struct Readiness: Encodable { var status: String; var reason: String?; var tls: CertificateFiles.Status? }
        let readiness = Readiness(status: reasons.isEmpty ? "ready" : "not_ready", reason: reasons.isEmpty ? nil : reasons.joined(separator: "; "),
                                  tls: certificate)
        let body = String(decoding: (try? JSONEncoder.api.encode(readiness)) ?? Data(#"{"status":"not_ready"}"#.utf8), as: UTF8.self)
        return Response(status: reasons.isEmpty ? .ok : .serviceUnavailable, headers: [.contentType: "application/json"],
                        body: .init(byteBuffer: ByteBuffer(string: body)))
    }
    router.get("metrics") { _, _ -> Response in
        var buffer: [UInt8] = []
        prometheus.emit(into: &buffer)
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: .init(byteBuffer: ByteBuffer(bytes: buffer)))
    }
    if let openAPI {
        router.get("openapi.yaml") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/yaml"], body: .init(byteBuffer: openAPI))
        }
    }
    let sessions = sessionManager ?? SessionManager(registry: gateway.registry, platform: gateway.platform, audit: gateway.audit,
                                                    settings: settings, logger: gateway.logger)
    let api = router.group("api/v1").add(middleware: AdminAuthenticationMiddleware(gateway: gateway, sessions: sessions,
                                                                                 assertions: assertions))
    SessionController(gateway: gateway, sessions: sessions).register(on: api)
    let portal = PortalController(gateway: gateway)
    portal.registerFiles(on: router)
    portal.registerFeed(on: api)
    ManagementController(gateway: gateway, idempotency: IdempotencyCache(registry: gateway.registry)).register(on: api)
    AuditController(audit: gateway.audit).register(on: api)
    LifecycleController(gateway: gateway).register(on: api)
    let nodes = NodeController(gateway: gateway)
    nodes.registerAdministrative(on: api)
    let open = router.group("node/v1"), signed = router.group("node/v1")
    if tls?.requireNodeClientCertificates == true {
        open.add(middleware: NodeClientCertificateMiddleware())
        signed.add(middleware: NodeClientCertificateMiddleware())
    }
    nodes.registerNode(open: open, signed: signed.add(middleware: NodeAuthenticationMiddleware(gateway: gateway, nonces: NonceCache(registry: gateway.registry))))
    return router
}

/// Why the gateway is not ready, if it is not (`/readyz`, and the gRPC health service): the
/// platform token answers, the audit log can record (nothing is done that cannot be),
/// checkpoints reach the configured witness directory, the certificate has not expired.
func readinessProblems(gateway: Gateway, tls: ListenerTLS?) async -> [String] {
    var reasons: [String] = []
    if await gateway.platform.status().state != .available { reasons.append("the platform token is not available") }
    if gateway.audit.store.failure != nil { reasons.append("the audit log cannot record; see the server log") }
    // On PostgreSQL the database can go away under a running replica: nothing can be made
    // durable then, so a load balancer should send requests elsewhere.
    if gateway.registry.isShared, !(await gateway.registry.isReachable()) {
        reasons.append("the registry database cannot be reached")
    }
    if let witness = gateway.audit.witnessProblem() { reasons.append(witness) }
    if let certificate = tls?.files.status, certificate.notAfter <= Date() {
        reasons.append("the TLS certificate in service expired at \(certificate.notAfter); renew \(certificate.certificate)")
    }
    return reasons
}

/// The listener's TLS: the certificate files in service and whether nodes must present a client
/// certificate (`tls.nodeClientCA`).
public struct ListenerTLS: Sendable {
    public let files: CertificateFiles
    public let configuration: TLSConfiguration
    public let requireNodeClientCertificates: Bool

    /// Reads the files; a problem is a `ConfigurationError` naming the file.
    public init(_ settings: TLSSettings) throws {
        do {
            files = try CertificateFiles(certificate: settings.certificate, key: settings.privateKey, metrics: MetricsBootstrap.registry, prefix: "cmk")
            let clientCA = try settings.nodeClientCA.map(ServerTLS.certificates(at:))
            configuration = ServerTLS.configuration(files, clientCertificates: clientCA.map { .optional(ca: $0) } ?? .none)
            requireNodeClientCertificates = clientCA != nil
        } catch let failure as CertificateFiles.Failure {
            throw ConfigurationError("tls: \(failure)")
        }
    }
}

/// Re-probes every linked key on a schedule; stops with the service group.
struct ProbeScheduler: Service {
    let gateway: Gateway
    let interval: Duration

    func run() async throws {
        // Cancelled at graceful shutdown: a sleep of `probeIntervalSeconds` must not hold it up.
        await cancelWhenGracefulShutdown {
            while !Task.isCancelledOrShuttingDown {
                do {
                    try await Task.sleep(for: interval)
                } catch {
                    return
                }
                if gateway.isLeading { await gateway.probeAllLinked() }
            }
        }
    }
}

/// Runs scheduled crypto-shreds when they fall due.
struct ShredService: Service {
    let gateway: Gateway
    let interval: Duration

    func run() async throws {
        await cancelWhenGracefulShutdown {
            if gateway.isLeading { await gateway.runDueShreds() }
            while !Task.isCancelledOrShuttingDown {
                do { try await Task.sleep(for: interval) } catch { return }
                if gateway.isLeading { await gateway.runDueShreds() }
            }
        }
    }
}

/// Records `cmk admin` actions taken on the host while the server runs (every 5 s).
struct HostActionService: Service {
    let gateway: Gateway

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelledOrShuttingDown {
                do { try await Task.sleep(for: .seconds(5)) } catch { return }
                if gateway.isLeading { await gateway.drainHostActions() }
                await gateway.orbital.announceForeignEvents()
            }
        }
    }
}

/// Runs rotation jobs: at start the ones a crash interrupted, then each new one.
struct RotationService: Service {
    let gateway: Gateway

    func run() async throws {
        await cancelWhenGracefulShutdown {
            if gateway.isLeading { await gateway.runRotations() }
            for await _ in gateway.rotationWake.stream where gateway.isLeading {
                await gateway.runRotations()
            }
        }
    }
}

/// What replicas sharing a PostgreSQL database need from each other: the leader lock (the
/// work one replica does at a time), and the changes the others announce (outbox events for
/// this replica's node streams, node changes, the portal's picture). Nothing to do on SQLite.
struct ClusterService: Service {
    let gateway: Gateway

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask {
                    for await leading in gateway.registry.leadership() {
                        let was = gateway.setLeading(leading)
                        if leading != was {
                            gateway.logger.notice(leading ? "this replica leads" : "this replica no longer leads")
                        }
                        // A new leader picks up what the last one left: rotations in progress.
                        if leading, !was { gateway.rotationWake.continuation.yield() }
                    }
                }
                if let changes = gateway.registry.changes() {
                    group.addTask {
                        for await (listening, change) in changes {
                            switch change {
                            case nil where listening, .outbox?: await gateway.orbital.announceForeignEvents()
                            case .node(let id)?: await gateway.nodeChangedElsewhere(id)
                            case .dashboard?: gateway.dashboard.changed()
                            case .rotation?: gateway.rotationWake.continuation.yield()
                            case nil: break
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Heartbeats on the nodes' event streams.
struct HeartbeatService: Service {
    let broadcaster: Dispatcher
    var dashboard: DashboardFeed?

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { await broadcaster.runHeartbeats() }
                if let dashboard {
                    group.addTask {
                        while !Task.isCancelled {
                            do { try await Task.sleep(for: broadcaster.heartbeat) } catch { return }
                            dashboard.broadcast(.heartbeat)
                        }
                    }
                }
            }
        }
    }
}

/// Signs checkpoints on a schedule, and a last one at shutdown so that every record written
/// is under a signature.
struct AuditCheckpointService: Service {
    let audit: AuditLog
    let interval: Duration

    func run() async throws {
        await cancelWhenGracefulShutdown { await audit.run(interval: interval) }
        _ = try? await audit.checkpoint()
    }
}

/// Opens the audit store and its signing key: on an HSM token when configured, else a key
/// file, made on first start (D41).
func openAuditLog(_ settings: ControlPlane.ServerConfiguration.AuditSettings,
                  password: PasswordSource = .environment(PasswordSource.defaultVariable),
                  pkcs11: PKCS11Keystore, logger: Logger) async throws -> AuditLog {
    let store = try await AuditStore.open(database: settings.database, password: password, origin: settings.origin,
                                          checkpointEvery: UInt64(settings.checkpointEvery))
    let signer: any CheckpointSigner
    if let hsm = settings.hsm {
        let token = try await pkcs11.token(profile: try HSMProfile.load(from: hsm.profile))
        signer = try await PKCS11CheckpointSigner(token: token, label: hsm.keyLabel, keyName: store.origin)
    } else {
        if !FileManager.default.fileExists(atPath: settings.signingKey) {
            _ = try Ed25519Keys.generate(path: settings.signingKey)
            logger.notice("made a new audit checkpoint signing key", metadata: ["path": "\(settings.signingKey)"])
        }
        signer = try Ed25519FileSigner(path: settings.signingKey, keyName: store.origin)
    }
    let audit = AuditLog(store: store, signer: signer, witnessDirectory: settings.witnessDirectory)
    if let problem = audit.witnessProblem() {
        // Reported, not fatal: the log itself is sound; `/readyz` says not ready until it is fixed.
        logger.error("audit witness copies will fail", metadata: ["reason": "\(problem)"])
    }
    logger.notice("audit log open", metadata: ["origin": "\(store.origin)", "records": "\(store.head.size)",
                                               "verifierKey": "\(audit.verifierKey)"])
    return audit
}

/// Closes the keystores' sessions and finalises their modules when the service group stops.
struct GatewayService: Service {
    let gateway: Gateway

    func run() async throws {
        try? await gracefulShutdown()
        await gateway.shutdown()
    }
}

extension Task where Success == Never, Failure == Never {
    static var isCancelledOrShuttingDown: Bool { Task.isCancelled || Task.isShuttingDownGracefully }
}

/// The whole server: configuration in, an application out, with the gateway, the prober and
/// graceful shutdown wired as services.
public func buildApplication(_ configuration: ControlPlane.ServerConfiguration, openAPIPath: String? = nil) async throws -> some ApplicationProtocol {
    var logger = Logger(label: "cmk")
    logger.logLevel = Logger.Level(rawValue: configuration.logLevel) ?? .info
    // Read first: a bad certificate stops the start before any keystore is opened.
    let tls = try configuration.tls.map(ListenerTLS.init)
    let pkcs11 = PKCS11Keystore()
    let audit = try await openAuditLog(configuration.audit, password: configuration.databasePassword, pkcs11: pkcs11, logger: logger)
    let gateway = try await Gateway.start(configuration, audit: audit, pkcs11: pkcs11, logger: logger)
    var assertions: IdentityAssertionVerifier?
    if let settings = configuration.sessions.identityAssertion { assertions = try await IdentityAssertionVerifier(settings) }
    let openAPI = (openAPIPath.flatMap { FileManager.default.contents(atPath: $0) }).map { ByteBuffer(data: $0) }
    var services: [any Service] = [GatewayService(gateway: gateway), HeartbeatService(broadcaster: gateway.orbital.dispatcher, dashboard: gateway.dashboard),
                                   AuditCheckpointService(audit: audit, interval: .seconds(configuration.audit.checkpointIntervalSeconds)),
                                   ShredService(gateway: gateway, interval: .seconds(configuration.lifecycle.shredCheckSeconds)),
                                   RotationService(gateway: gateway), HostActionService(gateway: gateway)]
    // A service that returns ends the group: only where there are other replicas to hear.
    if gateway.registry.isShared { services.append(ClusterService(gateway: gateway)) }
    if configuration.probeIntervalSeconds > 0 {
        services.append(ProbeScheduler(gateway: gateway, interval: .seconds(configuration.probeIntervalSeconds)))
    }
    // A connection that sends nothing (or trickles a request's head) is closed after the
    // idle timeout; responses being written, event streams among them, are not cut.
    let http1 = HTTP1Channel.Configuration(idleTimeout: .seconds(Int64(configuration.idleTimeoutSeconds)))
    let server: HTTPServerBuilder
    if let settings = configuration.tls, let listener = tls {
        server = try .tls(.http1(configuration: http1), tlsConfiguration: listener.configuration)
        services.append(CertificateReloader(files: [listener.files], interval: .seconds(settings.reloadIntervalSeconds), logger: logger))
        logger.notice("serving HTTPS", metadata: ["fingerprint": "\(listener.files.status.fingerprint)", "notAfter": "\(listener.files.status.notAfter)",
                                                 "nodeClientCertificates": "\(listener.requireNodeClientCertificates ? "required" : "not asked")"])
    } else {
        server = .http1(configuration: http1)
        if !ServerTLS.isLoopback(configuration.host) {
            logger.warning("serving plain HTTP on a non-loopback address: session cookies, codes and node traffic cross the network in clear, and browsers keep no Secure cookie off localhost; configure \"tls\"",
                           metadata: ["host": "\(configuration.host)"])
        }
    }
    // One session manager for both transports: sessions, step-up and lockout are the same.
    let sessions = SessionManager(registry: gateway.registry, platform: gateway.platform, audit: gateway.audit,
                                  settings: configuration.sessions, logger: gateway.logger)
    if let grpcPort = configuration.grpcPort {
        services.append(try GRPCManagementServer(host: configuration.host, port: grpcPort, tls: tls, gateway: gateway,
                                                 gate: AdminGate(gateway: gateway, sessions: sessions, assertions: assertions),
                                                 readiness: { await readinessProblems(gateway: gateway, tls: tls) }, logger: logger))
    }
    var application = Application(
        router: buildRouter(gateway: gateway, openAPI: openAPI, sessions: configuration.sessions,
                            assertions: assertions, tls: tls, sessionManager: sessions),
        server: server,
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "openkcm-cmk"),
        logger: logger)
    for service in services { application.addServices(service) }
    return application
}
