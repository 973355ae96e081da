import ArgumentParser
import Foundation
import Hummingbird
import Logging
import NodeAgent
import HummingbirdCore
import HummingbirdTLS
import ServiceLifecycle
import TLSSupport

struct NodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node",
        abstract: "Run a regional node: holds tenants' L2 keys in memory under leases, encrypts and decrypts for local applications, and purges on a kill-switch with a signed acknowledgement.",
        discussion: """
        On first start the node makes its identity keys in --data-dir and enrols with the gateway \
        using a one-time token that an administrator issued (POST /api/v1/nodes/enrolments): \
        pass it with --enrolment-token-file or CMK_NODE_ENROLMENT_TOKEN. Later starts reuse the \
        identity. The application API listens on --listen (127.0.0.1:8090 by default). Stops \
        gracefully on SIGTERM or SIGINT.

        TLS: an https:// gateway is verified against --gateway-ca (else the system's roots); \
        --client-certificate and --client-key present a client certificate to a gateway that \
        requires one (mTLS). A plain http:// gateway is refused unless it is on this machine \
        (127.0.0.0/8, ::1, localhost) or --allow-plain-http is given. --tls-certificate and \
        --tls-key serve the application API over HTTPS. Certificate files are read again every \
        --tls-reload-seconds and on SIGHUP; a renewed pair is used from the next connection.
        """)

    @Option(name: .long, help: "The gateway's base URL, e.g. http://127.0.0.1:8080.")
    var gateway: String

    @Option(name: .long, help: "The node's region; must match its enrolment token.")
    var region: String

    @Option(name: .customLong("data-dir"), help: "Where the node keeps its identity (made on first start, mode 0700).")
    var dataDirectory: String

    @Option(name: .customLong("enrolment-token-file"), help: "A file holding the one-time enrolment token (first start only).")
    var enrolmentTokenFile: String?

    @Option(name: .long, help: "Address of the application API (host:port).")
    var listen: String = "127.0.0.1:8090"

    @Option(name: .customLong("gateway-ca"), help: "PEM CA bundle the gateway's certificate must chain to (default: the system's roots).")
    var gatewayCA: String?

    @Option(name: .customLong("client-certificate"), help: "PEM certificate chain presented to the gateway (mTLS).")
    var clientCertificate: String?

    @Option(name: .customLong("client-key"), help: "PEM private key of --client-certificate.")
    var clientKey: String?

    @Flag(name: .customLong("allow-plain-http"), help: "Allow an http:// gateway off this machine (its answers are signed, but tokens and metadata travel in clear).")
    var allowPlainHTTP = false

    @Option(name: .customLong("tls-certificate"), help: "PEM certificate chain of the application API (HTTPS).")
    var tlsCertificate: String?

    @Option(name: .customLong("tls-key"), help: "PEM private key of --tls-certificate.")
    var tlsKey: String?

    @Option(name: .customLong("tls-reload-seconds"), help: "How often certificate files are read again (1-86400; SIGHUP: at once).")
    var tlsReloadSeconds: Int = 30

    @Flag(name: .long, help: "Replace the node's identity keys at start (a routine rotation; the gateway must accept them).")
    var rekey = false

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    func run() async throws {
        var logger = Logger(label: "cmk-node")
        guard let level = Logger.Level(rawValue: logLevel) else { fail("unknown log level \(logLevel)") }
        logger.logLevel = level
        guard let url = URL(string: gateway), ["http", "https"].contains(url.scheme ?? ""), url.host != nil else {
            fail("--gateway must be an http(s) URL, not \(gateway)")
        }
        let secure = url.scheme == "https"
        if !secure {
            guard ServerTLS.isLoopback(url.host ?? "") || allowPlainHTTP else {
                fail("--gateway \(gateway) is plain HTTP off this machine: use https:// (with --gateway-ca if its CA is private), or pass --allow-plain-http to accept it")
            }
            guard gatewayCA == nil, clientCertificate == nil, clientKey == nil else {
                fail("--gateway-ca, --client-certificate and --client-key apply to an https:// gateway, and --gateway is \(gateway)")
            }
        }
        guard (tlsCertificate == nil) == (tlsKey == nil) else { fail("--tls-certificate and --tls-key go together") }
        guard (1...86_400).contains(tlsReloadSeconds) else { fail("--tls-reload-seconds must be between 1 and 86400") }
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (0...65_535).contains(port) else {
            fail("--listen must be host:port, not \(listen)")
        }
        var token = ProcessInfo.processInfo.environment["CMK_NODE_ENROLMENT_TOKEN"]
        if let file = enrolmentTokenFile {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { fail("cannot read \(file)") }
            token = text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        var configuration = NodeRuntime.Configuration(gateway: gateway, region: region, dataDirectory: dataDirectory, enrolmentToken: token)
        configuration.rekey = rekey
        var certificateFiles: [CertificateFiles] = []
        var listenerTLS: CertificateFiles?
        do {
            if secure {
                let client = try ClientTLS(trustRoots: gatewayCA, certificate: clientCertificate, key: clientKey,
                                           metrics: configuration.metrics, prefix: "cmk_node_gateway_client")
                configuration.gatewayTLS = client
                if let identity = client.identity { certificateFiles.append(identity) }
            }
            if let tlsCertificate, let tlsKey {
                let files = try CertificateFiles(certificate: tlsCertificate, key: tlsKey, metrics: configuration.metrics, prefix: "cmk_node")
                listenerTLS = files
                certificateFiles.append(files)
            }
        } catch let failure as CertificateFiles.Failure {
            fail(failure.description)
        }
        if let seconds = ProcessInfo.processInfo.environment["CMK_NODE_HEARTBEAT_SECONDS"].flatMap(Double.init), seconds > 0 {
            configuration.heartbeatInterval = .milliseconds(Int64(seconds * 1000))
        }
        let runtime: NodeRuntime
        do {
            runtime = try await NodeRuntime.start(configuration, logger: logger)
        } catch let failure as NodeRuntime.Failure {
            fail(failure.description, status: .refused)
        } catch let failure as NodeIdentity.Failure {
            fail(failure.description)
        }
        let host = String(listen[..<colon]), announce = logger
        // An application connection idle (or trickling a request) for 30 s is closed.
        let http1 = HTTP1Channel.Configuration(idleTimeout: .seconds(30))
        let server: HTTPServerBuilder
        if let listenerTLS {
            server = try .tls(.http1(configuration: http1), tlsConfiguration: ServerTLS.configuration(listenerTLS))
        } else {
            server = .http1(configuration: http1)
            if !ServerTLS.isLoopback(host) {
                logger.warning("the application API is plain HTTP on a non-loopback address: credentials and data cross the network in clear; pass --tls-certificate and --tls-key",
                               metadata: ["listen": "\(listen)"])
            }
        }
        var application = Application(
            router: NodeAPI(runtime: runtime, listenerTLS: listenerTLS).router(),
            server: server,
            configuration: .init(address: .hostname(host, port: port), serverName: "openkcm-node"),
            onServerRunning: { channel in
                announce.notice("node API listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? listen)",
                                                               "node": "\(runtime.nodeID)"])
            },
            logger: logger)
        application.addServices(runtime)
        if !certificateFiles.isEmpty {
            application.addServices(CertificateReloader(files: certificateFiles, interval: .seconds(tlsReloadSeconds), logger: logger))
        }
        try await application.runService()
    }
}
