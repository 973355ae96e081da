@testable import CMKServer
import Audit
import AuditFormat
import ControlPlane
import Foundation
import Hummingbird
import HummingbirdTesting
import KSI
import PKCS11
import Registry
import TestSupport
import Testing

/// The gateway's flows with the customer's L1 key on NSS's softoken (keystore `nss`), the
/// platform token on SoftHSM: handshake, node unseal, kill-switch and restore, with the L2 key
/// the same throughout, and the sovereign binding an RFC 5649 blob NSS made with code 0x210B.
@Suite(.serialized, .enabled(if: NSSFixture.isAvailable, "NSS softoken and certutil (libnss3-tools) are not installed"))
struct NSSGatewayTests {
    static let l1 = "pkcs11:object=l1-gateway"

    func harness() async throws -> ServerHarness {
        let nss = try await NSSFixture.shared
        var harness = try ServerHarness()
        let path = "\(harness.directory)/nss.json"
        try JSONEncoder().encode(nss.profile(name: "nss")).write(to: URL(fileURLWithPath: path))
        harness.configuration.keystores.append(.init(id: "nss", profile: path))
        // One administrator may restore here: the second approver is tested elsewhere.
        harness.configuration.lifecycle.approvals.restore = 1
        return harness
    }

    static func call(_ client: any TestClientProtocol, _ uri: String, _ method: HTTPRequest.Method, _ body: String? = nil) async throws -> TestResponse {
        try await client.execute(uri: uri, method: method, headers: ServerHarness.auth, body: body.map(ServerHarness.body))
    }

    @Test func theValidationProbeAndTheHandshakePassOnNSS() async throws {
        try await harness().test { client, gateway in
            #expect(try await Self.call(client, "/api/v1/tenants", .post, #"{"id":"nss-a","name":"NSS"}"#).status == .created)
            // The validation probe: the full report, RFC 5649 sent to NSS as 0x210B.
            let validated = try await Self.call(client, "/api/v1/tenants/nss-a/l1-probes", .post,
                                                #"{"provider":"pkcs11","keystore":"nss","key":"\#(Self.l1)"}"#)
            #expect(validated.status == .ok, "\(validated.text)")
            let report = try validated.json()
            #expect(report["passed"] as? Bool == true && report["mechanism"] as? String == "CKM_AES_KEY_WRAP_PAD")
            let checks = try #require(report["checks"] as? [[String: Any]])
            #expect((checks.first { $0["name"] as? String == "mechanism" }?["detail"] as? String)?.contains("0x210B") == true)
            let created = try await Self.call(client, "/api/v1/tenants/nss-a/l1-links", .post,
                                              #"{"provider":"pkcs11","keystore":"nss","key":"\#(Self.l1)"}"#)
            #expect(created.status == .created, "\(created.text)")
            let link = try created.json()
            #expect(link["state"] as? String == "LINKED")
            #expect((link["lastProbe"] as? [String: Any])?["passed"] as? Bool == true)
            let linkID = try #require(link["id"] as? String)

            // The sovereign binding is RFC 5649 (40 bytes for AES-256) and unwraps with L1 on NSS.
            let l2 = try #require(try await gateway.registry.l2Key(linkID: linkID))
            let sovereign = try await gateway.sovereignBinding(of: l2)
            #expect(sovereign.mechanism == "CKM_AES_KEY_WRAP_PAD" && sovereign.blob.count == 40)
            let nss = try #require(gateway.keystores["nss"])
            try await nss.pkcs11!.verifyUnwrap(sovereign, with: try KeyReference(parsing: "pkcs11:token=NSS%20Certificate%20DB;object=l1-gateway"))

            // A key NSS will not let wrap is refused at the handshake with the probe's reason, and no link is made.
            #expect(try await Self.call(client, "/api/v1/tenants", .post, #"{"id":"nss-b","name":"NSS"}"#).status == .created)
            let refused = try await Self.call(client, "/api/v1/tenants/nss-b/l1-links", .post,
                                              #"{"provider":"pkcs11","keystore":"nss","key":"pkcs11:object=no-wrap"}"#)
            #expect(refused.status == .unprocessableContent && refused.errorCode == "probe_failed", "\(refused.text)")
            #expect(refused.text.contains("CKA_WRAP"))
            let list = try await Self.call(client, "/api/v1/tenants/nss-b/l1-links", .get)
            #expect((try list.json()["items"] as? [Any])?.isEmpty == true)
        }
    }

    @Test func aNodeUnsealsFromNSSUntilTheKillSwitchAndAgainAfterRestore() async throws {
        let harness = try await harness()
        try await harness.test { client, gateway in
            #expect(try await Self.call(client, "/api/v1/tenants", .post, #"{"id":"nss-life","name":"NSS"}"#).status == .created)
            let created = try await Self.call(client, "/api/v1/tenants/nss-life/l1-links", .post,
                                              #"{"provider":"pkcs11","keystore":"nss","key":"\#(Self.l1)"}"#)
            let linkID = try #require(try created.json()["id"] as? String, "\(created.text)")
            let original = try await LifecycleAPITests.material(gateway, try #require(try await gateway.registry.l2Key(linkID: linkID)))

            let node = try await NodeTests().enrolledNode(client)
            let body = #"{"tenant":"nss-life"}"#
            func unseal() async throws -> TestResponse {
                try await client.execute(uri: "/node/v1/unseal", method: .post,
                                         headers: try node.headers("POST", "/node/v1/unseal", body: body), body: ServerHarness.body(body))
            }
            let unsealed = try await unseal()
            #expect(unsealed.status == .ok, "\(unsealed.text)")
            #expect(Array(try node.open(try unsealed.json(), tenant: "nss-life")) == original)

            // The kill-switch: the link is revoked, L2 locked, and the node's next unseal refused.
            let base = "/api/v1/tenants/nss-life/l1-links/\(linkID)"
            let revoked = try await Self.call(client, "\(base)/revoke", .post)
            #expect(revoked.status == .ok, "\(revoked.text)")
            #expect((try revoked.json()["link"] as? [String: Any])?["state"] as? String == "REVOKED")
            let locked = try #require(try await gateway.registry.l2Key(linkID: linkID))
            #expect(locked.state == .locked && locked.activeBinding == nil)
            let refused = try await unseal()
            #expect(refused.status == .conflict && refused.errorCode == "key_revoked", "\(refused.text)")

            // Restore goes back to L1 on NSS: the same L2 comes back, and the node unseals again.
            let restored = try await Self.call(client, "\(base)/restore", .post, "{}")
            #expect(restored.status == .ok, "\(restored.text)")
            #expect(try await LifecycleAPITests.material(gateway, try #require(try await gateway.registry.l2Key(linkID: linkID))) == original)
            let again = try await unseal()
            #expect(again.status == .ok, "\(again.text)")
            #expect(Array(try node.open(try again.json(), tenant: "nss-life")) == original)

            // The unwraps with L1 (handshake, unseals, restore) are in the audit log.
            let unseals = try gateway.audit.store.records(AuditQuery(operation: "l2.unseal")).records
            #expect(unseals.map(\.outcome) == [.success, .denied, .success])
        }
        // The NSS PIN is nowhere in what the gateway wrote (registry, audit log).
        for file in try FileManager.default.contentsOfDirectory(atPath: harness.directory) where file.contains("sqlite") {
            let data = try Data(contentsOf: URL(fileURLWithPath: harness.directory + "/" + file))
            #expect(data.range(of: Data(NSSFixture.userPIN.utf8)) == nil, "the PIN is in \(file)")
        }
    }
}
