import Foundation
import Registry
import Testing
import TestSupport

/// The real `cmk serve` in a child process, killed with SIGKILL right after it answered the
/// revoke: on reopening, the registry shows the link revoked and the event in the outbox.
@Suite(.serialized) struct CrashTests {
    let fixture = SoftHSMFixture.shared

    func curl(_ arguments: [String]) throws -> SoftHSMFixture.RunResult {
        try SoftHSMFixture.run("/usr/bin/env", ["curl", "-s", "--max-time", "20"] + arguments)
    }

    @Test func revocationSurvivesAKilledProcess() async throws {
        let cmk = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("cmk").path
        try #require(FileManager.default.isExecutableFile(atPath: cmk), "build the cmk product first")
        let directory = NSTemporaryDirectory() + "cmk-crash-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try JSONEncoder().encode(fixture.profile("crash")).write(to: URL(fileURLWithPath: "\(directory)/crash.json"))
        let bearer = "crash-test-token-0123456789abcdef0123456789"
        try Data(bearer.utf8).write(to: URL(fileURLWithPath: "\(directory)/token"))
        let port = Int.random(in: 20_000...45_000)
        let config = """
        {"port": \(port), "database": "cmk.sqlite", "keystores": [{"id": "hsm", "profile": "crash.json"}],
         "platform": {"profile": "crash.json"}, "bootstrapTokenFile": "token", "probeIntervalSeconds": 0, "logLevel": "error"}
        """
        try Data(config.utf8).write(to: URL(fileURLWithPath: "\(directory)/cmk.json"))

        let server = Process()
        server.executableURL = URL(fileURLWithPath: cmk)
        server.arguments = ["serve", "--config", "\(directory)/cmk.json"]
        server.environment = ProcessInfo.processInfo.environment.merging(["SOFTHSM2_CONF": fixture.configPath]) { $1 }
        server.standardOutput = FileHandle.nullDevice
        server.standardError = FileHandle.nullDevice
        try server.run()
        defer { if server.isRunning { kill(server.processIdentifier, SIGKILL) } }

        let base = "http://127.0.0.1:\(port)"
        var up = false
        for _ in 0..<100 where !up {
            up = (try? curl(["-o", "/dev/null", "-w", "%{http_code}", "\(base)/healthz"]))?.output == "200"
            if !up { try await Task.sleep(for: .milliseconds(100)) }
        }
        try #require(up, "cmk serve did not come up")
        let auth = ["-H", "Authorization: Bearer \(bearer)", "-H", "Content-Type: application/json"]
        _ = try curl(auth + ["-d", #"{"id":"crash","name":"Crash"}"#, "\(base)/api/v1/tenants"])
        let created = try curl(auth + ["-d", #"{"provider":"pkcs11","keystore":"hsm","key":"pkcs11:object=l1"}"#, "\(base)/api/v1/tenants/crash/l1-links"])
        let link = try JSONSerialization.jsonObject(with: Data(created.output.utf8)) as? [String: Any]
        let linkID = try #require(link?["id"] as? String, "handshake: \(created.output)")
        let revoked = try curl(auth + ["-X", "POST", "\(base)/api/v1/tenants/crash/l1-links/\(linkID)/revoke"])
        kill(server.processIdentifier, SIGKILL)
        server.waitUntilExit()
        #expect(revoked.output.contains("REVOKED"))

        let registry = try Registry(path: "\(directory)/cmk.sqlite")
        #expect(try await registry.link(tenantID: "crash", id: linkID).state == .revoked)
        #expect(try await registry.l2Key(linkID: linkID)?.state == .locked)
        #expect(try await registry.pendingEvents(limit: 10).contains { $0.linkID == linkID && $0.type == "l1.revoked" })
    }
}
