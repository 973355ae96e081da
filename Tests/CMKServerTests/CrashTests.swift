import Audit
import AuditFormat
import CMKCore
import Foundation
import KSI
import NIOConcurrencyHelpers
import PKCS11
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

    func waitUntilUp(_ base: String) async throws {
        try await waitUntil("cmk serve at \(base) to answer /healthz", every: .milliseconds(100)) {
            try curl(["-o", "/dev/null", "-w", "%{http_code}", "\(base)/healthz"]).output == "200"
        }
    }

    @Test func sigtermStopsTheServerGracefully() async throws {
        // With every periodic service on and sleeping long (the prober's minute, the shredder's):
        // none of them may hold the shutdown up.
        let child = try ChildServer(token: "logs", fixture: fixture, logLevel: "info", probeIntervalSeconds: 60)
        defer { if child.process.isRunning { kill(child.process.processIdentifier, SIGKILL) } }
        try await waitUntilUp(child.base)
        kill(child.process.processIdentifier, SIGTERM)
        try await waitUntil("cmk serve to stop within 10 s of SIGTERM", timeout: .seconds(10)) { !child.process.isRunning }
        #expect(child.process.terminationStatus == 0)
        #expect(child.process.terminationReason == .exit)
        // The registry it leaves behind opens cleanly.
        _ = try Registry(path: "\(child.directory)/cmk.sqlite")
    }

    /// Every log line at the most verbose level, the registry files and the responses hold
    /// neither the PIN nor the L2.
    @Test func childServerLogsHoldNoSecrets() async throws {
        let child = try ChildServer(token: "logs", fixture: fixture, logLevel: "trace")
        defer { if child.process.isRunning { kill(child.process.processIdentifier, SIGKILL) } }
        try await waitUntilUp(child.base)
        try child.logIn()
        var responses = ""
        responses += try curl(child.auth + ["-d", #"{"id":"logs","name":"Logs"}"#, "\(child.base)/api/v1/tenants"]).output
        let created = try curl(child.auth + ["-d", #"{"provider":"pkcs11","keystore":"hsm","key":"pkcs11:object=l1"}"#, "\(child.base)/api/v1/tenants/logs/l1-links"])
        responses += created.output
        let linkID = try #require((try JSONSerialization.jsonObject(with: Data(created.output.utf8)) as? [String: Any])?["id"] as? String)
        responses += try curl(child.auth + ["-X", "POST", "\(child.base)/api/v1/tenants/logs/l1-links/\(linkID)/probe"]).output
        responses += try curl(child.auth + ["-d", #"{"provider":"pkcs11","keystore":"hsm","key":"pkcs11:object=nope"}"#, "\(child.base)/api/v1/tenants/logs/l1-links"]).output
        responses += try curl(child.auth + ["-X", "POST", "\(child.base)/api/v1/tenants/logs/l1-links/\(linkID)/revoke"]).output
        kill(child.process.processIdentifier, SIGTERM)
        child.process.waitUntilExit()

        // Learn L2 from the registry the way only the key owner can: open the seal, unwrap with L1.
        let registry = try Registry(path: "\(child.directory)/cmk.sqlite")
        let l2 = try #require(try await registry.l2Key(linkID: linkID))
        let ivk = try #require(try await registry.ivkVersions().first { $0.version == l2.sovereignIVKVersion })
        let keystore = PKCS11Keystore()
        let token = try await keystore.token(profile: fixture.profile("logs"))
        let sealedBlob = try await token.open(Array(try #require(l2.sovereignBinding)), with: try KeyReference(parsing: ivk.keyReference),
                                              aad: Array("openkcm/sovereign-binding/v1|logs|\(l2.id)".utf8))
        let material = try await token.unwrap(WrappedKey(mechanism: try #require(l2.sovereignMechanism), blob: sealedBlob),
                                              with: try KeyReference(parsing: "pkcs11:token=logs;object=l1"))
        let l2Bytes = material.withUnsafeBytes { Data($0) }
        await keystore.shutdown()

        let logs = child.logs
        #expect(!logs.isEmpty, "trace logging wrote something")
        let files = try FileManager.default.contentsOfDirectory(atPath: child.directory).filter { $0.hasPrefix("cmk.sqlite") || $0.hasPrefix("audit.sqlite") }
            .compactMap { FileManager.default.contents(atPath: "\(child.directory)/\($0)") }
        let secrets: [(String, Data)] = [
            ("PIN", Data(SoftHSMFixture.userPIN.utf8)), ("L2", l2Bytes),
            ("L2 hex", Data(l2Bytes.map { String(format: "%02x", $0) }.joined().utf8)), ("L2 base64", Data(l2Bytes.base64EncodedString().utf8)),
            ("session cookie", Data(child.credentials.cookie.utf8)), ("CSRF token", Data(child.credentials.csrf.utf8)),
            ("admin password", Data(ChildServer.adminPassword.utf8)), ("TOTP secret", Data(child.credentials.totpSecret.utf8)),
        ]
        for (name, secret) in secrets {
            #expect(logs.range(of: secret) == nil, "\(name) in the logs")
            #expect(Data(responses.utf8).range(of: secret) == nil, "\(name) in a response")
            for file in files { #expect(file.range(of: secret) == nil, "\(name) in the registry or audit files") }
        }
    }

    @Test func revocationSurvivesAKilledProcess() async throws {
        let child = try ChildServer(token: "crash", fixture: fixture, logLevel: "error")
        defer { if child.process.isRunning { kill(child.process.processIdentifier, SIGKILL) } }
        try await waitUntilUp(child.base)
        try child.logIn()
        let (base, auth, directory, server) = (child.base, child.auth, child.directory, child.process)
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
        #expect(try await registry.events(after: 0, limit: 10).contains { $0.linkID == linkID && $0.type == "l1.revoked" })
    }

    /// SIGKILL during a stream of administrative actions: on reopening, the audit log verifies
    /// and every action the server acknowledged has its record.
    @Test func theAuditLogSurvivesAKilledProcess() async throws {
        let child = try ChildServer(token: "crash", fixture: fixture, logLevel: "error")
        defer { if child.process.isRunning { kill(child.process.processIdentifier, SIGKILL) } }
        try await waitUntilUp(child.base)
        // Four clients create tenants as fast as they can and print each acknowledged id.
        let client = Process()
        client.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        client.arguments = ["python3", "-c", """
            import http.client, json, sys, threading
            base, token = sys.argv[1], sys.argv[2]
            host, port = base.split("//")[1].split(":")
            lock = threading.Lock()
            def run(k):
                try:
                    conn = http.client.HTTPConnection(host, int(port), timeout=10)
                    for i in range(100000):
                        tenant = f"k{k}-{i}"
                        conn.request("POST", "/api/v1/tenants", json.dumps({"id": tenant, "name": tenant}),
                                     {"Authorization": "Bearer " + token, "Content-Type": "application/json"})
                        response = conn.getresponse(); response.read()
                        if response.status == 201:
                            with lock: print(tenant, flush=True)
                except Exception:
                    pass
            threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
            for t in threads: t.start()
            for t in threads: t.join()
            """, child.base, try child.automationToken()]
        let output = Pipe()
        client.standardOutput = output
        // The clients' output, read as it comes (until they exit, after the kill).
        let printed = NIOLockedValueBox((text: "", ended: false))
        let reader = output.fileHandleForReading
        DispatchQueue.global().async {
            while true {
                let chunk = reader.availableData
                printed.withLockedValue { printed in
                    if chunk.isEmpty { printed.ended = true } else { printed.text += String(decoding: chunk, as: UTF8.self) }
                }
                if chunk.isEmpty { return }
            }
        }
        try client.run()
        func acknowledged() -> Set<String> {
            Set(printed.withLockedValue { $0.text }.split(separator: "\n").map(String.init))
        }
        // Killed mid-stream: once the server has acknowledged a good number of creations.
        try await waitUntil("the clients' first 50 acknowledged tenants", timeout: .seconds(30)) { acknowledged().count >= 50 }
        kill(child.process.processIdentifier, SIGKILL)
        child.process.waitUntilExit()
        try await waitUntil("the clients to stop after the kill", timeout: .seconds(30)) { printed.withLockedValue { $0.ended } }
        client.waitUntilExit()
        let acknowledged = acknowledged()
        #expect(acknowledged.count >= 50, "the stream ran before the kill")

        let store = try AuditStore(path: "\(child.directory)/audit.sqlite")
        let key = try Ed25519FileSigner(path: "\(child.directory)/audit-signing.key", keyName: store.origin).verifierKey
        var export: [UInt8] = []
        try store.export(from: 0, to: nil, key: key) { export += $0 + [0x0A] }
        let summary = try AuditVerifier(options: .init(publicKey: key)).verify(export)
        #expect(summary.records == store.head.size)
        var recorded = Set<String>()
        var cursor: UInt64?
        repeat {
            let page = try store.records(AuditQuery(operation: "tenant.create", outcome: .success, after: cursor, limit: 1000))
            recorded.formUnion(page.records.compactMap(\.tenant))
            cursor = page.next
        } while cursor != nil
        #expect(acknowledged.isSubset(of: recorded), "acknowledged without a record: \(acknowledged.subtracting(recorded).sorted().prefix(5))")
    }
}
