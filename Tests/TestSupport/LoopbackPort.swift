public import Foundation

/// Ports for the servers the tests start (moto, drongo, the cloud fakes, `cmk serve`,
/// `cmk node`), all on 127.0.0.1 only. A port is one the kernel says is free (bound to port 0,
/// read back, released), and a server is started on it with `start`, which notices when the
/// server's own bind then fails (another process took the port in between: other test runs
/// share this machine) and starts it again on another port.
public enum LoopbackPort {
    /// How a start ended.
    public enum Outcome: Sendable, Equatable {
        /// The process listens on 127.0.0.1 at the port.
        case listening
        /// The process ended before it listened, for a reason other than a taken port (a test
        /// may expect that: a node refused at enrolment exits).
        case exited
        /// The process runs but did not listen within the time allowed.
        case notListening
    }

    /// A port on 127.0.0.1 that no socket holds now: the kernel's choice for a bind to port 0,
    /// released at once. Nothing listens on it, until someone binds it.
    public static func free() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TimedOut("no socket for a free port: errno \(errno)") }
        defer { close(fd) }
        var address = loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        guard bound == 0, withUnsafeMutablePointer(to: &address, {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }) == 0 else { throw TimedOut("the kernel gave no free port on 127.0.0.1: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Whether something accepts TCP connections on 127.0.0.1 at `port`.
    public static func accepts(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = loopback(port: port)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    /// Whether process `pid` itself holds a socket listening on 127.0.0.1 at `port`, so that a
    /// server that lost the port to another process is not taken for up. On Linux, from
    /// `/proc/net/tcp` and the process's descriptors; elsewhere, whether the port accepts.
    public static func isListening(_ port: Int, by pid: Int32) -> Bool {
        #if os(Linux)
        guard let table = try? String(contentsOfFile: "/proc/net/tcp", encoding: .utf8) else { return false }
        // local_address is the address as the kernel holds it (network order, printed as a
        // native integer: 0100007F on little-endian machines) and the port in hex; state 0A
        // is LISTEN.
        let local = String(format: "%08X:%04X", inet_addr("127.0.0.1"), port)
        let inodes = table.split(separator: "\n").dropFirst().compactMap { line -> String? in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count > 9, fields[1] == local, fields[3] == "0A" else { return nil }
            return String(fields[9])
        }
        guard !inodes.isEmpty else { return false }
        let descriptors = "/proc/\(pid)/fd"
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: descriptors) else { return false }
        let sockets = Set(entries.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "\(descriptors)/\($0)") })
        return inodes.contains { sockets.contains("socket:[\($0)]") }
        #else
        return accepts(port)
        #endif
    }

    /// Whether `log` says a bind failed because the address was taken (Python, SwiftNIO).
    public static func lostTheBind(_ log: String) -> Bool {
        log.contains("Address already in use") || log.contains("errno: 98") || log.contains("EADDRINUSE")
    }

    /// Starts a server on a free port and waits until it listens there. `launch` starts the
    /// process for a port and writes its output to `logPath`; when the process ends because its
    /// bind lost a race for the port, it is launched again on another port, up to `attempts`
    /// times. Returns the port and how the last launch ended.
    public static func start(_ what: String, logPath: String, attempts: Int = 5, timeout: Duration = .seconds(30),
                             _ launch: (_ port: Int) throws -> Process) throws -> (port: Int, outcome: Outcome) {
        for attempt in 1...attempts {
            let port = try free()
            let offset = (try? FileManager.default.attributesOfItem(atPath: logPath)[.size] as? Int) ?? 0
            let process = try launch(port)
            var outcome = Outcome.notListening
            try? blockUntil("\(what) to listen on 127.0.0.1:\(port)", timeout: timeout) {
                if isListening(port, by: process.processIdentifier) {
                    outcome = .listening
                    return true
                }
                if !process.isRunning {
                    outcome = .exited
                    return true
                }
                return false
            }
            guard outcome == .exited else { return (port, outcome) }
            let log = FileManager.default.contents(atPath: logPath).map { String(decoding: $0.dropFirst(offset), as: UTF8.self) } ?? ""
            guard lostTheBind(log) else { return (port, .exited) }
            if attempt == attempts {
                throw TimedOut("\(what) lost the race for a free port \(attempts) times (last 127.0.0.1:\(port)); see \(logPath)")
            }
        }
        preconditionFailure("the last attempt returns or throws")
    }

    static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }
}
