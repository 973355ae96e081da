import Audit
import AuditFormat
@testable import CMKServer
import ControlPlane
import Foundation
import Hummingbird
import HummingbirdTesting
import KSI
import PKCS11
import Registry
import TestSupport
import Testing

@Suite(.serialized) struct ManagementAPITests {
    let harness: ServerHarness

    init() throws { harness = try ServerHarness() }

    static let auth = ServerHarness.auth
    static func createTenant(_ client: any TestClientProtocol, _ id: String) async throws {
        let response = try await client.execute(uri: "/api/v1/tenants", method: .post, headers: auth,
                                                body: ServerHarness.body(#"{"id":"\#(id)","name":"Tenant \#(id)"}"#))
        #expect(response.status == .created, "\(response.text)")
    }

    static func handshake(_ client: any TestClientProtocol, tenant: String, keystore: String = "hsm", key: String = "pkcs11:object=l1") async throws -> TestResponse {
        try await client.execute(uri: "/api/v1/tenants/\(tenant)/l1-links", method: .post, headers: auth,
                                 body: ServerHarness.body(#"{"provider":"pkcs11","keystore":"\#(keystore)","key":"\#(key)"}"#))
    }

    @Test func healthIsOpenAndTheAPIIsNot() async throws {
        try await harness.test { client, _ in
            #expect(try await client.execute(uri: "/healthz", method: .get).status == .ok)
            #expect(try await client.execute(uri: "/readyz", method: .get).status == .ok)
            #expect(try await client.execute(uri: "/metrics", method: .get).status == .ok)
            let anonymous = try await client.execute(uri: "/api/v1/tenants", method: .get)
            #expect(anonymous.status == .unauthorized)
            let body = try anonymous.json()["error"] as? [String: Any]
            #expect(body?["code"] as? String == "unauthenticated")
            #expect((body?["requestId"] as? String)?.isEmpty == false)
            #expect(anonymous.headers[.init("X-Request-Id")!] != nil)
            let wrong = try await client.execute(uri: "/api/v1/tenants", method: .get, headers: [.authorization: "Bearer nope"])
            #expect(wrong.status == .unauthorized)
        }
    }

    @Test func tenantsCreateListGetDelete() async throws {
        try await harness.test { client, _ in
            for index in 0..<5 { try await Self.createTenant(client, "t-\(index)") }
            let duplicate = try await client.execute(uri: "/api/v1/tenants", method: .post, headers: Self.auth,
                                                     body: ServerHarness.body(#"{"id":"t-0","name":"again"}"#))
            #expect(duplicate.status == .conflict)
            let bad = try await client.execute(uri: "/api/v1/tenants", method: .post, headers: Self.auth,
                                               body: ServerHarness.body(#"{"id":"Bad Id!","name":"x"}"#))
            #expect(bad.status == .badRequest)
            let malformed = try await client.execute(uri: "/api/v1/tenants", method: .post, headers: Self.auth, body: ServerHarness.body("{"))
            #expect(malformed.status == .badRequest && malformed.errorCode == "invalid_input")

            let first = try await client.execute(uri: "/api/v1/tenants?limit=2", method: .get, headers: Self.auth)
            let page = try first.json()
            #expect((page["items"] as? [Any])?.count == 2)
            let cursor = try #require(page["nextCursor"] as? String)
            let second = try await client.execute(uri: "/api/v1/tenants?limit=2&cursor=\(cursor)", method: .get, headers: Self.auth)
            #expect(((try second.json())["items"] as? [[String: Any]])?.first?["id"] as? String == "t-2")
            #expect(try await client.execute(uri: "/api/v1/tenants?limit=0", method: .get, headers: Self.auth).status == .badRequest)

            let get = try await client.execute(uri: "/api/v1/tenants/t-1", method: .get, headers: Self.auth)
            #expect(get.status == .ok && get.headers[.eTag] == "\"1\"")
            var stale = Self.auth
            stale[.ifMatch] = "\"9\""
            #expect(try await client.execute(uri: "/api/v1/tenants/t-1", method: .delete, headers: stale).status == .preconditionFailed)
            #expect(try await client.execute(uri: "/api/v1/tenants/t-1", method: .delete, headers: Self.auth).status == .noContent)
            #expect(try await client.execute(uri: "/api/v1/tenants/t-1", method: .get, headers: Self.auth).status == .notFound)
        }
    }

    @Test func fullHandshakeRevokeAndRestore() async throws {
        try await harness.test { client, gateway in
            try await Self.createTenant(client, "acme")
            let created = try await Self.handshake(client, tenant: "acme")
            #expect(created.status == .created, "\(created.text)")
            let link = try created.json()
            let linkID = try #require(link["id"] as? String)
            #expect(link["state"] as? String == "LINKED")
            #expect((link["l2"] as? [String: Any])?["state"] as? String == "ACTIVE")
            #expect((link["lastProbe"] as? [String: Any])?["passed"] as? Bool == true)
            #expect(!created.text.contains("sovereign") && !created.text.contains("binding"), "bindings are never returned")

            // A second active link for the same tenant is refused.
            #expect(try await Self.handshake(client, tenant: "acme").status == .conflict)
            // Tenant deletion is refused while the link is active.
            try await Self.createTenant(client, "other")
            #expect(try await client.execute(uri: "/api/v1/tenants/acme", method: .delete, headers: Self.auth).status == .conflict)
            // Tenant isolation: the link does not exist under another tenant.
            #expect(try await client.execute(uri: "/api/v1/tenants/other/l1-links/\(linkID)", method: .get, headers: Self.auth).status == .notFound)
            #expect(try await client.execute(uri: "/api/v1/tenants/other/l1-links/\(linkID)/revoke", method: .post, headers: Self.auth).status == .notFound)

            let probed = try await client.execute(uri: "/api/v1/tenants/acme/l1-links/\(linkID)/probe", method: .post, headers: Self.auth)
            #expect(probed.status == .ok)
            #expect(probed.headers[.eTag] == "\"2\"")

            // The kill-switch, with a stale ETag first: nothing changes.
            var stale = Self.auth
            stale[.ifMatch] = "\"1\""
            let refused = try await client.execute(uri: "/api/v1/tenants/acme/l1-links/\(linkID)/revoke", method: .post, headers: stale)
            #expect(refused.status == .preconditionFailed)
            #expect(try await gateway.registry.link(tenantID: "acme", id: linkID).state == .linked)

            var current = Self.auth
            current[.ifMatch] = "\"2\""
            let revoked = try await client.execute(uri: "/api/v1/tenants/acme/l1-links/\(linkID)/revoke", method: .post, headers: current)
            #expect(revoked.status == .ok, "\(revoked.text)")
            let revocation = try revoked.json()
            #expect((revocation["link"] as? [String: Any])?["state"] as? String == "REVOKED")
            #expect(((revocation["link"] as? [String: Any])?["l2"] as? [String: Any])?["state"] as? String == "LOCKED")
            #expect((revocation["event"] as? [String: Any])?["type"] as? String == "l1.revoked")

            let l2 = try #require(try await gateway.registry.l2Key(linkID: linkID))
            #expect(l2.state == .locked && l2.activeBinding == nil && l2.sovereignBinding?.isEmpty == false)
            let events = try await gateway.registry.events(after: 0, limit: 10)
            #expect(events.contains { $0.linkID == linkID && $0.type == "l1.revoked" })

            // A revoked link cannot be used or revoked again.
            let reprobe = try await client.execute(uri: "/api/v1/tenants/acme/l1-links/\(linkID)/probe", method: .post, headers: Self.auth)
            #expect(reprobe.status == .conflict && reprobe.errorCode == "link_revoked")
            #expect(try await client.execute(uri: "/api/v1/tenants/acme/l1-links/\(linkID)/revoke", method: .post, headers: Self.auth).status == .conflict)

            // A new handshake would orphan the data under the revoked L2: the way back is a restore.
            let relinked = try await Self.handshake(client, tenant: "acme")
            #expect(relinked.status == .conflict && relinked.errorCode == "link_restorable", "\(relinked.text)")
            let list = try await client.execute(uri: "/api/v1/tenants/acme/l1-links", method: .get, headers: Self.auth)
            #expect(((try list.json())["items"] as? [Any])?.count == 1)
        }
    }

    @Test func probeFailuresAre422WithReasonsAndLeaveNoLink() async throws {
        try await harness.test { client, gateway in
            try await Self.createTenant(client, "beta")
            let missing = try await Self.handshake(client, tenant: "beta", key: "pkcs11:object=no-such-key")
            #expect(missing.status == .unprocessableContent)
            #expect(missing.errorCode == "probe_failed")
            let probe = (try missing.json()["error"] as? [String: Any])?["probe"] as? [String: Any]
            #expect((probe?["checks"] as? [[String: Any]])?.last?["name"] as? String == "key_found")

            // A key that may not wrap: made with the project's own PKCS#11 layer.
            let pool = try harness.fixture.pool("server", maxSessions: 1)
            try await pool.withSession { session in
                if try session.findObjects([.label("nowrap")]).isEmpty {
                    _ = try session.generateAESKey(bits: 256, token: true, label: "nowrap", usages: [.encrypt(true), .wrap(false), .unwrap(false)])
                }
            }
            await pool.shutdown()
            let noWrap = try await Self.handshake(client, tenant: "beta", key: "pkcs11:object=nowrap")
            #expect(noWrap.status == .unprocessableContent && noWrap.errorCode == "probe_failed")
            #expect(noWrap.text.contains("CKA_WRAP"))

            let wrongToken = try await Self.handshake(client, tenant: "beta", key: "pkcs11:token=server-b;object=l1")
            #expect(wrongToken.status == .unprocessableContent || wrongToken.status == .badRequest)

            let withModule = try await Self.handshake(client, tenant: "beta", key: "pkcs11:object=l1?module-path=/tmp/evil.so")
            #expect(withModule.status == .badRequest)
            let malformed = try await Self.handshake(client, tenant: "beta", key: "pkcs11:object=a b")
            #expect(malformed.status == .badRequest)
            let unknownKeystore = try await Self.handshake(client, tenant: "beta", keystore: "nope")
            #expect(unknownKeystore.status == .notFound)
            let unknownTenant = try await Self.handshake(client, tenant: "nobody")
            #expect(unknownTenant.status == .notFound)

            let links = try await gateway.registry.links(tenantID: "beta", limit: 10, after: nil)
            #expect(links.items.isEmpty, "failed handshakes record no link")
            let attempts = try await gateway.registry.attempts(tenantID: "beta", limit: 10)
            #expect(attempts.contains { !$0.passed && $0.failureCode == "not_found" })
        }
    }

    /// The wizard's validation step: the handshake's probe, reported whether it passes or not,
    /// with the same refusals; it links nothing and records no attempt, but the L1 use is audited.
    @Test func validationProbesWithoutLinking() async throws {
        try await harness.test { client, gateway in
            try await Self.createTenant(client, "gamma")
            func validate(_ key: String, keystore: String = "hsm", provider: String = "pkcs11") async throws -> TestResponse {
                try await client.execute(uri: "/api/v1/tenants/gamma/l1-probes", method: .post, headers: Self.auth,
                                         body: ServerHarness.body(#"{"provider":"\#(provider)","keystore":"\#(keystore)","key":"\#(key)"}"#))
            }
            let good = try await validate("pkcs11:object=l1")
            #expect(good.status == .ok, "\(good.text)")
            let report = try good.json()
            #expect(report["passed"] as? Bool == true)
            let names = (report["checks"] as? [[String: Any]])?.compactMap { $0["name"] as? String } ?? []
            #expect(names == ["token", "login", "key_found", "key_type", "key_usage", "mechanism", "test_key", "wrap", "unwrap", "compare", "cleanup"], "\(names)")

            let missing = try await validate("pkcs11:object=no-such-key")
            #expect(missing.status == .ok, "a failed probe is a result")
            let failed = try missing.json()
            #expect(failed["passed"] as? Bool == false)
            #expect((failed["failure"] as? [String: Any])?["code"] as? String == "not_found")
            #expect((failed["checks"] as? [[String: Any]])?.last?["passed"] as? Bool == false)

            #expect(try await validate("pkcs11:object=l1?module-path=/tmp/evil.so").status == .badRequest)
            #expect(try await validate("pkcs11:object=l1", keystore: "nope").status == .notFound)
            #expect(try await validate("pkcs11:object=l1", provider: "aws-kms").errorCode == "unsupported_provider")
            #expect(try await client.execute(uri: "/api/v1/tenants/nobody/l1-probes", method: .post, headers: Self.auth,
                                             body: ServerHarness.body(#"{"provider":"pkcs11","keystore":"hsm","key":"pkcs11:object=l1"}"#)).status == .notFound)

            #expect(try await gateway.registry.links(tenantID: "gamma", limit: 10, after: nil).items.isEmpty)
            #expect(try await gateway.registry.attempts(tenantID: "gamma", limit: 10).isEmpty)
            let probes = try gateway.audit.store.records(AuditQuery(tenant: "gamma", operation: "l1.probe", limit: 10)).records
            #expect(probes.map(\.outcome) == [.success, .failure])
            #expect(probes.allSatisfy { $0.actor.id == "harness-admin" })

            // With an active link, validation refuses as the handshake would.
            #expect(try await Self.handshake(client, tenant: "gamma").status == .created)
            #expect(try await validate("pkcs11:object=l1").status == .conflict)
        }
    }

    @Test func crossTokenHandshakeWrapsL2WithTheIVK() async throws {
        try await harness.test { client, gateway in
            try await Self.createTenant(client, "gamma")
            let created = try await Self.handshake(client, tenant: "gamma", keystore: "other", key: "pkcs11:object=l1")
            #expect(created.status == .created, "\(created.text)")
            let linkID = try #require(try created.json()["id"] as? String)
            let l2 = try #require(try await gateway.registry.l2Key(linkID: linkID))
            // The sovereign binding opens under the IVK and unwraps with L1 on the other token.
            let sovereign = try await gateway.sovereignBinding(of: l2)
            let other = try #require(gateway.keystores["other"])
            try await other.pkcs11!.verifyUnwrap(sovereign, with: try KeyReference(parsing: "pkcs11:token=server-b;object=l1"))
        }
    }

    @Test func bodyLimitsAndIdempotency() async throws {
        try await harness.test { client, _ in
            let large = String(repeating: "x", count: 70_000)
            let tooLarge = try await client.execute(uri: "/api/v1/tenants", method: .post, headers: Self.auth,
                                                    body: ServerHarness.body(#"{"id":"big","name":"\#(large)"}"#))
            #expect(tooLarge.status == .contentTooLarge)

            var headers = Self.auth
            headers[.init("Idempotency-Key")!] = "create-delta-1"
            let body = #"{"id":"delta","name":"Delta"}"#
            let first = try await client.execute(uri: "/api/v1/tenants", method: .post, headers: headers, body: ServerHarness.body(body))
            let again = try await client.execute(uri: "/api/v1/tenants", method: .post, headers: headers, body: ServerHarness.body(body))
            #expect(first.status == .created && again.status == .created, "the retry replays instead of failing with 409")
            #expect(again.headers[.init("Idempotent-Replayed")!] == "true")
            #expect(first.text == again.text)
            let reused = try await client.execute(uri: "/api/v1/tenants", method: .post, headers: headers,
                                                  body: ServerHarness.body(#"{"id":"delta2","name":"Other"}"#))
            #expect(reused.status == .unprocessableContent && reused.errorCode == "idempotency_key_reused")
        }
    }

    @Test func concurrentHandshakesKeepTheRegistryConsistent() async throws {
        try await harness.test { client, gateway in
            for index in 0..<50 { try await Self.createTenant(client, "c-\(index)") }
            try await Self.createTenant(client, "contended")
            let statuses = try await withThrowingTaskGroup(of: (String, HTTPResponse.Status).self) { group in
                for index in 0..<50 {
                    group.addTask { ("c-\(index)", try await Self.handshake(client, tenant: "c-\(index)").status) }
                }
                for _ in 0..<10 {
                    group.addTask { ("contended", try await Self.handshake(client, tenant: "contended").status) }
                }
                var all: [(String, HTTPResponse.Status)] = []
                for try await result in group { all.append(result) }
                return all
            }
            #expect(statuses.filter { $0.0 != "contended" }.allSatisfy { $0.1 == .created })
            let contended = statuses.filter { $0.0 == "contended" }.map(\.1)
            #expect(contended.filter { $0 == .created }.count == 1)
            #expect(contended.filter { $0 != .created }.allSatisfy { $0 == .conflict })
            #expect(try await gateway.registry.links(state: .linked).count == 51)
        }
    }

    @Test func metricsCountKeystoreOperations() async throws {
        try await harness.test { client, _ in
            try await Self.createTenant(client, "metrics")
            _ = try await Self.handshake(client, tenant: "metrics")
            let metrics = try await client.execute(uri: "/metrics", method: .get)
            #expect(metrics.text.contains("cmk_keystore_operations_total"))
            #expect(metrics.text.contains("operation=\"probe\""))
        }
    }
}

/// The scheduled prober and the service group's graceful shutdown.
@Suite(.serialized) struct LifecycleTests {
    @Test func scheduledProberRecordsFreshResults() async throws {
        let harness = try ServerHarness()
        try await harness.test { client, gateway in
            try await ManagementAPITests.createTenant(client, "sched")
            let created = try await ManagementAPITests.handshake(client, tenant: "sched")
            let linkID = try #require(try created.json()["id"] as? String)
            let before = try await gateway.registry.link(tenantID: "sched", id: linkID)
            let prober = ProbeScheduler(gateway: gateway, interval: .milliseconds(50))
            let task = Task { try await prober.run() }
            var after = before
            // The scheduler runs on real time (its 50 ms interval): wait for its result.
            try await waitUntil("the schedule to re-probe the link", timeout: .seconds(5)) {
                after = try await gateway.registry.link(tenantID: "sched", id: linkID)
                return after.version > before.version
            }
            task.cancel()
            _ = try? await task.value
            #expect(after.lastProbePassed == true)
            let beforeAt = try #require(before.lastProbeAt)
            let afterAt = try #require(after.lastProbeAt)
            #expect(afterAt >= beforeAt)
        }
    }
}
