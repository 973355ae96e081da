import AsyncHTTPClient
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing
import TestSupport
@testable import CMKServer

@Suite(.serialized) struct PortalTests: ChildProcessTests {
    @Test func thePortalIsServedUnderAStrictContentSecurityPolicy() async throws {
        try await ServerHarness().test { client, _ in
            let page = try await client.execute(uri: "/", method: .get)
            #expect(page.status == .ok && page.text.contains("Sovereign Portal"))
            let policy = try #require(page.headers[.init("Content-Security-Policy")!])
            #expect(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'") && !policy.contains("unsafe-inline"))
            #expect(page.headers[.init("X-Content-Type-Options")!] == "nosniff")
            let script = try await client.execute(uri: "/portal/portal.js", method: .get)
            #expect(script.status == .ok && script.headers[.contentType]?.hasPrefix("text/javascript") == true)
            #expect(!script.text.contains("innerHTML"), "data is written with textContent only")
            let data = try await client.execute(uri: "/api/v1/tenants", method: .get, headers: ServerHarness.auth)
            #expect(data.status == .ok && data.headers[.cacheControl] == "no-store", "API answers are never cached")
            let refused = try await client.execute(uri: "/api/v1/tenants", method: .get)
            #expect(refused.status == .unauthorized && refused.headers[.cacheControl] == "no-store")
            let verifier = try await client.execute(uri: "/portal/verify.js", method: .get)
            #expect(verifier.status == .ok && verifier.text.contains("verifyExport") && !verifier.text.contains("innerHTML"))
            #expect(try await client.execute(uri: "/portal/portal.css", method: .get).status == .ok)
        }
    }

    /// The dashboard's feed wakes on a change, over a real connection, and needs a credential.
    @Test func theDashboardFeedSignalsChanges() async throws {
        try await ServerHarness().testLive { client, _, port in
            let http = HTTPClient(eventLoopGroupProvider: .singleton)
            do {
                var anonymous = HTTPClientRequest(url: "http://127.0.0.1:\(port)/api/v1/events/stream")
                anonymous.method = .GET
                #expect(try await http.execute(anonymous, timeout: .seconds(5)).status == .unauthorized)
                var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/api/v1/events/stream")
                for field in ServerHarness.auth { request.headers.add(name: field.name.rawName, value: field.value) }
                let response = try await http.execute(request, deadline: .now() + .seconds(20))
                #expect(response.status == .ok)
                var chunks = response.body.makeAsyncIterator()
                let opened = try #require(try await chunks.next())
                #expect(String(buffer: opened).contains(": open"))
                let created = try await client.execute(uri: "/api/v1/tenants", method: .post, headers: ServerHarness.auth,
                                                       body: ServerHarness.body(#"{"id":"live","name":"Live"}"#))
                #expect(created.status == .created)
                var text = ""
                while !text.contains("event: changed"), let chunk = try await chunks.next() { text += String(buffer: chunk) }
                #expect(text.contains("event: changed"))
            } catch {
                try? await http.shutdown()
                throw error
            }
            try await http.shutdown()
        }
    }

    /// End to end in headless Chromium (Debian's, through Selenium), against a real `cmk serve`
    /// on SoftHSM with one `cmk node`: a wrong code is refused; log in; onboard a key with the
    /// wizard (a failing probe shows its checks, then a passing one links it); live changes
    /// without a reload; the kill-switch (typed name, a wrong then a fresh code) to LOCKED with a
    /// proof verified in the browser; the revocation found in the audit viewer, its inclusion
    /// proof and the whole log verified (and tampering detected); a tablet layout. The steps
    /// are in portal_e2e.py, which Scripts/screenshots also runs.
    @Test func thePortalEndToEndInChromium() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/chromium"),
              FileManager.default.isExecutableFile(atPath: "/usr/bin/chromedriver") else {
            throw SoftHSMFixture.FixtureError(message: "install chromium and chromium-driver (Scripts/test does)")
        }
        // Stream heartbeats every second: a stopped node shows as offline within two seconds.
        // An AWS KMS keystore (moto) too: the wizard links a cloud key as well.
        let aws = String(decoding: try JSONEncoder().encode(CloudFixtures.awsConfiguration()), as: UTF8.self)
        let server = try ChildServer(token: "orbital", fixture: SoftHSMFixture.shared, logLevel: "info",
                                     environment: ["CMK_STREAM_HEARTBEAT_SECONDS": "1"],
                                     keystores: [#"{"id": "aws", "provider": "aws-kms", "aws": \#(aws)}"#])
        var nodes: [ChildNode] = []
        defer { for node in nodes { node.child.stop(SIGKILL) }; server.stopAndRemove() }
        try await waitUntilUp(server.base)
        try server.createAdmin()   // the browser is the first to log in
        let token = try server.automationToken()
        let issued = try http(["-H", "Authorization: Bearer \(try server.operatorToken())", "-H", "Content-Type: application/json",
                               "-d", #"{"region":"eu-central-1"}"#, "\(server.base)/api/v1/nodes/enrolments"])
        let enrolment = try #require(issued.json["token"] as? String, "\(issued.body)")
        let node = try ChildNode(gateway: server.base, region: "eu-central-1", enrolmentToken: enrolment, in: server.directory, name: "node")
        nodes.append(node)
        try await waitUntilUp(node.base)
        try await eventually(10, "the node to open its event stream") { try status(node)["connected"] as? Bool == true }

        let script = SoftHSMFixture.repositoryRoot + "/Tests/CMKServerTests/portal_e2e.py"
        let result = try SoftHSMFixture.run("/usr/bin/env", ["python3", script, "--base", server.base, "--node", node.base,
                                                              "--node-pid", String(node.child.process.processIdentifier),
                                                              "--aws-key", CloudFixtures.moto.keys.keyARN],
                                            environment: ["SE_OFFLINE": "true", "PORTAL_USERNAME": "admin",
                                                          "PORTAL_PASSWORD": ChildServer.adminPassword,
                                                          "PORTAL_TOTP_SECRET": server.credentials.totpSecret, "PORTAL_TOKEN": token])
        #expect(result.status == 0, "\(result.output)\n\(result.error)")
        for step in ["wrong code:", "failing probe:", "linked, L2Ref", "live changes arrived", "wrong code at the kill-switch:",
                     "locked: LOCKED", "proof:", "record: ✓ Included", "verify: ✓ The log verifies", "tampering detected:", "golden vectors:", "aws kms linked with the wizard",
                     "tablet layout:", "contrast:", "auditor:", "node offline:", "portal end to end: passed"] {
            #expect(result.output.contains(step), "missing step \(step): \(result.output)")
        }
        // What the browser did is on the record, by the person who did it.
        let audit = try http(["-H", "Authorization: Bearer \(token)", "\(server.base)/api/v1/audit?operation=link.revoke"])
        let revocations = audit.json["items"] as? [[String: Any]] ?? []
        #expect(revocations.count == 1 && (revocations.first?["actor"] as? [String: Any])?["id"] as? String == "admin", "\(audit.body)")
    }
}
