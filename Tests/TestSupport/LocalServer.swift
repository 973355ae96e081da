public import Foundation

/// A Python server the tests start on loopback (moto, drongo, the Key Vault fake): started once per
/// test process on a free port, waited for with a plain TCP connect (an HTTP request could
/// count as one of moto's unauthenticated calls), and stopped when the process exits.
public final class LocalServer: @unchecked Sendable {
    public let port: Int
    public let process: Process
    public var base: String { "http://127.0.0.1:\(port)" }
    private static let running = NSLock()
    nonisolated(unsafe) private static var all: [Process] = []

    /// The interpreter itself, not a wrapper (pyenv's shims are shell scripts that may fork):
    /// the process the tests start is the one they stop.
    public static let python: String = {
        let found = try? SoftHSMFixture.run("/usr/bin/env", ["python3", "-c", "import sys; print(sys.executable)"])
        return found.map { $0.output.trimmingCharacters(in: .whitespacesAndNewlines) }.flatMap { $0.isEmpty ? nil : $0 } ?? "/usr/bin/python3"
    }()

    /// Runs `python3` (the real interpreter) with `arguments`, which may contain `{port}`,
    /// replaced by the chosen port.
    public init(python arguments: [String], environment: [String: String] = [:], log: String) throws {
        port = try Self.freePort()
        process = Process()
        process.executableURL = URL(fileURLWithPath: Self.python)
        process.arguments = arguments.map { $0.replacingOccurrences(of: "{port}", with: String(port)) }
        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        process.environment = env
        FileManager.default.createFile(atPath: log, contents: nil)
        let handle = FileHandle(forWritingAtPath: log)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        Self.running.withLock {
            if Self.all.isEmpty { atexit { LocalServer.stopAll() } }
            Self.all.append(process)
        }
        let deadline = Date().addingTimeInterval(30)
        while !Self.accepts(port) {
            guard process.isRunning, Date() < deadline else {
                stop()
                throw SoftHSMFixture.FixtureError(message: "\(arguments.first ?? "python3") did not start on port \(port); see \(log)")
            }
            usleep(100_000)
        }
    }

    /// SIGKILL: these stand-ins keep nothing worth a graceful stop. No `waitUntilExit`, which
    /// can wait forever when called from a task; Foundation reaps the process.
    public func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    static func stopAll() {
        for process in all where process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    static func accepts(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    /// A port the kernel just gave out (bound to port 0, then released).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        guard bound == 0, withUnsafeMutablePointer(to: &address, {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }) == 0 else { throw SoftHSMFixture.FixtureError(message: "no free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
