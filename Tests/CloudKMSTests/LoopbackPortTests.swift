import Foundation
import Testing
import TestSupport

/// The ports the test servers get: free when chosen, a server that loses its port to another
/// process before it binds is started again elsewhere, and a port someone else holds is not
/// taken for the server's own.
@Suite(.serialized) struct LoopbackPortTests {
    /// A socket of this process listening on 127.0.0.1 at `port` (another program on the
    /// machine taking the port first).
    final class Squatter {
        let fd: Int32

        init(_ port: Int) throws {
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0, listen(fd, 1) == 0 else { throw TimedOut("cannot hold port \(port): errno \(errno)") }
        }

        deinit { close(fd) }
    }

    static let log = NSTemporaryDirectory() + "loopback-port-\(getpid()).log"

    /// A Python server that binds `port` as the test servers do, then stays up (its sleep is its
    /// lifetime, not a wait for anything; the test kills it).
    func pythonServer(_ port: Int) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: LocalServer.python)
        process.arguments = ["-c", """
            import socket, time
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", \(port))); s.listen(4)
            time.sleep(60)
            """]
        let handle = FileHandle(forWritingAtPath: Self.log)
        try handle?.seekToEnd()
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        return process
    }

    @Test func aFreePortIsFreeAndOnLoopback() throws {
        let port = try LoopbackPort.free()
        #expect((1024...65_535).contains(port))
        #expect(!LoopbackPort.accepts(port), "nothing listens on it")
        let held = try Squatter(port)
        #expect(LoopbackPort.accepts(port))
        #expect(LoopbackPort.isListening(port, by: getpid()), "this process holds it")
        #expect(!LoopbackPort.isListening(port, by: 1), "another process does not")
        _ = held
    }

    @Test func aServerThatLosesItsPortStartsAgainOnAnother() throws {
        FileManager.default.createFile(atPath: Self.log, contents: nil)
        var stolen: [Int] = []
        var squatters: [Squatter] = []
        var processes: [Process] = []
        defer { for process in processes where process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        let (port, outcome) = try LoopbackPort.start("the test server", logPath: Self.log) { port in
            // The first two ports are taken by someone else between the check and the bind.
            if stolen.count < 2 {
                stolen.append(port)
                squatters.append(try Squatter(port))
            }
            let process = try pythonServer(port)
            processes.append(process)
            return process
        }
        #expect(outcome == .listening)
        #expect(processes.count == 3 && stolen.count == 2, "two lost binds, then a third port")
        #expect(!stolen.contains(port))
        #expect(LoopbackPort.isListening(port, by: processes[2].processIdentifier))
        #expect(!LoopbackPort.isListening(stolen[0], by: processes[0].processIdentifier), "the first server never held its port")
        #expect(try String(contentsOfFile: Self.log, encoding: .utf8).contains("Address already in use"))
    }

    @Test func aServerThatFailsForAnotherReasonIsNotRestarted() throws {
        FileManager.default.createFile(atPath: Self.log, contents: nil)
        var launches = 0
        let (_, outcome) = try LoopbackPort.start("a failing server", logPath: Self.log) { _ in
            launches += 1
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", "echo 'refused at enrolment' >&2; exit 65"]
            process.standardError = FileHandle(forWritingAtPath: Self.log)
            try process.run()
            return process
        }
        #expect(outcome == .exited && launches == 1)
    }

    @Test func aServerThatNeverBindsIsReportedAfterTheTimeAllowed() throws {
        var started: Process?
        defer { if let started { kill(started.processIdentifier, SIGKILL) } }
        let (_, outcome) = try LoopbackPort.start("a silent server", logPath: Self.log, timeout: .milliseconds(300)) { _ in
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/sleep")
            process.arguments = ["30"]
            try process.run()
            started = process
            return process
        }
        #expect(outcome == .notListening)
    }
}
