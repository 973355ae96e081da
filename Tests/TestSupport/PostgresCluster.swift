import Foundation

/// A private PostgreSQL cluster for the tests: a fresh data directory in a temporary directory,
/// listening on 127.0.0.1 only, on a free port (never the system's 5432: Debian's package may
/// have made and started a cluster of its own there, which the tests neither use nor need),
/// with one superuser, `cmk`, whose random password is in a file. Stopped when the test process
/// exits (a fast shutdown it completes on its own), and in `deinit`.
///
/// PostgreSQL refuses to run as root: when the tests run as root (the CI containers), the data
/// directory is given to the `postgres` user (Debian's package creates it) and `initdb`,
/// `pg_ctl` and the server itself run through `runuser -u postgres --`; otherwise they run as
/// the test process's user. Clients (`psql`, the product) run as the test process either way.
public final class PostgresCluster: @unchecked Sendable {
    /// The superuser the cluster is made with.
    public let user = "cmk"
    /// Its password (random, per cluster); also in `passwordFile`.
    public let password: String
    /// The temporary directory holding everything below.
    public let directory: String
    public let dataDirectory: String
    /// Where the server's Unix socket is (the tests connect over TCP; the socket is private).
    public let socketDirectory: String
    /// The password alone, no newline, mode 0600: readable by the test process (its owner, or
    /// root) and by the server's user (`initdb --pwfile` reads it).
    public let passwordFile: String
    /// The server's log (its standard output and error), appended to across restarts.
    public let logPath: String
    /// The directory of PostgreSQL's programs (`/usr/lib/postgresql/<major>/bin` on Debian).
    public let binDirectory: String

    private let lock = NSLock()
    private var _port = 0
    private var _tls: TLS?
    private var _postmaster: Int32?
    /// The server's process: the postmaster, or `runuser` above it.
    private var _process: Process?

    /// The server's TLS material, when it was started with `tls: true`.
    public struct TLS: Sendable {
        /// The CA certificate (PEM) that issued the server's certificate: what clients trust.
        public let caCertificatePath: String
        public let certificatePath: String
        public let keyPath: String
        /// Whether `pg_hba.conf` refuses TCP connections without TLS.
        public let required: Bool
    }

    /// How `psql` connects: libpq's `sslmode`.
    public enum SSLMode: String, Sendable {
        /// Plain TCP (what a server that requires TLS refuses).
        case disable
        /// TLS, the server's certificate not checked.
        case require
        /// TLS, the certificate checked against the cluster's CA and the host name 127.0.0.1.
        case verifyFull = "verify-full"
    }

    /// The port the server listens on (0 before `start`).
    public var port: Int { lock.withLock { _port } }
    /// The TLS material, nil without TLS.
    public var tls: TLS? { lock.withLock { _tls } }
    /// The CA certificate (PEM) clients trust, nil without TLS.
    public var caCertificatePath: String? { tls?.caCertificatePath }
    /// The postmaster's process id while it runs (from `postmaster.pid`).
    public var postmasterPID: Int32? { lock.withLock { _postmaster } }

    /// Makes the directories; `start` makes the cluster. `directory`: where (default: a new
    /// directory under the system's temporary directory).
    public init(directory: String? = nil) throws {
        let base = directory ?? URL(fileURLWithPath: NSTemporaryDirectory())
            .appendingPathComponent("openkcm-postgres-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        self.directory = base
        dataDirectory = "\(base)/data"
        socketDirectory = "\(base)/socket"
        passwordFile = "\(base)/password"
        logPath = "\(base)/postgres.log"
        binDirectory = try Self.findBinDirectory()
        password = (0..<24).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        // 0755: the server's user must reach the files inside a directory the test process owns.
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o755])
    }

    deinit {
        try? stop()
    }

    // MARK: - Starting and stopping

    /// Makes a fresh cluster (initdb) and starts it on a free port, waiting until it accepts
    /// connections. `tls`: a server certificate for 127.0.0.1 and localhost from a new `TestCA`,
    /// and `ssl = on`; `requireTLS` (implies `tls`): `pg_hba.conf` accepts TCP connections only
    /// over TLS (`hostssl`), so a plain connection is refused.
    public func start(tls: Bool = false, requireTLS: Bool = false) throws {
        guard lock.withLock({ _process }) == nil else { throw SoftHSMFixture.FixtureError(message: "PostgreSQL at \(directory) is already running") }
        let fileManager = FileManager.default
        for path in [dataDirectory, socketDirectory, "\(directory)/tls"] where fileManager.fileExists(atPath: path) {
            try fileManager.removeItem(atPath: path)
        }
        try fileManager.createDirectory(atPath: dataDirectory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        try fileManager.createDirectory(atPath: socketDirectory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        try TestCA.replace(passwordFile, with: Data(password.utf8), mode: 0o600)
        if !fileManager.fileExists(atPath: logPath) { _ = fileManager.createFile(atPath: logPath, contents: nil) }
        try handOver([dataDirectory, socketDirectory, passwordFile, logPath])

        try server("initdb", ["-D", dataDirectory, "-U", user, "--pwfile=\(passwordFile)", "--auth=scram-sha-256",
                              "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"])

        var material: TLS?
        if tls || requireTLS {
            let ca = try TestCA(directory: "\(directory)/tls", name: "postgres-ca")
            let issued = try ca.issue("server", commonName: "127.0.0.1", dnsNames: ["localhost"])
            // The server refuses a key that others may read, or that is neither its own nor
            // root's (and as `postgres` it could not read root's 0600 key): give it the key.
            try handOver([issued.key])
            material = TLS(caCertificatePath: ca.certificatePath, certificatePath: issued.certificate, keyPath: issued.key,
                           required: requireTLS)
        }
        try writeAccessRules(requireTLS: requireTLS)
        // The settings go into a file of our own that postgresql.conf includes last, so they win
        // over initdb's, and a restart (which reads the files again) keeps the same port.
        let include = "\n# The test bed's settings (PostgresCluster.swift).\ninclude = 'testbed.conf'\n"
        let configuration = URL(fileURLWithPath: "\(dataDirectory)/postgresql.conf")
        let handle = try FileHandle(forWritingTo: configuration)
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(include.utf8))
        try handle.close()
        lock.withLock { _tls = material }

        // Started on a free port; when the server's bind loses the port to another process in
        // between (other test runs share the machine), again on another one.
        let attempts = 5
        for attempt in 1...attempts {
            let port = try LoopbackPort.free()
            try writeSettings(port: port, tls: material)
            switch try launch(port: port) {
            case .listening:
                return
            case .lostTheBind where attempt < attempts:
                continue
            case .lostTheBind(let log), .failed(let log):
                throw SoftHSMFixture.FixtureError(message: "PostgreSQL did not start on 127.0.0.1:\(port); from \(logPath):\n\(log)")
            }
        }
    }

    /// Stops the server (`stop`, fast) if it runs, and starts it again on the same port with
    /// its data, returning when it accepts connections. After `kill`, the start recovers.
    public func restart() throws {
        let port = self.port
        guard port != 0 else { throw SoftHSMFixture.FixtureError(message: "PostgreSQL at \(directory) was never started") }
        try stop()
        switch try launch(port: port) {
        case .listening:
            return
        case .lostTheBind(let log):
            throw SoftHSMFixture.FixtureError(message: "PostgreSQL could not start again on 127.0.0.1:\(port): another process took the port while it was down\n\(log)")
        case .failed(let log):
            throw SoftHSMFixture.FixtureError(message: "PostgreSQL did not start again on 127.0.0.1:\(port); from \(logPath):\n\(log)")
        }
    }

    /// `pg_ctl stop -m fast`: rolls back open transactions, ends the connections, checkpoints;
    /// returns when the server has exited. Does nothing when it is not running.
    public func stop() throws {
        guard let process = lock.withLock({ _process }) else { return }
        if process.isRunning {
            let result = try server("pg_ctl", ["stop", "-D", dataDirectory, "-m", "fast", "-w", "-t", "30"], check: false)
            guard result.status == 0 || !isRunning else {
                throw SoftHSMFixture.FixtureError(message: "pg_ctl stop failed: \(result.output)\(result.error)")
            }
            try blockUntil("PostgreSQL to exit after pg_ctl stop") { !process.isRunning }
        }
        forget()
    }

    /// An immediate shutdown (SIGQUIT to the postmaster): every connection is cut at once, no
    /// checkpoint, and the next start (`restart`) recovers from the WAL, as after a crash of the
    /// server. Returns when the server has exited.
    public func kill() throws {
        guard let process = lock.withLock({ _process }) else { return }
        if let pid = postmasterPID, process.isRunning {
            _ = send(SIGQUIT, to: pid)
            try blockUntil("PostgreSQL (pid \(pid)) to exit after SIGQUIT") { !process.isRunning }
        }
        forget()
    }

    /// Whether the postmaster runs (`pg_ctl status`).
    public var isRunning: Bool {
        ((try? server("pg_ctl", ["status", "-D", dataDirectory], check: false))?.status ?? 1) == 0
    }

    // MARK: - Clients

    /// The URL the product is configured with: no password in it (the product reads the
    /// password from a file or the environment), and no TLS parameters.
    public func url(database: String) -> String {
        "postgres://\(user)@127.0.0.1:\(port)/\(database)"
    }

    /// Runs `sql` with `psql -tA -v ON_ERROR_STOP=1 -c` as `cmk` over TCP to 127.0.0.1 and
    /// returns its standard output (rows one a line, columns separated by `|`, no trailing
    /// newline). `sslMode` nil: `verify-full` when the server has TLS, else `disable`. Throws
    /// `FixtureError` with psql's error output when psql fails (a refused connection, an SQL
    /// error).
    @discardableResult
    public func psql(_ sql: String, database: String = "postgres", sslMode: SSLMode? = nil) throws -> String {
        let mode = sslMode ?? (tls == nil ? .disable : .verifyFull)
        var connection = "host=127.0.0.1 port=\(port) user=\(user) dbname=\(Self.quoteConnectionValue(database)) sslmode=\(mode.rawValue)"
        if mode == .verifyFull, let ca = caCertificatePath { connection += " sslrootcert=\(Self.quoteConnectionValue(ca))" }
        let result = try SoftHSMFixture.run("\(binDirectory)/psql", ["-X", "-tA", "-v", "ON_ERROR_STOP=1", "-d", connection, "-c", sql],
                                            environment: ["PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10", "PGAPPNAME": "testbed-psql"])
        guard result.status == 0 else {
            throw SoftHSMFixture.FixtureError(message: "psql (\(mode.rawValue)) \(sql): \(result.error)\(result.output)")
        }
        var output = result.output
        if output.hasSuffix("\n") { output.removeLast() }
        return output
    }

    /// Creates database `name` (owned by `cmk`).
    public func createDatabase(_ name: String) throws {
        try psql("CREATE DATABASE \(Self.quoteIdentifier(name))")
    }

    /// Creates a database of its own for one test, named `prefix_` and a random suffix, and
    /// returns its name.
    public func freshDatabase(_ prefix: String) throws -> String {
        let name = prefix + "_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(12)
        try createDatabase(name)
        return name
    }

    /// Ends every other connection to `database` (`pg_terminate_backend`): the fault of a
    /// server that drops its clients. Returns how many it ended.
    @discardableResult
    public func terminateConnections(database: String) throws -> Int {
        let ended = try psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = \(Self.quoteLiteral(database)) AND pid <> pg_backend_pid()")
        return Int(ended) ?? 0
    }

    // MARK: - The shared cluster

    private static let sharedLock = NSLock()
    nonisolated(unsafe) private static var sharedCluster: Result<PostgresCluster, any Error>?

    /// One cluster for the whole test process, started at the first call (several suites use
    /// it, each with a database of its own): with TLS (`caCertificatePath`), not required, so
    /// suites may connect either way. A failed start is reported to every caller.
    public static func shared() throws -> PostgresCluster {
        try sharedLock.withLock {
            if let sharedCluster { return try sharedCluster.get() }
            let result = Result<PostgresCluster, any Error> {
                let cluster = try PostgresCluster()
                try cluster.start(tls: true)
                return cluster
            }
            sharedCluster = result
            return try result.get()
        }
    }

    // MARK: - Internals

    private func writeSettings(port: Int, tls: TLS?) throws {
        var lines = [
            "listen_addresses = '127.0.0.1'",
            "port = \(port)",
            "unix_socket_directories = \(Self.quoteLiteral(socketDirectory))",
            // Test speed. Without fsync an OS crash or power loss could corrupt the cluster, and
            // without full-page writes a torn page could; the tests never do that to the OS:
            // they restart PostgreSQL cleanly (fast or immediate shutdown, after which the
            // kernel still holds every write) or SIGKILL our replicas, not the machine.
            "fsync = off",
            "full_page_writes = off",
            "max_connections = 200",
            "log_min_messages = warning",
            "logging_collector = off",
            "log_line_prefix = '%m [%p] %q%u@%d '",
            "ssl = \(tls == nil ? "off" : "on")",
        ]
        if let tls {
            lines += ["ssl_cert_file = \(Self.quoteLiteral(tls.certificatePath))", "ssl_key_file = \(Self.quoteLiteral(tls.keyPath))"]
        }
        let path = "\(dataDirectory)/testbed.conf"
        try TestCA.replace(path, with: Data((lines.joined(separator: "\n") + "\n").utf8), mode: 0o600)
        try handOver([path])
    }

    /// `pg_hba.conf`: `cmk` by SCRAM over the Unix socket and TCP from 127.0.0.1; with
    /// `requireTLS`, TCP only over TLS (a plain connection finds no line and is refused).
    private func writeAccessRules(requireTLS: Bool) throws {
        let rules = """
            # TYPE     DATABASE  USER  ADDRESS        METHOD
            local      all       all                  scram-sha-256
            \(requireTLS ? "hostssl" : "host   ")    all       all   127.0.0.1/32   scram-sha-256

            """
        let path = "\(dataDirectory)/pg_hba.conf"
        try TestCA.replace(path, with: Data(rules.utf8), mode: 0o600)
        try handOver([path])
    }

    private enum Launch {
        case listening
        case lostTheBind(String)
        case failed(String)
    }

    /// Starts the postmaster in the foreground (`postgres -D`, through `runuser` as root), its
    /// output appended to the log, and waits until it accepts connections on `port`. Not
    /// `pg_ctl start`: the server it leaves behind would inherit the descriptor through which
    /// Foundation learns that pg_ctl ended, so waiting for pg_ctl would wait for the server.
    private func launch(port: Int) throws -> Launch {
        let fileManager = FileManager.default
        let offset = (try? fileManager.attributesOfItem(atPath: logPath)[.size] as? Int) ?? 0
        let log = { fileManager.contents(atPath: self.logPath).map { String(decoding: $0.dropFirst(offset), as: UTF8.self) } ?? "" }
        let postgres = "\(binDirectory)/postgres"
        let process = Process()
        if Self.asRoot {
            // runuser stays as the parent of the server and ends when it ends.
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/runuser")
            process.arguments = ["-u", "postgres", "--", postgres, "-D", dataDirectory]
        } else {
            process.executableURL = URL(fileURLWithPath: postgres)
            process.arguments = ["-D", dataDirectory]
        }
        let handle = FileHandle(forWritingAtPath: logPath)
        try handle?.seekToEnd()
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        try? handle?.close()
        lock.withLock { _process = process }
        do {
            // Up: our postmaster (postmaster.pid) holds the port, and answers on it.
            try blockUntil("PostgreSQL to accept connections on 127.0.0.1:\(port)", timeout: .seconds(30), every: .milliseconds(50)) {
                guard process.isRunning else { return true }
                guard let pid = postmasterFromFile(), LoopbackPort.isListening(port, by: pid) else { return false }
                return try SoftHSMFixture.run("\(binDirectory)/pg_isready", ["-h", "127.0.0.1", "-p", String(port), "-t", "2"]).status == 0
            }
        } catch {
            if let pid = postmasterFromFile() { _ = send(SIGQUIT, to: pid) }
            if process.isRunning { _ = send(SIGKILL, to: process.processIdentifier) }
            forget()
            return .failed("\(error)\n\(log())")
        }
        guard process.isRunning, let pid = postmasterFromFile() else {
            forget()
            let output = log()
            return LoopbackPort.lostTheBind(output) ? .lostTheBind(output) : .failed(output)
        }
        lock.withLock {
            _port = port
            _postmaster = pid
        }
        Self.running.withLock {
            if !Self.registered {
                Self.registered = true
                atexit { PostgresCluster.stopAll() }
            }
            Self.postmasters.insert(pid)
        }
        return .listening
    }

    /// The postmaster's pid, from `postmaster.pid` (its first line).
    private func postmasterFromFile() -> Int32? {
        guard let text = FileManager.default.contents(atPath: "\(dataDirectory)/postmaster.pid").map({ String(decoding: $0, as: UTF8.self) }),
              let first = text.split(separator: "\n").first else { return nil }
        return Int32(first)
    }

    private func forget() {
        let pid = lock.withLock { () -> Int32? in
            defer {
                _postmaster = nil
                _process = nil
            }
            return _postmaster
        }
        if let pid { Self.running.withLock { _ = Self.postmasters.remove(pid) } }
    }

    private static let running = NSLock()
    nonisolated(unsafe) private static var postmasters: Set<Int32> = []
    nonisolated(unsafe) private static var registered = false

    /// At exit: SIGINT, PostgreSQL's fast shutdown, which the server completes on its own after
    /// the test process has gone (no waiting in an atexit handler).
    static func stopAll() {
        for pid in postmasters { _ = send(SIGINT, to: pid) }
    }

    private static var asRoot: Bool { geteuid() == 0 }

    /// Runs one of PostgreSQL's server programs: as `postgres` through `runuser` when the test
    /// process is root, else directly. `check`: throw when it fails.
    @discardableResult
    private func server(_ program: String, _ arguments: [String], check: Bool = true) throws -> SoftHSMFixture.RunResult {
        let executable = "\(binDirectory)/\(program)"
        let result = Self.asRoot
            ? try SoftHSMFixture.run("/usr/sbin/runuser", ["-u", "postgres", "--", executable] + arguments)
            : try SoftHSMFixture.run(executable, arguments)
        if check && result.status != 0 {
            throw SoftHSMFixture.FixtureError(message: "\(program) \(arguments.joined(separator: " ")) failed (\(result.status)): \(result.output)\(result.error)")
        }
        return result
    }

    /// Gives `paths` to the `postgres` user when the test process is root (the server runs as
    /// that user); otherwise they are the test process's own already.
    private func handOver(_ paths: [String]) throws {
        guard Self.asRoot else { return }
        guard let entry = getpwnam("postgres") else {
            throw SoftHSMFixture.FixtureError(message: "the tests run as root, and PostgreSQL refuses to; but there is no user 'postgres' to run it as (Debian's postgresql package creates it)")
        }
        for path in paths where chown(path, entry.pointee.pw_uid, entry.pointee.pw_gid) != 0 {
            throw SoftHSMFixture.FixtureError(message: "chown postgres \(path): errno \(errno)")
        }
    }

    /// The newest `/usr/lib/postgresql/<major>/bin` with a server in it (Debian does not put
    /// them on PATH), else a directory on PATH that has `initdb` and `pg_ctl`.
    static func findBinDirectory() throws -> String {
        let fileManager = FileManager.default
        let root = "/usr/lib/postgresql"
        let majors = ((try? fileManager.contentsOfDirectory(atPath: root)) ?? [])
            .compactMap { name in Int(name).map { (major: $0, bin: "\(root)/\(name)/bin") } }
            .filter { fileManager.isExecutableFile(atPath: "\($0.bin)/postgres") && fileManager.isExecutableFile(atPath: "\($0.bin)/initdb") }
            .sorted { $0.major > $1.major }
        if let newest = majors.first { return newest.bin }
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        where fileManager.isExecutableFile(atPath: "\(directory)/initdb") && fileManager.isExecutableFile(atPath: "\(directory)/pg_ctl") {
            return directory
        }
        throw SoftHSMFixture.FixtureError(message: "no PostgreSQL server programs in \(root)/*/bin or on PATH (apt-get install postgresql)")
    }

    static func quoteIdentifier(_ name: String) -> String { "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
    static func quoteLiteral(_ value: String) -> String { "'" + value.replacingOccurrences(of: "'", with: "''") + "'" }
    static func quoteConnectionValue(_ value: String) -> String {
        "'" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
    }
}

/// `kill(2)`, which the method `PostgresCluster.kill()` hides inside the class.
private func send(_ signal: Int32, to pid: Int32) -> Int32 {
    kill(pid, signal)
}
