import CMKCore
import Foundation
import Testing
import TestSupport

/// The gRPC Management API from outside: a real `cmk serve` with its gRPC listener, a real
/// `cmk node`, and Python's grpcio as the client (grpc_journey.py compiles the repository's
/// .proto files with grpcio-tools and drives the journey).
@Suite(.serialized) struct GRPCProcessTests: ChildProcessTests {
    /// The port the server chose for gRPC (`grpcPort: 0`), from its log line `serving gRPC`.
    func grpcPort(_ server: ChildServer) async throws -> Int {
        var port: Int?
        try await eventually(20, "the gRPC listener to start") {
            let log = String(decoding: server.logs, as: UTF8.self)
            guard let range = log.range(of: #"grpc\.port=(\d+)"#, options: .regularExpression) else { return false }
            port = Int(log[range].dropFirst("grpc.port=".count))
            return port != nil
        }
        return port!
    }

    /// Link, unseal through a node, revoke while streaming progress to LOCKED (signatures
    /// verified by the client), restore with a second person's approval, a revocation a
    /// stopped node cannot acknowledge (the stream ends at the deadline), bad input (codes and
    /// our details, never UNKNOWN), health and reflection, the audit log exported as a stream
    /// and verified by `cmk audit verify`, and a REST caller seeing the same state throughout.
    @Test func aGRPCClientWrittenBySomeoneElseDrivesTheWholeJourney() async throws {
        let server = try ChildServer(token: "grpc", fixture: SoftHSMFixture.shared, logLevel: "info",
                                     environment: ["CMK_STREAM_HEARTBEAT_SECONDS": "1"], extraConfiguration: #""grpcPort": 0"#)
        var node: ChildNode?
        defer { node?.child.stop(SIGKILL); server.stopAndRemove() }
        try await waitUntilUp(server.base)
        let port = try await grpcPort(server)
        try server.logIn()
        let bob = try server.person("bob")
        let adminToken = try server.automationToken()
        let auditorToken = try server.automationToken(role: "auditor")
        let operatorToken = try server.operatorToken()
        node = try await startNode(server, region: "eu-central-1", name: "node")

        let script = SoftHSMFixture.repositoryRoot + "/Tests/CMKServerTests/grpc_journey.py"
        let result = try SoftHSMFixture.run("/usr/bin/env", [
            "python3", script, "--grpc", "127.0.0.1:\(port)", "--base", server.base, "--node", node!.base,
            "--node-pid", String(node!.child.process.processIdentifier), "--cmk", try builtProduct("cmk"),
            "--protos", SoftHSMFixture.repositoryRoot + "/Protos",
        ], environment: [
            "CMK_ADMIN_TOKEN": adminToken, "CMK_AUDITOR_TOKEN": auditorToken, "CMK_OPERATOR_TOKEN": operatorToken,
            "CMK_ADMIN_COOKIE": server.credentials.cookie, "CMK_ADMIN_CSRF": server.credentials.csrf,
            "CMK_BOB_COOKIE": bob.cookie, "CMK_BOB_CSRF": bob.csrf,
        ])
        #expect(result.status == 0, "\(result.output)\n\(result.error)")
        for line in ["compiled", "health: SERVING", "reflection:", "auth: no credential UNAUTHENTICATED", "tenants: created, retried, updated",
                     "linked over gRPC", "node unsealed L2", "nodes: one connected", "locked: LOCKED", "REST sees the same revocation",
                     "restored: LINKED, epoch 2", "deadline: DEADLINE_EXCEEDED", "bad input:", "audit export:", "grpc journey: passed"] {
            #expect(result.output.contains(line), "missing step \(line): \(result.output)")
        }
        // The server kept running, and no credential reached its log.
        #expect(try http(["\(server.base)/healthz"]).status == 200)
        let log = String(decoding: server.logs, as: UTF8.self)
        for secret in [adminToken, auditorToken, operatorToken, server.credentials.cookie, server.credentials.csrf, bob.cookie] {
            #expect(!log.contains(secret), "a credential is in the server log")
        }
        #expect(!log.contains("UNKNOWN"), "no call ended UNKNOWN")
    }

    /// gRPC over TLS with the listener's certificate: a client that trusts the CA gets through,
    /// a plaintext client and one that does not trust the CA do not.
    @Test func grpcSpeaksTLSWithTheListenersCertificate() async throws {
        let directory = NSTemporaryDirectory() + "cmk-grpc-tls-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ca = try TestCA(directory: directory + "/pki", name: "grpc-ca")
        let issued = try ca.issue("gateway", commonName: "localhost", dnsNames: ["localhost"])
        let server = try ChildServer(token: "grpc", fixture: SoftHSMFixture.shared, logLevel: "info",
                                     extraConfiguration: #""grpcPort": 0"#,
                                     tls: .init(certificate: issued.certificate, key: issued.key, ca: ca.certificatePath))
        defer { server.stopAndRemove() }
        try await waitUntilUp(server.base, curlOptions: server.curlOptions)
        let port = try await grpcPort(server)
        let script = """
        import grpc, sys
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        def check(channel):
            try:
                return health_pb2.HealthCheckResponse.ServingStatus.Name(
                    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status)
            except grpc.RpcError as error:
                return error.code().name
        trusted = grpc.ssl_channel_credentials(open(sys.argv[2], 'rb').read())
        print("trusted", check(grpc.secure_channel('localhost:' + sys.argv[1], trusted)))
        print("plaintext", check(grpc.insecure_channel('127.0.0.1:' + sys.argv[1])))
        print("untrusted", check(grpc.secure_channel('localhost:' + sys.argv[1], grpc.ssl_channel_credentials())))
        """
        let result = try SoftHSMFixture.run("/usr/bin/env", ["python3", "-c", script, String(port), ca.certificatePath])
        #expect(result.output.contains("trusted SERVING"), "\(result.output) \(result.error)")
        #expect(result.output.contains("plaintext UNAVAILABLE"), "\(result.output)")
        #expect(result.output.contains("untrusted UNAVAILABLE"), "\(result.output)")
    }
}
