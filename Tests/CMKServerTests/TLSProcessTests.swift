@testable import CMKServer
import ControlPlane
import Foundation
import Prometheus
import TLSSupport
import TestSupport
import Testing

/// TLS on real processes: `cmk serve` over HTTPS with node client certificates required,
/// `cmk node` reaching it with its own certificate and serving its API over HTTPS, both made
/// by CAs the test creates; certificates replaced under running processes.
@Suite(.serialized) struct TLSProcessTests: ChildProcessTests {
    /// The certificate a TLS server presents to a new connection, as its SHA-256 fingerprint
    /// (Python's ssl module, not curl: this reads what is served, trusting nothing).
    func servedFingerprint(port: Int) throws -> String {
        let script = """
        import hashlib, ssl, sys
        pem = ssl.get_server_certificate(("127.0.0.1", \(port)))
        print(hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest())
        """
        return try SoftHSMFixture.run("/usr/bin/env", ["python3", "-c", script]).output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func gatewayAndNodeSpeakTLSWithNodeClientCertificates() async throws {
        let directory = NSTemporaryDirectory() + "cmk-tls-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ca = try TestCA(directory: directory + "/pki", name: "server-ca")
        let nodesCA = try TestCA(directory: directory + "/pki", name: "nodes-ca")
        let strangers = try TestCA(directory: directory + "/pki", name: "stranger-ca")
        let first = try ca.issue("gateway", commonName: "cmk.example.test", dnsNames: ["cmk.example.test", "localhost"])
        let nodeCertificate = try nodesCA.issue("node-1", commonName: "node-1.eu-1")
        let stranger = try strangers.issue("stranger", commonName: "node-1.eu-1")
        let api = try ca.issue("node-api", commonName: "localhost", dnsNames: ["localhost"])
        let server = try ChildServer(token: "orbital", fixture: SoftHSMFixture.shared, logLevel: "info",
                                     tls: .init(certificate: first.certificate, key: first.key, ca: ca.certificatePath,
                                                nodeClientCA: nodesCA.certificatePath))
        defer { server.stopAndRemove() }
        try await waitUntilUp(server.base, curlOptions: server.curlOptions)

        // HTTPS only, and only to clients that trust the CA.
        let health = try SoftHSMFixture.run("/usr/bin/env", ["curl", "-s", "-D", "-", "-o", "/dev/null"] + server.curlOptions + ["\(server.base)/healthz"])
        #expect(health.output.lowercased().contains("strict-transport-security: max-age=31536000"), "\(health.output)")
        let refusal = try SoftHSMFixture.run("/usr/bin/env", ["curl", "-s", "-D", "-", "-o", "/dev/null"] + server.curlOptions + ["\(server.base)/api/v1/tenants"])
        #expect(refusal.output.hasPrefix("HTTP/1.1 401") && refusal.output.lowercased().contains("strict-transport-security: max-age=31536000"),
                "error answers carry HSTS too: \(refusal.output)")
        #expect(try http(["http://127.0.0.1:\(server.port)/healthz"]).status == 0, "plain HTTP is not answered")
        #expect(try http(["--resolve", "localhost:\(server.port):127.0.0.1", "\(server.base)/healthz"]).status == 0,
                "a client that does not trust the CA does not get through")
        let ready = try http(server.curlOptions + ["\(server.base)/readyz"])
        #expect(ready.status == 200)
        #expect((ready.json["tls"] as? [String: Any])?["fingerprint"] as? String == first.fingerprint)
        #expect(try servedFingerprint(port: server.port) == first.fingerprint)

        // The node API needs a node client certificate from the nodes' CA; browsers' paths do not.
        let bare = try http(server.curlOptions + ["-d", "{}", "\(server.base)/node/v1/enrol"])
        #expect(bare.status == 401 && bare.body.contains("client_certificate_required"), "\(bare.body)")
        let foreign = try http(server.curlOptions + ["--cert", stranger.certificate, "--key", stranger.key, "-d", "{}", "\(server.base)/node/v1/enrol"])
        #expect(foreign.status == 0, "a certificate from another CA fails the handshake")
        let admitted = try http(server.curlOptions + ["--cert", nodeCertificate.certificate, "--key", nodeCertificate.key, "-d", "{}",
                                                      "\(server.base)/node/v1/enrol"])
        #expect(admitted.status == 400, "past TLS, the enrolment itself is checked: \(admitted.body)")

        try server.logIn()
        _ = try linkedTenant(server, "acme")

        // A node without a client certificate is refused at enrolment, with the reason.
        let refused = try ChildNode(gateway: server.base, region: "eu-1", enrolmentToken: try enrolmentToken(server, region: "eu-1"),
                                    in: server.directory, name: "no-cert", extraArguments: ["--gateway-ca", ca.certificatePath])
        try await eventually(20, "the node without a certificate to stop") { !refused.child.isRunning }
        #expect(refused.child.process.terminationStatus != 0)
        #expect(refused.log.contains("client_certificate_required"), "\(refused.log)")

        // With one: enrolled over mTLS, its own API over HTTPS, an application served.
        let node = try ChildNode(gateway: server.base, region: "eu-1", enrolmentToken: try enrolmentToken(server, region: "eu-1"),
                                 in: server.directory, name: "node-1",
                                 extraArguments: ["--gateway-ca", ca.certificatePath, "--client-certificate", nodeCertificate.certificate,
                                                  "--client-key", nodeCertificate.key, "--tls-certificate", api.certificate, "--tls-key", api.key,
                                                  "--tls-reload-seconds", "1"],
                                 issuer: server, apiCA: ca.certificatePath)
        defer { node.child.stop() }
        try await waitUntilUp(node.base, curlOptions: node.curlOptions)
        try await eventually(20, "the node to open its event stream") { try status(node)["connected"] as? Bool == true }
        let sealed = try application(node, "acme", "encrypt", #"{"plaintext":"c2VjcmV0"}"#)
        #expect(sealed.status == 200, "\(sealed.body)")
        let nodePort = Int(node.base.split(separator: ":").last!)!
        #expect(try servedFingerprint(port: nodePort) == api.fingerprint)
        #expect((try status(node)["gatewayClientCertificate"] as? [String: Any])?["fingerprint"] as? String == nodeCertificate.fingerprint)

        // The gateway's certificate renewed under it: SIGHUP, the next connection gets the new
        // one; the node's open stream is not cut and its new connections verify the new one.
        let second = try ca.issue("gateway", commonName: "cmk.example.test", dnsNames: ["cmk.example.test", "localhost"])
        kill(server.process.processIdentifier, SIGHUP)
        try await eventually(10, "the renewed certificate to be served") { try servedFingerprint(port: server.port) == second.fingerprint }
        #expect(server.process.isRunning)
        #expect((try http(server.curlOptions + ["\(server.base)/readyz"]).json["tls"] as? [String: Any])?["reloads"] as? Int == 1)
        #expect(try status(node)["connected"] as? Bool == true)
        let opened = try application(node, "acme", "decrypt", #"{"ciphertext":"\#(sealed.json["ciphertext"] as? String ?? "")"}"#)
        #expect(opened.status == 200 && opened.json["plaintext"] as? String == "c2VjcmV0", "\(opened.body)")

        // A broken replacement (a key of another pair) keeps the good one in service, reported.
        let other = try ca.issue("other", commonName: "other")
        try TestCA.replace(second.key, with: try Data(contentsOf: URL(fileURLWithPath: other.key)), mode: 0o600)
        kill(server.process.processIdentifier, SIGHUP)
        try await eventually(10, "the failed reload to be reported") {
            ((try http(server.curlOptions + ["\(server.base)/readyz"]).json["tls"] as? [String: Any])?["lastError"] as? String)?
                .contains("does not belong") == true
        }
        #expect(try servedFingerprint(port: server.port) == second.fingerprint)
        #expect(try http(server.curlOptions + ["\(server.base)/readyz"]).status == 200, "still ready: a sound certificate is served")
        let metrics = try http(server.curlOptions + ["\(server.base)/metrics"]).body
        #expect(metrics.contains(#"cmk_tls_reloads_total{result="failed"} 1"#), "\(metrics.split(separator: "\n").filter { $0.contains("tls") })")
        #expect(metrics.contains(#"cmk_node_client_certificate_refusals_total"#))

        // The node's API certificate, renewed: picked up by its one-second poll, no signal.
        let renewedAPI = try ca.issue("node-api", commonName: "localhost", dnsNames: ["localhost"])
        try await eventually(10, "the node to serve its renewed certificate") { try servedFingerprint(port: nodePort) == renewedAPI.fingerprint }
        #expect(try application(node, "acme", "encrypt", #"{"plaintext":"c2VjcmV0"}"#).status == 200)

        // No key byte of any pair in the logs.
        for issued in [first, second, nodeCertificate, api, renewedAPI] {
            let pem = try String(contentsOfFile: issued.key, encoding: .utf8)
            let body = pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
            #expect(!server.child.log.contains(body) && !node.log.contains(body))
        }
    }

    /// `cmk node` refuses a plain-HTTP gateway off this machine unless told, and TLS options
    /// that a plain-HTTP gateway would ignore.
    @Test func nodeRefusesPlainHTTPGatewayOffLoopback() async throws {
        let directory = NSTemporaryDirectory() + "cmk-plain-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let cmk = try builtProduct("cmk")
        func node(_ gateway: String, _ extra: [String] = []) throws -> SoftHSMFixture.RunResult {
            try SoftHSMFixture.run(cmk, ["node", "--gateway", gateway, "--region", "eu-1", "--data-dir", directory + "/node"] + extra)
        }
        let off = try node("http://192.0.2.10:8080")
        #expect(off.status == 64 && off.error.contains("plain HTTP off this machine") && off.error.contains("--allow-plain-http"), "\(off.error)")
        #expect(!FileManager.default.fileExists(atPath: directory + "/node"), "nothing is made before the refusal")
        let ca = try node("http://127.0.0.1:1", ["--gateway-ca", "/nonexistent.pem"])
        #expect(ca.status == 64 && ca.error.contains("apply to an https:// gateway"), "\(ca.error)")
        // Told: it goes on, to the next check (no enrolment token yet).
        let allowed = try node("http://192.0.2.10:8080", ["--allow-plain-http"])
        #expect(!allowed.error.contains("plain HTTP") && allowed.error.contains("not enrolled yet"), "\(allowed.error)")
        // Loopback is fine without being told.
        let loopback = try node("http://localhost:1")
        #expect(!loopback.error.contains("plain HTTP") && loopback.error.contains("not enrolled yet"), "\(loopback.error)")
        let missing = try node("https://127.0.0.1:1", ["--gateway-ca", directory + "/missing.pem"])
        #expect(missing.status == 64 && missing.error.contains("cannot read the CA file"), "\(missing.error)")
    }

    /// The certificate files the gateway reads: each problem named, at start and at a reload.
    @Test func certificateFilesAreCheckedWhole() throws {
        let directory = NSTemporaryDirectory() + "cmk-certs-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ca = try TestCA(directory: directory)
        let good = try ca.issue("good", commonName: "localhost", dnsNames: ["localhost"])
        let other = try ca.issue("other", commonName: "other")
        let expired = try ca.issue("expired", commonName: "old", validFor: -60)
        let metrics = PrometheusCollectorRegistry()
        func refusal(_ certificate: String, _ key: String) -> String {
            do {
                _ = try CertificateFiles(certificate: certificate, key: key, metrics: PrometheusCollectorRegistry(), prefix: "t")
                return "accepted"
            } catch { return "\(error)" }
        }
        #expect(refusal(good.certificate, other.key).contains("does not belong"))
        #expect(refusal(expired.certificate, expired.key).contains("expired"))
        #expect(refusal(good.key, good.key).contains("not a PEM certificate chain"))
        try TestCA.replace(directory + "/certificate-as-key", with: try Data(contentsOf: URL(fileURLWithPath: good.certificate)), mode: 0o600)
        #expect(refusal(good.certificate, directory + "/certificate-as-key").contains("not an unencrypted PEM private key"))
        #expect(refusal(directory + "/none.pem", good.key).contains("cannot read the certificate file"))
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: other.key)
        #expect(refusal(other.certificate, other.key).contains("accessible to other users"))

        let files = try CertificateFiles(certificate: good.certificate, key: good.key, metrics: metrics, prefix: "t")
        #expect(files.status.fingerprint == good.fingerprint)
        #expect(files.reload() == .unchanged)
        // Half a certificate on disk (a copy in progress): refused, the pair in service kept.
        let pem = try Data(contentsOf: URL(fileURLWithPath: good.certificate))
        try TestCA.replace(good.certificate, with: pem.prefix(pem.count / 2), mode: 0o644)
        guard case .failed(_, repeated: false) = files.reload() else { Issue.record("a truncated certificate was taken"); return }
        guard case .failed(_, repeated: true) = files.reload() else { Issue.record("the same problem was reported twice"); return }
        #expect(files.pair.fingerprint == good.fingerprint && files.status.lastError != nil)
        let renewed = try ca.issue("good", commonName: "localhost", dnsNames: ["localhost"])
        #expect(files.reload() == .reloaded(fingerprint: renewed.fingerprint))
        #expect(files.status.lastError == nil && files.status.reloads == 1)
        let emitted = String(decoding: metrics.emitToBuffer(), as: UTF8.self)
        #expect(emitted.contains(#"t_tls_reloads_total{result="failed"} 1"#) && emitted.contains(#"t_tls_reloads_total{result="reloaded"} 1"#))

        #expect(ServerTLS.isLoopback("127.0.0.1") && ServerTLS.isLoopback("127.9.8.7") && ServerTLS.isLoopback("localhost")
                && ServerTLS.isLoopback("[::1]") && ServerTLS.isLoopback("::1"))
        #expect(!ServerTLS.isLoopback("192.0.2.1") && !ServerTLS.isLoopback("127.0.0.1.example.com") && !ServerTLS.isLoopback("localhost.evil")
                && !ServerTLS.isLoopback("0.0.0.0") && !ServerTLS.isLoopback("127.0.0.256"))
    }

    /// A bad certificate stops `cmk serve` before it opens anything, with the reason and 64.
    @Test func serveRefusesABadCertificateAtStart() async throws {
        let directory = NSTemporaryDirectory() + "cmk-badtls-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ca = try TestCA(directory: directory)
        let good = try ca.issue("good", commonName: "localhost"), other = try ca.issue("other", commonName: "other")
        try JSONEncoder().encode(SoftHSMFixture.shared.profile("orbital")).write(to: URL(fileURLWithPath: "\(directory)/profile.json"))
        let config = #"{"platform": {"profile": "profile.json"}, "port": 0, "tls": {"certificate": "\#(good.certificate)", "privateKey": "\#(other.key)"}}"#
        try Data(config.utf8).write(to: URL(fileURLWithPath: "\(directory)/cmk.json"))
        let run = try SoftHSMFixture.run(try builtProduct("cmk"), ["serve", "--config", "\(directory)/cmk.json"],
                                         environment: ["SOFTHSM2_CONF": SoftHSMFixture.shared.configPath])
        #expect(run.status == 64 && run.error.contains("tls: the private key in \(other.key) does not belong"), "\(run.error)")
        #expect(!FileManager.default.fileExists(atPath: "\(directory)/cmk.sqlite"), "nothing was opened")
        let unknown = #"{"platform": {"profile": "profile.json"}, "tls": {"certificate": "a", "privateKey": "b", "clientCA": "c"}}"#
        try Data(unknown.utf8).write(to: URL(fileURLWithPath: "\(directory)/cmk.json"))
        let typo = try SoftHSMFixture.run(try builtProduct("cmk"), ["serve", "--config", "\(directory)/cmk.json"])
        #expect(typo.status == 64 && typo.error.contains(#"unknown keys in "tls": clientCA"#), "\(typo.error)")
    }
}
