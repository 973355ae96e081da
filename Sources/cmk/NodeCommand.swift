import ArgumentParser
import Foundation
import Hummingbird
import Logging
import NodeAgent
import ServiceLifecycle

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
        var application = Application(
            router: NodeAPI(runtime: runtime).router(),
            // An application connection idle (or trickling a request) for 30 s is closed.
            server: .http1(configuration: .init(idleTimeout: .seconds(30))),
            configuration: .init(address: .hostname(host, port: port), serverName: "openkcm-node"),
            onServerRunning: { channel in
                announce.notice("node API listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? listen)",
                                                               "node": "\(runtime.nodeID)"])
            },
            logger: logger)
        application.addServices(runtime)
        try await application.runService()
    }
}
