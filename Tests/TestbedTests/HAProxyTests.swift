import Foundation
import Testing
import TestSupport

/// haproxy in front of stand-in replicas (Python HTTP servers answering `/readyz` and `/who`):
/// requests alternate, a killed replica is taken out by its health check, TLS backends are
/// verified with the CA.
@Suite(.serialized) struct HAProxyTests {
    /// A replica stand-in: `/readyz` 200, `/who` its name, anything else 404. Arguments: port,
    /// name, and optionally certificate and key files (then HTTPS).
    static let backend = """
        import http.server, ssl, sys
        port, name = int(sys.argv[1]), sys.argv[2]
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = {"/readyz": b"ok", "/who": name.encode()}.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            def log_message(self, *arguments):
                pass
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        if len(sys.argv) > 4:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(sys.argv[3], sys.argv[4])
            server.socket = context.wrap_socket(server.socket, server_side=True)
        server.serve_forever()
        """

    static func startBackend(_ name: String, in directory: String, tls: TestCA.Issued? = nil) throws -> LocalServer {
        try LocalServer(python: ["-c", backend, "{port}", name] + (tls.map { [$0.certificate, $0.key] } ?? []),
                        log: "\(directory)/\(name).log")
    }

    /// GET through curl (a new connection each time): the status and the body.
    static func get(_ url: String) throws -> (status: Int, body: String) {
        let result = try SoftHSMFixture.run("/usr/bin/curl", ["-sS", "--max-time", "5", "-w", "\n%{http_code}", url])
        guard result.status == 0, let split = result.output.lastIndex(of: "\n"), let status = Int(result.output[split...].dropFirst()) else {
            throw SoftHSMFixture.FixtureError(message: "curl \(url): \(result.status) \(result.error)")
        }
        return (status, String(result.output[..<split]))
    }

    static func temporaryDirectory() throws -> String {
        let path = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("openkcm-testbed-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func requestsAlternateAndAKilledBackendIsTakenOut() throws {
        let directory = try Self.temporaryDirectory()
        let a = try Self.startBackend("a", in: directory)
        let b = try Self.startBackend("b", in: directory)
        defer { a.stop(); b.stop() }
        let proxy = try HAProxy(backends: [a.port, b.port])
        defer { proxy.stop() }
        #expect(proxy.base == "http://127.0.0.1:\(proxy.port)")

        try blockUntil("haproxy to answer /who") { try Self.get("\(proxy.base)/who").status == 200 }
        let answers = try (0..<6).map { _ in try Self.get("\(proxy.base)/who") }
        #expect(answers.allSatisfy { $0.status == 200 })
        let names = answers.map(\.body)
        #expect(Set(names) == ["a", "b"])
        #expect(zip(names, names.dropFirst()).allSatisfy { $0 != $1 }, "round robin alternates: \(names)")

        a.stop()
        // The health check marks it down (2 failed checks 200 ms apart)...
        try blockUntil("haproxy to mark replica1 down", timeout: .seconds(10)) { proxy.log().contains("replica1 is DOWN") }
        // ...and from then on every request goes to b.
        let after = try (0..<6).map { _ in try Self.get("\(proxy.base)/who") }
        #expect(after.map(\.status) == Array(repeating: 200, count: 6))
        #expect(after.map(\.body) == Array(repeating: "b", count: 6))
        #expect(!proxy.log().contains("replica2 is DOWN"))
    }

    @Test func tlsBackendsAreVerifiedWithTheCA() throws {
        let directory = try Self.temporaryDirectory()
        let ca = try TestCA(directory: "\(directory)/ca")
        let other = try TestCA(directory: "\(directory)/other", name: "other")
        let issued = try ca.issue("replica", commonName: "127.0.0.1", dnsNames: ["localhost"])
        let backend = try Self.startBackend("secure", in: directory, tls: issued)
        defer { backend.stop() }

        let trusting = try HAProxy(backends: [backend.port], options: .init(backendTLS: true, tlsCAFile: ca.certificatePath))
        defer { trusting.stop() }
        try blockUntil("haproxy to reach the TLS backend") { try Self.get("\(trusting.base)/who").body == "secure" }

        // A CA that did not issue the backend's certificate: the check fails, nothing is served.
        let distrusting = try HAProxy(backends: [backend.port], options: .init(backendTLS: true, tlsCAFile: other.certificatePath))
        defer { distrusting.stop() }
        try blockUntil("haproxy to mark the untrusted backend down", timeout: .seconds(10)) { distrusting.log().contains("replica1 is DOWN") }
        #expect(try Self.get("\(distrusting.base)/who").status == 503)
    }

    @Test func theConfigurationRetriesOnlyConnectionFailures() {
        let text = HAProxy.configuration(port: 1, backends: [2, 3])
        #expect(text.contains("retry-on conn-failure"))
        #expect(text.contains("retries 1"))
        #expect(text.contains("option httpchk GET /readyz"))
        #expect(text.contains("default-server inter 200ms fall 2 rise 1"))
        #expect(text.contains("server replica2 127.0.0.1:3 check\n"))
    }
}
