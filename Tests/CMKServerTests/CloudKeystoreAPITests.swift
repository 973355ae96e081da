import AWSKMS
import AzureKeyVault
import CMKCore
@testable import CMKServer
import ControlPlane
import Foundation
import GCPKMS
import Hummingbird
import HummingbirdTesting
import KSI
import NIOFoundationEssentialsCompat
import PKCS11
import Registry
import TestSupport
import Testing

/// Each cloud keystore through the Management API, as an administrator uses it: listed with
/// its health, a key validated, linked (the L2 made by or wrapped in the KMS, bound to tenant
/// and L2Ref), audited, revoked; the same refusals as for PKCS#11; and no credential or key
/// byte in responses, the audit log or the registry.
@Suite(.serialized) struct CloudKeystoreAPITests {
    struct Case: Sendable, CustomTestStringConvertible {
        var provider: Provider
        var keystore: String
        var key: @Sendable () -> String
        var failingKey: @Sendable () -> String
        var secrets: @Sendable () throws -> [String]
        var testDescription: String { provider.rawValue }
    }

    static let cases: [Case] = [
        Case(provider: .awsKMS, keystore: "aws", key: { CloudFixtures.moto.keys.keyARN }, failingKey: { CloudFixtures.moto.keys.disabledKeyARN },
             secrets: { [CloudFixtures.moto.keys.secretAccessKey] }),
        Case(provider: .gcpKMS, keystore: "gcp", key: { CloudFixtures.gcp.names.key }, failingKey: { CloudFixtures.gcp.names.signingKey },
             secrets: {
                 let account = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: CloudFixtures.gcp.names.serviceAccountKeyFile))) as! [String: Any]
                 let pem = account["private_key"] as! String
                 // A line of the private key's base64 body: enough to find any copy of it.
                 return [String(pem.split(separator: "\n")[5])]
             }),
        Case(provider: .azureKeyVault, keystore: "azure", key: { CloudFixtures.azure.names.key }, failingKey: { CloudFixtures.azure.names.disabledKey },
             secrets: { [try String(contentsOfFile: CloudFixtures.azure.names.clientSecretFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)] }),
    ]

    static func harness() throws -> ServerHarness {
        var harness = try ServerHarness()
        harness.configuration.keystores += [.init(id: "aws", aws: CloudFixtures.awsConfiguration()),
                                            .init(id: "gcp", gcp: CloudFixtures.gcpConfiguration()),
                                            .init(id: "azure", azure: CloudFixtures.azureConfiguration())]
        return harness
    }

    @Test(arguments: cases)
    func handshakeToRevocationThroughTheAPI(_ test: Case) async throws {
        let harness = try Self.harness()
        let bodies = ResponseLog()
        try await harness.test { client, gateway in
            func call(_ uri: String, _ method: HTTPRequest.Method, _ body: String? = nil) async throws -> TestResponse {
                let response = try await client.execute(uri: uri, method: method, headers: ServerHarness.auth, body: body.map(ServerHarness.body))
                bodies.append(Data(buffer: response.body))
                return response
            }
            let tenant = "t-\(test.keystore)"
            let request = #"{"provider":"\#(test.provider.rawValue)","keystore":"\#(test.keystore)","key":"\#(test.key())"}"#

            let keystores = try await call("/api/v1/keystores", .get).json()["items"] as? [[String: Any]] ?? []
            let listed = try #require(keystores.first { $0["id"] as? String == test.keystore })
            #expect(listed["provider"] as? String == test.provider.rawValue)
            #expect((listed["status"] as? [String: Any])?["state"] as? String == "available")
            // The wizard's list: the key to link is there, usable as L1, under the reference the handshake takes.
            let keys = try await call("/api/v1/keystores/\(test.keystore)/keys", .get)
            let listedKeys = try keys.json()["items"] as? [[String: Any]] ?? []
            #expect(keys.status == .ok && listedKeys.contains { $0["uri"] as? String == test.key() && $0["usableAsL1"] as? Bool == true }, "\(keys.text)")
            #expect(listedKeys.contains { $0["uri"] as? String == test.failingKey() && $0["usableAsL1"] as? Bool == false && $0["reason"] is String })

            #expect(try await call("/api/v1/tenants", .post, #"{"id":"\#(tenant)","name":"Cloud"}"#).status == .created)
            let validated = try await call("/api/v1/tenants/\(tenant)/l1-probes", .post, request)
            let report = try validated.json()
            #expect(validated.status == .ok && report["passed"] as? Bool == true, "\(validated.text)")

            // A failing probe: the reason, and nothing linked.
            let failing = try await call("/api/v1/tenants/\(tenant)/l1-links", .post,
                                         #"{"provider":"\#(test.provider.rawValue)","keystore":"\#(test.keystore)","key":"\#(test.failingKey())"}"#)
            #expect(failing.status == .unprocessableContent && failing.errorCode == "probe_failed", "\(failing.text)")

            let created = try await call("/api/v1/tenants/\(tenant)/l1-links", .post, request)
            #expect(created.status == .created, "\(created.text)")
            let link = try created.json()
            let linkID = try #require(link["id"] as? String)
            #expect(link["provider"] as? String == test.provider.rawValue && link["keyReference"] as? String == test.key())
            #expect((link["l2"] as? [String: Any])?["state"] as? String == "ACTIVE")

            // The sovereign binding unwraps only with L1 and this tenant's binding.
            let l2 = try #require(try await gateway.registry.l2Key(linkID: linkID))
            let sovereign = try await gateway.sovereignBinding(of: l2)
            let cloud = try #require(gateway.keystores[test.keystore]?.token as? any ContextBindingKeystore)
            let reference = try KeyReference(parsing: test.key())
            let material = try await cloud.unwrap(sovereign, with: reference, context: BindingContext(tenant: tenant, l2Ref: l2.id))
            #expect(material.count == 32)
            if test.provider != .azureKeyVault {
                await #expect(throws: KeystoreError.self) {
                    try await cloud.unwrap(sovereign, with: reference, context: BindingContext(tenant: "someone-else", l2Ref: l2.id))
                }
            }

            // Every use of the L1 key is on the record.
            let audit = try await call("/api/v1/audit?tenant=\(tenant)&limit=100", .get).json()["items"] as? [[String: Any]] ?? []
            let operations = audit.map { "\($0["operation"] as? String ?? "")/\($0["outcome"] as? String ?? "")" }
            for expected in ["l1.probe/success", "l1.probe/failure", "l1.generate_l2/success", "l1.unwrap/success", "link.create/success"] {
                #expect(operations.contains(expected), "\(expected) in \(operations)")
            }
            #expect(audit.filter { $0["operation"] as? String == "l1.generate_l2" }.allSatisfy { $0["key"] as? String == test.key() })

            #expect(try await call("/api/v1/tenants/\(tenant)/l1-links/\(linkID)/probe", .post).status == .ok)
            let revoked = try await call("/api/v1/tenants/\(tenant)/l1-links/\(linkID)/revoke", .post)
            #expect(revoked.status == .ok, "\(revoked.text)")
            let after = try await call("/api/v1/tenants/\(tenant)/l1-links/\(linkID)", .get).json()
            #expect(after["state"] as? String == "REVOKED" && (after["l2"] as? [String: Any])?["state"] as? String == "LOCKED")
            #expect(try await call("/api/v1/tenants/\(tenant)/l1-links/\(linkID)/probe", .post).status == .conflict)
            _ = try await call("/api/v1/audit/export", .get)

            // No credential in any response, the audit log or the registry.
            let files = try FileManager.default.contentsOfDirectory(atPath: harness.directory)
                .filter { $0.hasPrefix("cmk.sqlite") || $0.hasPrefix("audit.sqlite") }
                .compactMap { FileManager.default.contents(atPath: "\(harness.directory)/\($0)") }
            let l2Bytes = material.withUnsafeBytes { Data($0) }
            for secret in try test.secrets().map({ Data($0.utf8) }) + [l2Bytes, Data(l2Bytes.base64EncodedString().utf8)] {
                for file in files { #expect(file.range(of: secret) == nil, "a secret is in the registry or audit files") }
                for body in bodies.all { #expect(body.range(of: secret) == nil, "a secret is in a response") }
            }
        }
    }

    /// The keys of a moto-backed AWS keystore through REST, as the portal's wizard asks for them:
    /// ARNs, aliases, state, whether each can be an L1 key and why not; nothing else; and a
    /// principal the IAM policy does not allow kms:ListKeys gets a keystore error, not a 500.
    @Test func anAWSKeystoreListsItsKeysThroughREST() async throws {
        var harness = try Self.harness()
        harness.configuration.keystores.append(.init(id: "aws-limited", aws: CloudFixtures.awsConfiguration(id: "limited-id", secret: "limited-secret")))
        try await harness.test { client, _ in
            let response = try await client.execute(uri: "/api/v1/keystores/aws/keys", method: .get, headers: ServerHarness.auth)
            #expect(response.status == .ok, "\(response.text)")
            let body = try response.json()
            #expect(body["truncated"] == nil && body["nextCursor"] == nil, "a complete listing says nothing more")
            let items = try #require(body["items"] as? [[String: Any]])
            let fixture = CloudFixtures.moto.keys
            #expect(items.count >= 3 + fixture.listingKeys)
            let l1 = try #require(items.first { $0["uri"] as? String == fixture.keyARN })
            #expect(l1["label"] as? String == fixture.aliasName && l1["aliases"] as? [String] == [fixture.aliasName])
            #expect(l1["state"] as? String == "Enabled" && l1["usableAsL1"] as? Bool == true && l1["keyType"] as? String == "SYMMETRIC_DEFAULT")
            #expect(l1["reason"] == nil && l1["sensitive"] == nil, "absent, not null, where a KMS has no such attribute")
            let disabled = try #require(items.first { $0["uri"] as? String == fixture.disabledKeyARN })
            #expect(disabled["usableAsL1"] as? Bool == false && (disabled["reason"] as? String)?.contains("disabled") == true)
            // Names and attributes only: no field beyond the schema's, and no credential.
            let allowed: Set<String> = ["uri", "label", "idHex", "objectClass", "keyType", "bits", "tokenObject", "canWrap", "canUnwrap",
                                        "sensitive", "extractable", "usableAsL1", "state", "aliases", "reason"]
            #expect(items.allSatisfy { Set($0.keys).isSubset(of: allowed) })
            #expect(!response.text.contains(fixture.secretAccessKey))

            let refused = try await client.execute(uri: "/api/v1/keystores/aws-limited/keys", method: .get, headers: ServerHarness.auth)
            #expect(refused.status == .unprocessableContent && refused.errorCode == "keystore_refused", "\(refused.text)")
            #expect(refused.text.contains("kms:ListKeys"))
        }
    }

    @Test func referencesMustSuitTheKeystore() async throws {
        try await Self.harness().test { client, _ in
            func handshake(_ provider: String, _ keystore: String, _ key: String) async throws -> TestResponse {
                try await client.execute(uri: "/api/v1/tenants/refs/l1-links", method: .post, headers: ServerHarness.auth,
                                         body: ServerHarness.body(#"{"provider":"\#(provider)","keystore":"\#(keystore)","key":"\#(key)"}"#))
            }
            let tenant = try await client.execute(uri: "/api/v1/tenants", method: .post, headers: ServerHarness.auth,
                                                  body: ServerHarness.body(#"{"id":"refs","name":"Refs"}"#))
            #expect(tenant.status == .created)
            let arn = CloudFixtures.moto.keys.keyARN
            #expect(try await handshake("pkcs11", "aws", arn).errorCode == "unsupported_provider", "the keystore is AWS KMS")
            #expect(try await handshake("aws-kms", "hsm", arn).errorCode == "unsupported_provider")
            #expect(try await handshake("aws-kms", "aws", "pkcs11:object=l1").status == .badRequest)
            #expect(try await handshake("gcp-kms", "gcp", arn).status == .badRequest)
            #expect(try await handshake("aws-kms", "aws", "arn:aws:kms:eu-central-1:1:key/x").status == .badRequest)
            #expect(try await handshake("azure-keyvault", "azure", "https://evil.example.com/keys/customer-l1").status == .badRequest,
                    "a key URI on another host would send the credentials there")
            #expect(try await handshake("oracle-kms", "aws", arn).errorCode == "unsupported_provider")
        }
    }

    @Test func aKeystoreWithoutCredentialsStopsTheServerWithAReason() async throws {
        var harness = try ServerHarness()
        harness.configuration.keystores.append(.init(id: "aws", aws: .init(region: "eu-central-1", accessKeyIDFile: "/nonexistent/id",
                                                                          secretAccessKeyFile: "/nonexistent/secret")))
        await #expect { try await harness.test { _, _ in } } throws: { error in "\(error)".contains("/nonexistent/id") }
    }

    /// Revoke, restore with L1, rotate (the same key: its current version re-wraps), and restore
    /// again: the same L2 throughout, through each cloud KMS and its binding to tenant and L2Ref.
    @Test(arguments: cases)
    func aCloudLinkIsRestoredAndRotatedWithTheSameL2(_ test: Case) async throws {
        var harness = try Self.harness()
        harness.configuration.lifecycle.approvals.restore = 1
        try await harness.test { client, gateway in
            func call(_ uri: String, _ method: HTTPRequest.Method, _ body: String? = nil) async throws -> TestResponse {
                try await client.execute(uri: uri, method: method, headers: ServerHarness.auth, body: body.map(ServerHarness.body))
            }
            let tenant = "life-\(test.keystore)"
            #expect(try await call("/api/v1/tenants", .post, #"{"id":"\#(tenant)","name":"Cloud"}"#).status == .created)
            let created = try await call("/api/v1/tenants/\(tenant)/l1-links", .post,
                                         #"{"provider":"\#(test.provider.rawValue)","keystore":"\#(test.keystore)","key":"\#(test.key())"}"#)
            let link = try #require(try created.json()["id"] as? String, "\(created.text)")
            let original = try await LifecycleAPITests.material(gateway, try #require(try await gateway.registry.l2Key(linkID: link)))
            let base = "/api/v1/tenants/\(tenant)/l1-links/\(link)"
            #expect(try await call("\(base)/revoke", .post).status == .ok)
            let restored = try await call("\(base)/restore", .post, "{}")
            #expect(restored.status == .ok, "\(restored.text)")
            #expect(try await LifecycleAPITests.material(gateway, try #require(try await gateway.registry.l2Key(linkID: link))) == original)
            let rotated = try await call("\(base)/rotate", .post, #"{"key":"\#(test.key())"}"#)
            #expect(try rotated.status == .ok && rotated.json()["l1Version"] as? Int == 2, "\(rotated.text)")
            #expect(try await call("\(base)/revoke", .post).status == .ok)
            let again = try await call("\(base)/restore", .post, "{}")
            #expect(again.status == .ok, "\(again.text)")
            #expect(try await LifecycleAPITests.material(gateway, try #require(try await gateway.registry.l2Key(linkID: link))) == original)
        }
    }
}
