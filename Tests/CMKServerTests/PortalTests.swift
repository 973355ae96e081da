import AsyncHTTPClient
@testable import CMKServer
import ControlPlane
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import NIOHTTP1
import TestSupport
import Testing

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
    /// proof verified in the browser; past it, with a second security administrator (bob, in a
    /// second browser) approving: a shred scheduled and cancelled, the wizard refusing a new key
    /// beside the restorable link, a restore that the requester cannot approve himself, and the
    /// node decrypting data from before the revocation; the revocation found in the audit viewer,
    /// its inclusion proof and the whole log verified (and tampering detected); a tablet layout;
    /// a platform operator's view (nodes, approvals, an enrolment token; no tenant data asked
    /// for) and an auditor's (read-only). The steps are in portal_e2e.py, which
    /// Scripts/screenshots also runs.
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
        // Restores and shreds take two security administrators; the platform operator has its own view.
        let bob = try newPerson(server, "bob", role: "security-admin")
        let olga = try newPerson(server, "olga", role: "platform-operator")
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
                                                          "PORTAL_TOTP_SECRET": server.credentials.totpSecret, "PORTAL_TOKEN": token,
                                                          "PORTAL_BOB_PASSWORD": ChildServer.adminPassword, "PORTAL_BOB_TOTP_SECRET": bob,
                                                          "PORTAL_OPERATOR_PASSWORD": ChildServer.adminPassword,
                                                          "PORTAL_OPERATOR_TOTP_SECRET": olga])
        #expect(result.status == 0, "\(result.output)\n\(result.error)")
        for step in ["wrong code:", "failing probe:", "linked, L2Ref", "live changes arrived", "wrong code at the kill-switch:",
                     "locked: LOCKED", "proof:", "revoked link actions:", "bob approved the shred: Approved", "shred scheduled:",
                     "wizard: link_restorable:", "shred cancelled:", "restore requested:", "self-approval refused: 403 self_approval",
                     "bob rejected the first request: Rejected", "restore requested again after the rejection",
                     "bob approved the restore: Approved", "restored: ", "node decrypts data from before the revocation",
                     "record: ✓ Included", "verify: ✓ The log verifies", "tampering detected:", "golden vectors:", "aws kms linked with the wizard",
                     "tablet layout:", "contrast:", "platform operator:", "auditor:", "node offline:", "portal end to end: passed"] {
            #expect(result.output.contains(step), "missing step \(step): \(result.output)")
        }
        // What the browser did is on the record, by the person who did it.
        let audit = try http(["-H", "Authorization: Bearer \(token)", "\(server.base)/api/v1/audit?operation=link.revoke"])
        let revocations = audit.json["items"] as? [[String: Any]] ?? []
        #expect(revocations.count == 1 && (revocations.first?["actor"] as? [String: Any])?["id"] as? String == "admin", "\(audit.body)")
        // The restore: asked for and carried out by admin, approved by bob; the link came back under epoch 2.
        let votes = try http(["-H", "Authorization: Bearer \(token)", "\(server.base)/api/v1/audit?operation=approval.approve&outcome=success"])
        let voters = (votes.json["items"] as? [[String: Any]] ?? []).compactMap { ($0["actor"] as? [String: Any])?["id"] as? String }
        #expect(voters == ["bob", "bob"], "bob approved the shred and the restore: \(votes.body)")
        let restores = try http(["-H", "Authorization: Bearer \(token)", "\(server.base)/api/v1/audit?operation=link.restore&outcome=success"])
        let restore = (restores.json["items"] as? [[String: Any]] ?? []).first
        #expect((restore?["actor"] as? [String: Any])?["id"] as? String == "admin" && (restore?["details"] as? [String: Any])?["approval"] != nil,
                "\(restores.body)")
        let links = try http(["-H", "Authorization: Bearer \(token)", "\(server.base)/api/v1/tenants/acme/l1-links"])
        let link = (links.json["items"] as? [[String: Any]] ?? []).first
        #expect(link?["state"] as? String == "LINKED" && link?["epoch"] as? Int == 2, "\(links.body)")
    }

    /// The portal over HTTPS on a real host name (cmk.example.test, a certificate from a CA made
    /// here and trusted by the browser as a company CA would be): log in, the session cookie is
    /// Secure, HttpOnly, SameSite=Strict and host-only, it survives a reload and carries a change.
    /// The steps are in portal_tls.py.
    @Test func thePortalWorksOverTLSOnARealHostName() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/chromium"), FileManager.default.isExecutableFile(atPath: "/usr/bin/certutil") else {
            throw SoftHSMFixture.FixtureError(message: "install chromium, chromium-driver and libnss3-tools (Scripts/test does)")
        }
        let pki = NSTemporaryDirectory() + "cmk-portal-tls-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: pki) }
        let ca = try TestCA(directory: pki + "/ca")
        let issued = try ca.issue("gateway", commonName: "cmk.example.test", dnsNames: ["cmk.example.test"])
        let server = try ChildServer(token: "orbital", fixture: SoftHSMFixture.shared, logLevel: "info",
                                     tls: .init(certificate: issued.certificate, key: issued.key, ca: ca.certificatePath, host: "cmk.example.test"))
        defer { server.stopAndRemove() }
        try await waitUntilUp(server.base, curlOptions: server.curlOptions)
        try server.createAdmin()
        let totp = TOTP()
        let code = totp.code(secret: Base32.decode(server.credentials.totpSecret) ?? [], step: totp.step(at: Date()))
        let script = SoftHSMFixture.repositoryRoot + "/Tests/CMKServerTests/portal_tls.py"
        let result = try SoftHSMFixture.run("/usr/bin/env", ["python3", script, "--base", server.base, "--ca", ca.certificatePath, "--home", pki + "/home"],
                                            environment: ["SE_OFFLINE": "true", "PORTAL_USERNAME": "admin", "PORTAL_PASSWORD": ChildServer.adminPassword,
                                                          "PORTAL_TOTP_CODE": code])
        #expect(result.status == 0, "\(result.output)\n\(result.error)")
        for step in ["login page over https on cmk.example.test", "dashboard: admin", "cookie: Secure HttpOnly SameSite=Strict, host-only on cmk.example.test",
                     "session kept across a reload", "a change made with the cookie and the CSRF header: 201", "portal over TLS: passed"] {
            #expect(result.output.contains(step), "missing step \(step): \(result.output)")
        }
        #expect(try admin(server, "GET", "/api/v1/tenants/tls-tenant").status == 401, "curl holds no session: the browser made the tenant")
        let token = try server.automationToken()
        #expect(try http(server.curlOptions + ["-H", "Authorization: Bearer \(token)", "\(server.base)/api/v1/tenants/tls-tenant"]).status == 200)
    }

    /// A person made with `cmk admin create` who has not logged in yet (the browser does, with
    /// the first code): returns the TOTP secret. The password is `ChildServer.adminPassword`.
    func newPerson(_ server: ChildServer, _ username: String, role: String) throws -> String {
        let passwordFile = "\(server.directory)/\(username)-password"
        try Data(ChildServer.adminPassword.utf8).write(to: URL(fileURLWithPath: passwordFile))
        let created = try server.cmk(["admin", "create", "--username", username, "--password-file", passwordFile, "--role", role,
                                      "--config", "\(server.directory)/cmk.json"])
        guard created.status == 0, let line = created.output.split(separator: "\n").first(where: { $0.hasPrefix("TOTP secret") }),
              let secret = line.split(separator: " ").last else {
            throw SoftHSMFixture.FixtureError(message: "cmk admin create \(username): \(created.error)")
        }
        return String(secret)
    }
}
