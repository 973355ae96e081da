public import Foundation

/// A Python server the tests start on loopback (moto, drongo, the Key Vault fake): started once per
/// test process on a free port, waited for by its listening socket (no request: an HTTP request
/// could count as one of moto's unauthenticated calls), and stopped when the process exits.
public final class LocalServer: @unchecked Sendable {
    public let port: Int
    public let process: Process
    public var base: String { "http://127.0.0.1:\(port)" }
    private static let running = NSLock()
    nonisolated(unsafe) private static var all: [(process: Process, group: Bool)] = []
    /// Whether the server made itself a process group leader (PyKMIP's server forks helper
    /// processes: a multiprocessing manager and its policy monitor), so that stopping it stops
    /// the whole group, not the leader alone (its children would outlive the tests).
    public let processGroup: Bool

    /// The interpreter itself, not a wrapper (pyenv's shims are shell scripts that may fork):
    /// the process the tests start is the one they stop.
    public static let python: String = {
        let found = try? SoftHSMFixture.run("/usr/bin/env", ["python3", "-c", "import sys; print(sys.executable)"])
        return found.map { $0.output.trimmingCharacters(in: .whitespacesAndNewlines) }.flatMap { $0.isEmpty ? nil : $0 } ?? "/usr/bin/python3"
    }()

    /// Runs `python3` (the real interpreter) with `arguments`, which may contain `{port}`,
    /// replaced by the chosen port (`LoopbackPort.start`: free, and chosen again if the server
    /// loses it to another process before it binds).
    public init(python arguments: [String], environment: [String: String] = [:], log: String, processGroup: Bool = false) throws {
        self.processGroup = processGroup
        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        var started: Process?
        let what = arguments.first ?? "python3"
        let (port, outcome) = try LoopbackPort.start(what, logPath: log) { port in
            let process = Process()
            process.executableURL = URL(fileURLWithPath: Self.python)
            process.arguments = arguments.map { $0.replacingOccurrences(of: "{port}", with: String(port)) }
            process.environment = env
            let handle = FileHandle(forWritingAtPath: log)
            try handle?.seekToEnd()
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
            Self.running.withLock {
                if Self.all.isEmpty { atexit { LocalServer.stopAll() } }
                Self.all.append((process, processGroup))
            }
            started = process
            return process
        }
        self.port = port
        self.process = started!
        guard outcome == .listening else {
            stop()
            throw SoftHSMFixture.FixtureError(message: "\(what) did not start on port \(port) (\(outcome)); see \(log)")
        }
    }

    /// SIGKILL: these stand-ins keep nothing worth a graceful stop. No `waitUntilExit`, which
    /// can wait forever when called from a task; Foundation reaps the process.
    public func stop() {
        Self.stop(process, group: processGroup)
    }

    static func stop(_ process: Process, group: Bool) {
        let pid = process.processIdentifier
        // The group even when the leader is gone: its children may still run.
        if group, pid > 0 { kill(-pid, SIGKILL) }
        if process.isRunning { kill(pid, SIGKILL) }
    }

    static func stopAll() {
        for (process, group) in all { stop(process, group: group) }
    }
}
