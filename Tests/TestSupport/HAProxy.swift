public import Foundation

/// haproxy in front of the `cmk serve` replicas a test starts: HTTP on a free port on
/// 127.0.0.1, round robin over the backends, each checked with `GET /readyz` every 200 ms
/// (down after 2 failures, up again after 1 success). Runs in the foreground (`-db`), its
/// output in `logPath`; stopped when the test process exits.
///
/// Retries: haproxy retries only connection failures (`retry-on conn-failure`, its default,
/// written out), once, on another server (`option redispatch`). A request that reached a
/// server is never sent again, whatever became of it (a reset, a timeout, a 5xx): not all of
/// the product's POSTs are idempotent, and a replica that dies mid-request may have done the
/// work. What the client sees then (a 502 or 504) is what a test of failover is about.
public final class HAProxy: @unchecked Sendable {
    /// How haproxy checks the backends and talks to them.
    public struct Options: Sendable {
        /// The health check's path (`option httpchk GET <path>`, expecting 200).
        public var healthCheckPath: String
        /// The backends speak TLS (HTTPS); health checks do too.
        public var backendTLS: Bool
        /// With `backendTLS`: verify the backends' certificates against this CA (PEM); nil:
        /// `verify none` (a test bed on loopback).
        public var tlsCAFile: String?
        /// Inactivity allowed on either side of a request or response: `timeout client` and
        /// `timeout server`. A server-sent event stream is an HTTP response, not a tunnel, so
        /// it is cut after this much silence; the product's streams send keep-alives well
        /// within it. `timeout tunnel` (1 h) covers upgraded connections.
        public var inactivityTimeout: String
        /// Check interval, failures before down, successes before up.
        public var checkInterval: String
        public var fall: Int
        public var rise: Int

        public init(healthCheckPath: String = "/readyz", backendTLS: Bool = false, tlsCAFile: String? = nil,
                    inactivityTimeout: String = "60s", checkInterval: String = "200ms", fall: Int = 2, rise: Int = 1) {
            self.healthCheckPath = healthCheckPath
            self.backendTLS = backendTLS
            self.tlsCAFile = tlsCAFile
            self.inactivityTimeout = inactivityTimeout
            self.checkInterval = checkInterval
            self.fall = fall
            self.rise = rise
        }
    }

    public let port: Int
    /// The backends' ports, in the order given; server `i` is named `replica<i+1>` in the log.
    public let backends: [Int]
    public let options: Options
    public let directory: String
    public let configPath: String
    public let logPath: String
    public let process: Process
    public var base: String { "http://127.0.0.1:\(port)" }

    private static let running = NSLock()
    nonisolated(unsafe) private static var all: [Process] = []

    /// Writes the configuration and starts haproxy on a free port (again on another one if its
    /// bind loses the port: `LoopbackPort.start`), returning once it listens. The backends need
    /// not be up yet: until their checks pass haproxy answers 503.
    public init(backends: [Int], options: Options = Options(), directory: String? = nil) throws {
        guard !backends.isEmpty else { throw SoftHSMFixture.FixtureError(message: "haproxy needs at least one backend") }
        let base = directory ?? URL(fileURLWithPath: NSTemporaryDirectory())
            .appendingPathComponent("openkcm-haproxy-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        self.backends = backends
        self.options = options
        self.directory = base
        let configPath = "\(base)/haproxy.cfg"
        let logPath = "\(base)/haproxy.log"
        self.configPath = configPath
        self.logPath = logPath
        let executable = try Self.findExecutable()
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        var started: Process?
        let (port, outcome) = try LoopbackPort.start("haproxy", logPath: logPath) { port in
            try Data(Self.configuration(port: port, backends: backends, options: options).utf8).write(to: URL(fileURLWithPath: configPath))
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = ["-f", configPath, "-db"]
            let handle = FileHandle(forWritingAtPath: logPath)
            try handle?.seekToEnd()
            process.standardOutput = handle
            process.standardError = handle
            process.standardInput = FileHandle.nullDevice
            try process.run()
            Self.running.withLock {
                if Self.all.isEmpty { atexit { HAProxy.stopAll() } }
                Self.all.append(process)
            }
            started = process
            return process
        }
        self.port = port
        process = started!
        guard outcome == .listening else {
            stop()
            let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            throw SoftHSMFixture.FixtureError(message: "haproxy did not start on port \(port) (\(outcome)); see \(logPath):\n\(log)")
        }
    }

    /// The configuration for a frontend on `port` in front of `backends`.
    public static func configuration(port: Int, backends: [Int], options: Options = Options()) -> String {
        var tls = ""
        if options.backendTLS {
            tls = options.tlsCAFile.map { " ssl verify required ca-file \($0)" } ?? " ssl verify none"
        }
        let servers = backends.enumerated().map { index, backend in
            "    server replica\(index + 1) 127.0.0.1:\(backend) check\(tls)"
        }
        return """
            # Written by Tests/TestSupport/HAProxy.swift.
            # No log target: in the foreground (-db) haproxy prints its warnings (a server
            # going down or up, and why) and alerts to stderr, which is the log file.
            global
                maxconn 1024

            defaults
                mode http
                timeout connect 1s
                timeout client \(options.inactivityTimeout)
                timeout server \(options.inactivityTimeout)
                timeout tunnel 1h
                timeout http-request 10s
                # Only connections that failed (refused, timed out, TLS handshake failed: the
                # request was not sent) are retried, once, on another server. Never a request a
                # server received: the product's POSTs are not all idempotent.
                retries 1
                retry-on conn-failure
                option redispatch
                # Send each small write at once: without it haproxy sends with MSG_MORE and the
                # kernel holds a node stream's events for up to 200 ms (Docs/Benchmarks.md).
                option http-no-delay

            frontend api
                bind 127.0.0.1:\(port)
                default_backend replicas

            backend replicas
                balance roundrobin
                option httpchk GET \(options.healthCheckPath)
                http-check expect status 200
                default-server inter \(options.checkInterval) fall \(options.fall) rise \(options.rise)
            \(servers.joined(separator: "\n"))

            """
    }

    /// The log so far (haproxy's notices: servers going down and up, with the check's reason).
    public func log() -> String {
        (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
    }

    /// SIGKILL: haproxy keeps nothing worth a graceful stop. No `waitUntilExit`, which can wait
    /// forever when called from a task; Foundation reaps the process.
    public func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    static func stopAll() {
        for process in all where process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    /// Debian installs it in /usr/sbin, which a non-root PATH may lack.
    static func findExecutable() throws -> String {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init) + ["/usr/sbin", "/usr/local/sbin"]
        guard let directory = path.first(where: { FileManager.default.isExecutableFile(atPath: "\($0)/haproxy") }) else {
            throw SoftHSMFixture.FixtureError(message: "no haproxy on PATH or in /usr/sbin (apt-get install haproxy)")
        }
        return "\(directory)/haproxy"
    }
}
