import Audit
import AuditFormat
import CMKCore
@testable import CMKServer
import ControlPlane
import Crypto
import Foundation
import Hummingbird
import HummingbirdTesting
@testable import NodeAgent
import NodeProtocol
import Orbital
import Registry
import TestSupport
import Testing

/// Findings of the code review (issue 15), each with the test that failed before its fix.
@Suite(.serialized) struct HardeningTests {
    static func nested(_ depth: Int) -> String { String(repeating: "[", count: depth) + String(repeating: "]", count: depth) }

    @Test func nestingIsMeasuredOutsideStringsOnly() {
        #expect(JSONNesting.depth(of: Array(#"{"a":[1,{"b":[]}]}"#.utf8)) == 4)
        #expect(JSONNesting.depth(of: Array(#"{"a":"[[[[{{{{\"]]"}"#.utf8)) == 1)
        #expect(JSONNesting.depth(of: Array("1".utf8)) == 0)
        #expect(!JSONNesting.isAcceptable(Array(Self.nested(33).utf8)) && JSONNesting.isAcceptable(Array(Self.nested(32).utf8)))
        // The strict parser bounds its own recursion too (the audit verifier reads exports with it).
        #expect(throws: CanonicalJSONError.self) { try CanonicalJSON.parse(Array(Self.nested(100_000).utf8)) }
        #expect(throws: Never.self) { try CanonicalJSON.parse(Array(Self.nested(32).utf8)) }
    }

    /// Before: a witness directory that did not exist made every checkpoint copy fail in the
    /// background, unseen; the server said it was ready.
    @Test func aWitnessDirectoryThatCannotTakeCopiesIsReportedByReadiness() async throws {
        var harness = try ServerHarness()
        let witness = harness.directory + "/witness"
        harness.configuration.audit.witnessDirectory = witness
        try await harness.test { client, gateway in
            let missing = try await client.execute(uri: "/readyz", method: .get)
            #expect(missing.status == .serviceUnavailable && missing.text.contains("does not exist"), "\(missing.text)")
            try Data("not a directory".utf8).write(to: URL(fileURLWithPath: witness))
            #expect(try await client.execute(uri: "/readyz", method: .get).text.contains("not a directory"))
            try FileManager.default.removeItem(atPath: witness)
            try FileManager.default.createDirectory(atPath: witness, withIntermediateDirectories: true)
            let ready = try await client.execute(uri: "/readyz", method: .get)
            #expect(ready.status == .ok, "\(ready.text)")
            _ = try await client.execute(uri: "/api/v1/tenants", method: .post, headers: ServerHarness.auth,
                                         body: ServerHarness.body(#"{"id":"w","name":"W"}"#))
            let signed = try await gateway.audit.checkpoint()
            #expect(FileManager.default.fileExists(atPath: "\(witness)/\(signed.checkpoint.size).checkpoint"))
        }
    }

    /// A deeply nested acknowledgement statement crashed a debug build (the canonical parser
    /// recursed once per level); deeply nested bodies went to recursive decoders the same way.
    @Test func deeplyNestedBodiesAreRefusedAndTheServerKeepsRunning() async throws {
        try await ServerHarness().test { client, _ in
            let deep = Self.nested(20_000)
            let statement = String(decoding: try JSONSerialization.data(withJSONObject: ["statement": deep, "signature": Data(count: 64).base64EncodedString()]),
                                   as: UTF8.self)
            let ack = try await client.execute(uri: "/node/v1/acks", method: .post, headers: [.contentType: "application/json"],
                                               body: ServerHarness.body(statement))
            #expect(ack.status == .unprocessableContent && ack.errorCode == "invalid_ack", "\(ack.text)")
            for uri in ["/api/v1/tenants", "/api/v1/session", "/api/v1/approvals"] {
                let refused = try await client.execute(uri: uri, method: .post, headers: ServerHarness.auth,
                                                       body: ServerHarness.body(#"{"id":"x","name":"# + Self.nested(20_000) + "}"))
                #expect(refused.status == .badRequest, "\(uri): \(refused.text)")
                #expect(refused.text.contains("nests deeper"), "\(uri): \(refused.text)")
            }
            #expect(try await client.execute(uri: "/api/v1/tenants", method: .get, headers: ServerHarness.auth).status == .ok)
        }
    }
}

/// Logins and step-ups under attack: parallel guesses, floods, long names, code guessing.
@Suite(.serialized) struct LoginHardeningTests {
    static let plain: HTTPFields = [.contentType: "application/json"]

    static func login(_ client: any TestClientProtocol, _ body: String) async throws -> TestResponse {
        try await client.execute(uri: "/api/v1/session", method: .post, headers: plain, body: ServerHarness.body(body))
    }

    static func records(_ gateway: Gateway, _ operation: String) throws -> [AuditRecord] {
        try gateway.audit.store.records(AuditQuery(operation: operation, limit: 1000)).records
    }

    /// Before: every parallel attempt passed the lock check before any failure was counted,
    /// so 20 guesses at once were 20 password checks against a threshold of 5.
    @Test func parallelGuessesCannotOutrunTheLockout() async throws {
        try await ServerHarness().test { client, gateway in
            let ana = try await TestUser.make(gateway, "ana", role: .securityAdmin)
            let statuses = try await withThrowingTaskGroup(of: HTTPResponse.Status.self) { group in
                for _ in 0..<20 { group.addTask { try await Self.login(client, ana.loginBody(password: "wrong password guess")).status } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == .unauthorized }.count <= 5, "\(statuses)")
            #expect(statuses.allSatisfy { $0 == .unauthorized || $0 == .tooManyRequests })
            let checked = try Self.records(gateway, "auth.login").filter { $0.errorCode == "invalid_credentials" }
            #expect(checked.count <= 5)
            #expect(try await gateway.registry.account(username: "ana")?.failedLogins ?? 0 <= 5)
        }
    }

    /// Before: each refused attempt of a locked address was one audit record, without bound.
    @Test func aFloodOfRefusedLoginsWritesABoundedNumberOfRecords() async throws {
        try await ServerHarness().test { client, gateway in
            let ana = try await TestUser.make(gateway, "ana", role: .securityAdmin)
            for _ in 0..<5 { _ = try await Self.login(client, ana.loginBody(password: "wrong password guess")) }
            for index in 0..<300 {
                let refused = try await Self.login(client, #"{"username":"user\#(index)","password":"p","totp":"000000"}"#)
                #expect(refused.status == .tooManyRequests)
            }
            let logins = try Self.records(gateway, "auth.login")
            #expect(logins.count <= 12, "\(logins.count) records for 305 attempts")
            #expect(try Self.records(gateway, "auth.lockout").count >= 1)
        }
    }

    /// Counted, not lost: the next record admitted carries how many were not written.
    @Test func suppressedRecordsAreCountedIntoTheNextOne() {
        var limiter = FailureRecords()
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        #expect(limiter.admit(key: "address:a", at: start) == 0)
        for second in 1...30 { #expect(limiter.admit(key: "address:a", at: start.addingTimeInterval(Double(second))) == nil) }
        #expect(limiter.admit(key: "address:a", at: start.addingTimeInterval(61)) == 30)
        // Overall, at most `perSecond` a second, whatever the keys.
        let later = start.addingTimeInterval(200)
        let admitted = (0..<100).compactMap { limiter.admit(key: "address:\($0)", at: later) }
        #expect(admitted.count == FailureRecords.perSecond)
        #expect(limiter.admit(key: nil, at: later.addingTimeInterval(1)) == 100 - FailureRecords.perSecond)
    }

    /// Before: a 10,000-character username went into the audit record as the actor.
    @Test func aUsernameThatCannotBeAnAccountIsRecordedAsInvalid() async throws {
        try await ServerHarness().test { client, gateway in
            let long = String(repeating: "x", count: 10_000)
            let refused = try await Self.login(client, #"{"username":"\#(long)","password":"p","totp":"000000"}"#)
            #expect(refused.status == .unauthorized)
            let record = try #require(try Self.records(gateway, "auth.login").last)
            #expect(record.actor.id == "(invalid)" && record.details["usernameLength"] == "10000")
            let export = try gateway.audit.store.records(AuditQuery(limit: 1000)).records.map(\.actor.id)
            #expect(!export.contains(long))
        }
    }

    /// Before: wrong step-up codes were not counted, so a stolen session could guess codes.
    @Test func guessingStepUpCodesLocksTheAccountAndAnUnlockEndsIt() async throws {
        try await ServerHarness().test { client, gateway in
            var ana = try await TestUser.make(gateway, "ana", role: .securityAdmin)
            try await ana.logIn(client)
            var statuses: [HTTPResponse.Status] = []
            for _ in 0..<6 {
                statuses.append(try await client.execute(uri: "/api/v1/session/step-up", method: .post, headers: ana.headers,
                                                         body: ServerHarness.body(#"{"totp":"000000"}"#)).status)
            }
            #expect(statuses.prefix(4).allSatisfy { $0 == .unauthorized } && statuses.suffix(2).allSatisfy { $0 == .tooManyRequests }, "\(statuses)")
            // Locked for login too, even with the right code.
            #expect(try await Self.login(client, ana.loginBody(code: ana.code(1))).status == .tooManyRequests)
            // A security administrator unlocks; the count starts again.
            let unlocked = try await client.execute(uri: "/api/v1/users/ana/unlock", method: .post, headers: ServerHarness.auth)
            #expect(unlocked.status == .ok, "\(unlocked.text)")
            #expect(try await gateway.registry.account(username: "ana")?.failedLogins == 0)
            try await ana.logIn(client, offset: 1)
            // Operators cannot unlock security administrators.
            #expect(try await client.execute(uri: "/api/v1/users/ana/unlock", method: .post, headers: ServerHarness.operatorAuth).status == .forbidden)
        }
    }

    /// Before: every refused step-up was one audit record, so a session holder could write
    /// records without bound once the account was locked.
    @Test func aFloodOfRefusedStepUpsWritesABoundedNumberOfRecords() async throws {
        try await ServerHarness().test { client, gateway in
            var ana = try await TestUser.make(gateway, "ana", role: .securityAdmin)
            try await ana.logIn(client)
            for _ in 0..<200 {
                let refused = try await client.execute(uri: "/api/v1/session/step-up", method: .post, headers: ana.headers,
                                                       body: ServerHarness.body(#"{"totp":"000000"}"#))
                #expect(refused.status == .unauthorized || refused.status == .tooManyRequests)
            }
            let records = try Self.records(gateway, "auth.step_up")
            #expect(records.filter { $0.errorCode == "invalid_credentials" }.count <= 5)
            #expect(records.filter { $0.errorCode == "locked" }.count == 1, "one record a minute for a locked account: \(records.count)")
        }
    }

    @Test func aSuccessResetsTheFailureCount() async throws {
        try await ServerHarness().test { client, gateway in
            var ana = try await TestUser.make(gateway, "ana", role: .securityAdmin)
            for _ in 0..<3 { _ = try await Self.login(client, ana.loginBody(password: "wrong password guess")) }
            try await ana.logIn(client)
            #expect(try await gateway.registry.account(username: "ana")?.failedLogins == 0)
            for _ in 0..<4 { #expect(try await Self.login(client, ana.loginBody(password: "wrong password guess")).status == .unauthorized) }
            try await ana.logIn(client, offset: 1)
        }
    }
}

/// Listeners and streams under load: idle and trickling connections, stream caps.
@Suite(.serialized) struct ListenerHardeningTests: ChildProcessTests {
    /// Seconds until the server closes a connection that sent `prefix` and then nothing.
    func secondsUntilClosed(port: Int, sending prefix: String) throws -> Double {
        let result = try SoftHSMFixture.run("/usr/bin/env", ["python3", "-c", """
            import socket, sys, time
            s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
            s.sendall(sys.argv[2].encode())
            start = time.time()
            s.settimeout(30)
            try:
                while s.recv(4096): pass
            except Exception:
                print(-1); sys.exit()
            print(time.time() - start)
            """, String(port), prefix])
        return Double(result.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    /// Before: a connection that sent nothing, or half a request head, stayed open for ever.
    @Test func idleAndTricklingConnectionsAreClosed() async throws {
        let server = try ChildServer(token: "logs", fixture: SoftHSMFixture.shared, logLevel: "info", extraConfiguration: #""idleTimeoutSeconds": 5"#)
        defer { server.stopAndRemove() }
        try await waitUntilUp(server.base)
        let silent = try secondsUntilClosed(port: server.port, sending: "")
        #expect(silent >= 4 && silent < 15, "closed after \(silent) s")
        let trickled = try secondsUntilClosed(port: server.port, sending: "GET /api/v1/tenants HTTP/1.1\r\nHost: x\r\n")
        #expect(trickled >= 4 && trickled < 15, "closed after \(trickled) s")
        #expect(try http(["\(server.base)/healthz"]).status == 200, "and it keeps serving")
    }

    /// Before: any number of event streams per node (or stolen node key) and per caller.
    @Test func eventStreamsAreCappedPerNodeAndPerCaller() {
        let broadcaster = Dispatcher()
        var open = (0..<Dispatcher.maxPerNode).compactMap { _ in broadcaster.subscribe(node: "node-a") }
        #expect(open.count == Dispatcher.maxPerNode)
        #expect(broadcaster.subscribe(node: "node-a") == nil)
        #expect(broadcaster.subscribe(node: "node-b") != nil, "other nodes are not held up")
        open.removeLast().end()
        #expect(broadcaster.subscribe(node: "node-a") != nil, "a closed stream frees its place")
        let feed = DashboardFeed()
        let tabs = (0..<DashboardFeed.maxPerCaller).compactMap { _ in feed.subscribe(for: "ana") }
        #expect(tabs.count == DashboardFeed.maxPerCaller && feed.subscribe(for: "ana") == nil && feed.subscribe(for: "bob") != nil)
        _ = open
    }
}

/// Accounts disabled and removed; host actions in the audit log.
@Suite(.serialized) struct AccountLifecycleTests: ChildProcessTests {
    /// Before: an account could be neither disabled nor removed; only its sessions ended.
    @Test func aDisabledAccountCannotLogInOrUseItsSessionAndARemovedOneIsGone() async throws {
        try await ServerHarness().test { client, gateway in
            var ana = try await TestUser.make(gateway, "ana", role: .securityAdmin)
            try await ana.logIn(client)
            let disabled = try await client.execute(uri: "/api/v1/users/ana/disable", method: .post, headers: ServerHarness.auth)
            #expect(try disabled.status == .ok && disabled.json()["disabledAt"] as? String != nil, "\(disabled.text)")
            #expect(try await client.execute(uri: "/api/v1/session", method: .get, headers: ana.headers).status == .unauthorized)
            let login = try await client.execute(uri: "/api/v1/session", method: .post, headers: [.contentType: "application/json"],
                                                 body: ServerHarness.body(ana.loginBody(code: ana.code(1))))
            #expect(login.status == .unauthorized)
            #expect(try gateway.audit.store.records(AuditQuery(operation: "auth.login")).records.last?.errorCode == "account_disabled")
            #expect(try await client.execute(uri: "/api/v1/users/ana/enable", method: .post, headers: ServerHarness.auth).status == .ok)
            try await ana.logIn(client, offset: 1)
            // Never oneself; never the last enabled security administrator.
            #expect(try await client.execute(uri: "/api/v1/users/ana/disable", method: .post, headers: ana.headers).status == .conflict)
            let harness = try #require(try await gateway.registry.account(username: ServerHarness.adminName))
            _ = try await gateway.registry.setAccountDisabled(id: try #require(try await gateway.registry.account(username: "ana")).id, true)
            await #expect(throws: RegistryError.self) { try await gateway.registry.setAccountDisabled(id: harness.id, true) }
            _ = try await gateway.registry.setAccountDisabled(id: try #require(try await gateway.registry.account(username: "ana")).id, false)
            // An operator cannot disable a security administrator.
            #expect(try await client.execute(uri: "/api/v1/users/ana/disable", method: .post, headers: ServerHarness.operatorAuth).status == .forbidden)
            #expect(try await client.execute(uri: "/api/v1/users/ana", method: .delete, headers: ServerHarness.auth).status == .noContent)
            #expect(try await gateway.registry.account(username: "ana") == nil)
            #expect(try await client.execute(uri: "/api/v1/users/ana", method: .delete, headers: ServerHarness.auth).status == .notFound)
            #expect(try gateway.audit.store.records(AuditQuery(operation: "user.delete")).records.count == 1)
        }
    }

    /// Before: `cmk admin` made accounts and tokens beside the server with no audit record.
    @Test func hostActionsReachTheAuditLog() async throws {
        let server = try ChildServer(token: "logs", fixture: SoftHSMFixture.shared, logLevel: "info")
        defer { server.stopAndRemove() }
        try await waitUntilUp(server.base)
        try server.logIn()   // runs `cmk admin create` for the administrator
        let token = try server.automationToken(role: "auditor")
        #expect(try server.cmk(["admin", "disable", "--username", "admin", "--config", "\(server.directory)/cmk.json"]).status == 65,
                "the last security administrator stays enabled")
        try await eventually(15, "the host actions in the audit log") {
            let records = try http(["-H", "Authorization: Bearer \(token)", "\(server.base)/api/v1/audit?actor=cli&limit=50"]).json["items"] as? [[String: Any]] ?? []
            let operations = Set(records.compactMap { $0["operation"] as? String })
            return operations.isSuperset(of: ["user.create", "token.create"])
                && records.allSatisfy { (($0["details"] as? [String: Any])?["hostUser"] as? String)?.contains("@") == true }
        }
    }
}

/// The gateway's answers to nodes are authenticated (issue 15).
@Suite(.serialized) struct SignedAnswerTests: ChildProcessTests {
    /// Before: an unseal answer carried no signature; an on-path attacker could replay an old one
    /// (with its lease) or forge one.
    @Test func anUnsealAnswerIsBoundToItsRequestsNonceAndEventsAndHeartbeatsAreSigned() async throws {
        try await ServerHarness().test { client, gateway in
            _ = try await client.execute(uri: "/api/v1/tenants", method: .post, headers: ServerHarness.auth, body: ServerHarness.body(#"{"id":"signed","name":"S"}"#))
            _ = try await client.execute(uri: "/api/v1/tenants/signed/l1-links", method: .post, headers: ServerHarness.auth,
                                         body: ServerHarness.body(#"{"provider":"pkcs11","keystore":"hsm","key":"pkcs11:object=l1"}"#))
            let issued = try await client.execute(uri: "/api/v1/nodes/enrolments", method: .post, headers: ServerHarness.operatorAuth,
                                                  body: ServerHarness.body(#"{"region":"eu-west-1"}"#))
            var node = SimulatedNode()
            let token = try #require(try issued.json()["token"] as? String)
            let enrolled = try await client.execute(uri: "/node/v1/enrol", method: .post, headers: [.contentType: "application/json"],
                                                    body: ServerHarness.body(try node.enrolBody(token: token)))
            let enrolment = try enrolled.json()
            node.id = try #require(enrolment["id"] as? String)
            let keyText = try #require(enrolment["gatewayKey"] as? String, "the key to pin comes with the enrolment")
            let keyBytes = try #require(Data(base64Encoded: keyText))
            let key = try Curve25519.Signing.PublicKey(rawRepresentation: keyBytes)
            let body = #"{"tenant":"signed"}"#, nonce = "0123456789abcdef0123456789abcdef"
            let answer = try await client.execute(uri: "/node/v1/unseal", method: .post,
                                                  headers: try node.headers("POST", "/node/v1/unseal", body: body, nonce: nonce), body: ServerHarness.body(body))
            let json = try answer.json()
            let signatureText = try #require(json["signature"] as? String)
            let signature = try #require(Data(base64Encoded: signatureText))
            func statement(_ nonce: String) throws -> [UInt8] {
                try GatewayStatement.unseal(node: node.id, tenant: "signed", l2Ref: json["l2Ref"] as? String ?? "", link: json["link"] as? String ?? "",
                                            epoch: json["epoch"] as? Int ?? 0, leaseSeconds: json["leaseSeconds"] as? Int ?? 0, nonce: nonce,
                                            encapsulatedKey: Data(base64Encoded: json["encapsulatedKey"] as? String ?? "") ?? Data(),
                                            ciphertext: Data(base64Encoded: json["ciphertext"] as? String ?? "") ?? Data())
            }
            #expect(key.isValidSignature(signature, for: try statement(nonce)))
            #expect(!key.isValidSignature(signature, for: try statement("another request's nonce0000000000")), "a replay to another request fails")

            // Events carry the gateway's signature; a changed one does not verify.
            let events = try await client.execute(uri: "/node/v1/events?after=0", method: .get, headers: try node.headers("GET", "/node/v1/events?after=0", body: ""))
            let items = try #require(try events.json()["items"] as? [[String: Any]])
            _ = try await gateway.revoke(tenantID: "signed", linkID: json["link"] as? String ?? "", expectedVersion: nil)
            let after = try await client.execute(uri: "/node/v1/events?after=0", method: .get, headers: try node.headers("GET", "/node/v1/events?after=0", body: ""))
            let revocation = try #require((try after.json()["items"] as? [[String: Any]])?.first { $0["type"] as? String == "l1.revoked" })
            var event = GatewayClient.Event(sequence: revocation["sequence"] as? Int64 ?? Int64(revocation["sequence"] as? Int ?? 0),
                                            id: revocation["id"] as? String ?? "", type: "l1.revoked", tenant: "signed",
                                            link: revocation["link"] as? String, payload: revocation["payload"] as? String,
                                            signature: revocation["signature"] as? String)
            #expect(event.isSigned(by: key))
            event.tenant = "another"
            #expect(!event.isSigned(by: key), "an altered event is refused")
            #expect(items.count <= 1)

            // A heartbeat saying a later sequence than received means events were held back.
            let frame = EventFrame.heartbeat(node: node.id, nonce: nonce, sequence: 7, signer: gateway.appCredentialKey)
            let data = String(String(buffer: frame).split(separator: "\n")[1].dropFirst("data: ".count))
            #expect(throws: Never.self) { try GatewayClient.checkHeartbeat(data, node: node.id, nonce: nonce, key: key, received: 7) }
            #expect(throws: GatewayClient.Failure.self) { try GatewayClient.checkHeartbeat(data, node: node.id, nonce: nonce, key: key, received: 6) }
            #expect(throws: GatewayClient.Failure.self) { try GatewayClient.checkHeartbeat(data, node: node.id, nonce: "other stream", key: key, received: 7) }
        }
    }

    /// Before: leases lived in memory only; after a gateway restart the revocation view and its
    /// exposure bound forgot the keys nodes still held.
    @Test func leasesSurviveAGatewayRestart() async throws {
        let server = try ChildServer(token: "orbital", fixture: SoftHSMFixture.shared, logLevel: "info")
        var nodes: [ChildNode] = []
        defer { for node in nodes { node.child.stop(SIGKILL) }; server.stopAndRemove() }
        try await waitUntilUp(server.base)
        try server.logIn()
        _ = try linkedTenant(server, "leased")
        nodes.append(try await startNode(server, region: "eu-west-1", name: "holder"))
        #expect(try application(nodes[0], "leased", "encrypt", #"{"plaintext":"aGk="}"#).status == 200)
        nodes[0].child.stop(SIGKILL)   // it will not renew or report: only the stored lease says it may hold the key
        server.child.stop(SIGKILL)
        try server.child.start()
        try await waitUntilUp(server.base)
        try server.logIn()
        let listed = try admin(server, "GET", "/api/v1/nodes").json["items"] as? [[String: Any]] ?? []
        #expect(listed.first?["leaseExpiresAt"] as? String != nil, "\(listed)")
    }
}
