import AsyncHTTPClient
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing
import TestSupport
@testable import CMKServer

@Suite(.serialized) struct PortalTests {
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

    /// End to end in headless Chromium (Debian's, through Selenium): a wrong code shows its
    /// error; the right one opens the dashboard with its empty states; a tenant created
    /// elsewhere appears without a reload.
    @Test func logInAndWatchTheDashboardChangeLiveInChromium() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/chromium"),
              FileManager.default.isExecutableFile(atPath: "/usr/bin/chromedriver") else {
            throw SoftHSMFixture.FixtureError(message: "install chromium and chromium-driver (Scripts/test does)")
        }
        let server = try ChildServer(token: "orbital", fixture: SoftHSMFixture.shared, logLevel: "info")
        defer { server.stopAndRemove() }
        for _ in 0..<150 {
            if (try? SoftHSMFixture.run("/usr/bin/env", ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "\(server.base)/healthz"]))?.output == "200" { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        try server.logIn()   // makes the administrator; the browser logs in with the next code
        let token = try server.automationToken()
        let script = SoftHSMFixture.repositoryRoot + "/Tests/CMKServerTests/portal_e2e.py"
        let result = try SoftHSMFixture.run("/usr/bin/env", ["python3", script, server.base, "admin", ChildServer.adminPassword,
                                                              server.credentials.totpSecret, token],
                                            environment: ["SE_OFFLINE": "true"])
        #expect(result.status == 0, "\(result.output)\n\(result.error)")
        #expect(result.output.contains("tenant appeared live"), "\(result.output)")
    }
}
