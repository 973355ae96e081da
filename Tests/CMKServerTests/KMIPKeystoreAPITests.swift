import CMKCore
@testable import CMKServer
import ControlPlane
import Foundation
import Hummingbird
import HummingbirdTesting
import KMIP
import KSI
import NIOFoundationEssentialsCompat
import Registry
import TestSupport
import Testing

/// A KMIP keystore through the Management API, on PyKMIP's server: configured from JSON (files
/// relative to the configuration), listed, a key probed and linked (the L2 wrapped by KMIP
/// Encrypt, bound to tenant and L2Ref), revoked (the gateway's kill-switch) and restored with
/// the same L2; then the key's owner revokes it at their KMIP server, and the gateway refuses
/// to restore or validate it again.
@Suite(.serialized) struct KMIPKeystoreAPITests {
    static func harness() throws -> ServerHarness {
        var harness = try ServerHarness()
        harness.configuration.keystores.append(.init(id: "kmip", kmip: KMIPFixture.configuration()))
        harness.configuration.lifecycle.approvals.restore = 1
        return harness
    }

    @Test func aKMIPKeystoreIsConfiguredFromJSONWithRelativeFiles() throws {
        let directory = KMIPFixture.directory
        _ = (KMIPFixture.ca, KMIPFixture.client)
        let json = """
            {"id": "k", "provider": "kmip", "kmip": {"host": "127.0.0.1", "port": 5696, "caFile": "kmip-ca.pem",
             "clientCertificateFile": "kmip-client.pem", "clientKeyFile": "kmip-client.key", "protocolVersion": "1.2"}}
            """
        let keystore = try JSONDecoder().decode(ServerConfiguration.Keystore.self, from: Data(json.utf8)).resolved { "\(directory)/\($0)" }
        #expect(keystore.provider == .kmip && keystore.kmip?.caFile == "\(directory)/kmip-ca.pem" && keystore.kmip?.clientKeyFile == "\(directory)/kmip-client.key")
        _ = try KMIPToken(name: "k", configuration: try #require(keystore.kmip))
        let missing = #"{"id": "k", "provider": "kmip"}"#
        #expect { try JSONDecoder().decode(ServerConfiguration.Keystore.self, from: Data(missing.utf8)) } throws: { "\($0)".contains(#"it needs "kmip""#) }
        let both = #"{"id": "k", "provider": "kmip", "profile": "x.json", "kmip": {"host": "h", "caFile": "a", "clientCertificateFile": "b", "clientKeyFile": "c"}}"#
        #expect { try JSONDecoder().decode(ServerConfiguration.Keystore.self, from: Data(both.utf8)) } throws: { "\($0)".contains(#"remove "profile""#) }
    }

    @Test func aKeystoreWithAMissingClientKeyStopsTheServerWithAReason() async throws {
        var harness = try ServerHarness()
        var configuration = KMIPFixture.configuration()
        configuration.clientKeyFile = "/nonexistent/kmip.key"
        harness.configuration.keystores.append(.init(id: "kmip", kmip: configuration))
        await #expect { try await harness.test { _, _ in } } throws: { "\($0)".contains("/nonexistent/kmip.key") }
    }

    @Test func handshakeRevokeRestoreAndTheOwnersRevocation() async throws {
        let key = try await KMIPFixture.makeKey("gateway-l1").description
        let harness = try Self.harness()
        let bodies = ResponseLog()
        try await harness.test { client, gateway in
            func call(_ uri: String, _ method: HTTPRequest.Method, _ body: String? = nil) async throws -> TestResponse {
                let response = try await client.execute(uri: uri, method: method, headers: ServerHarness.auth, body: body.map(ServerHarness.body))
                bodies.append(Data(buffer: response.body))
                return response
            }
            let tenant = "t-kmip"
            let request = #"{"provider":"kmip","keystore":"kmip","key":"\#(key)"}"#
            let keystores = try await call("/api/v1/keystores", .get).json()["items"] as? [[String: Any]] ?? []
            let listed = try #require(keystores.first { $0["id"] as? String == "kmip" })
            #expect(listed["provider"] as? String == "kmip")
            let keys = try await call("/api/v1/keystores/kmip/keys", .get)
            let items = try keys.json()["items"] as? [[String: Any]] ?? []
            #expect(keys.status == .ok && items.contains { $0["uri"] as? String == key && $0["usableAsL1"] as? Bool == true }, "\(keys.text)")

            #expect(try await call("/api/v1/tenants", .post, #"{"id":"\#(tenant)","name":"KMIP"}"#).status == .created)
            let probe = try await call("/api/v1/tenants/\(tenant)/l1-probes", .post, request)
            let probeReport = try probe.json()
            #expect(probe.status == .ok && probeReport["passed"] as? Bool == true, "\(probe.text)")
            // A PKCS#11 URI for a KMIP keystore, and an unknown KMIP key: refused, nothing linked.
            let wrongKind = try await call("/api/v1/tenants/\(tenant)/l1-links", .post, #"{"provider":"kmip","keystore":"kmip","key":"pkcs11:object=x"}"#)
            #expect(wrongKind.status == .badRequest, "\(wrongKind.text)")
            let unknown = try await call("/api/v1/tenants/\(tenant)/l1-links", .post, #"{"provider":"kmip","keystore":"kmip","key":"kmip:no-such-key"}"#)
            #expect(unknown.status == .unprocessableContent && unknown.errorCode == "probe_failed", "\(unknown.text)")

            let created = try await call("/api/v1/tenants/\(tenant)/l1-links", .post, request)
            #expect(created.status == .created, "\(created.text)")
            let link = try #require(try created.json()["id"] as? String)
            let l2 = try #require(try await gateway.registry.l2Key(linkID: link))
            #expect(l2.sovereignMechanism == "KMIP_AES_GCM")
            let original = try await LifecycleAPITests.material(gateway, l2)
            let sovereign = try await gateway.sovereignBinding(of: l2)
            let token = try #require(gateway.keystores["kmip"]?.token as? KMIPToken)
            let reference = try KeyReference(parsing: key)
            #expect(try await token.unwrap(sovereign, with: reference, context: BindingContext(tenant: tenant, l2Ref: l2.id)).withUnsafeBytes { Array($0) } == original)
            await #expect(throws: KeystoreError.self) {
                try await token.unwrap(sovereign, with: reference, context: BindingContext(tenant: "someone-else", l2Ref: l2.id))
            }

            // The gateway's kill-switch, then a restore that unwraps with L1 again: the same L2.
            let base = "/api/v1/tenants/\(tenant)/l1-links/\(link)"
            #expect(try await call("\(base)/revoke", .post).status == .ok)
            let locked = try await call(base, .get).json()
            #expect(locked["state"] as? String == "REVOKED" && (locked["l2"] as? [String: Any])?["state"] as? String == "LOCKED")
            let restored = try await call("\(base)/restore", .post, "{}")
            #expect(restored.status == .ok, "\(restored.text)")
            #expect(try await LifecycleAPITests.material(gateway, try #require(try await gateway.registry.l2Key(linkID: link))) == original)

            // The owner revokes the key at their KMIP server: the next revoke holds, and no
            // restore can bring the L2 back; the link's probe says why.
            #expect(try await call("\(base)/revoke", .post).status == .ok)
            try await token.revoke(reference)
            let refused = try await call("\(base)/restore", .post, "{}")
            #expect(refused.status != .ok && refused.text.contains("Deactivated"), "\(refused.text)")
            // A tenant without a link, to see the probe's own answer for the revoked key.
            #expect(try await call("/api/v1/tenants", .post, #"{"id":"t-kmip-2","name":"KMIP"}"#).status == .created)
            let validated = try await call("/api/v1/tenants/t-kmip-2/l1-probes", .post, request)
            #expect(validated.text.contains("Deactivated") && (try? validated.json()["passed"] as? Bool) != true, "\(validated.text)")

            let audit = try await call("/api/v1/audit?tenant=\(tenant)&limit=100", .get).json()["items"] as? [[String: Any]] ?? []
            let operations = Set(audit.map { "\($0["operation"] as? String ?? "")/\($0["outcome"] as? String ?? "")" })
            for expected in ["l1.probe/success", "l1.generate_l2/success", "l1.unwrap/success"] {
                #expect(operations.contains(expected), "\(expected) in \(operations.sorted())")
            }
            // Neither the client's key nor L2 in any answer.
            let clientKey = try String(contentsOfFile: KMIPFixture.client.key, encoding: .utf8).split(separator: "\n")[1]
            let l2Bytes = Data(original)
            for secret in [Data(clientKey.utf8), l2Bytes, Data(l2Bytes.base64EncodedString().utf8)] {
                for body in bodies.all { #expect(body.range(of: secret) == nil, "a secret is in a response") }
            }
        }
    }
}
