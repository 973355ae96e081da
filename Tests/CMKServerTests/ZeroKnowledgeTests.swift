import CMKCore
@testable import CMKServer
import ControlPlane
import Foundation
import Hummingbird
import HummingbirdTesting
import KSI
import NIOFoundationEssentialsCompat
import PKCS11
import Registry
import TestSupport
import Testing

/// The registry and the API hold references and wrapped blobs only: the L2's bytes, learnt by
/// unwrapping the sovereign binding with L1, appear in no file and no response; nor does the PIN.
@Suite(.serialized) struct ZeroKnowledgeTests {
    @Test func l2AndPINNeverReachTheDatabaseOrResponses() async throws {
        let harness = try ServerHarness()
        let bodies = ResponseLog()
        try await harness.test { client, gateway in
            func call(_ uri: String, _ method: HTTPRequest.Method, _ body: String? = nil) async throws -> TestResponse {
                let response = try await client.execute(uri: uri, method: method, headers: ServerHarness.auth,
                                                        body: body.map(ServerHarness.body))
                bodies.append(Data(buffer: response.body))
                return response
            }
            _ = try await call("/api/v1/tenants", .post, #"{"id":"zk","name":"Zero Knowledge"}"#)
            let created = try await call("/api/v1/tenants/zk/l1-links", .post, #"{"provider":"pkcs11","keystore":"hsm","key":"pkcs11:object=l1"}"#)
            let linkID = try #require(try created.json()["id"] as? String)
            _ = try await call("/api/v1/tenants/zk/l1-links/\(linkID)", .get)
            _ = try await call("/api/v1/tenants/zk/l1-links", .get)
            _ = try await call("/api/v1/tenants/zk/l1-links/\(linkID)/probe", .post)
            _ = try await call("/api/v1/keystores", .get)
            _ = try await call("/api/v1/keystores/hsm/keys", .get)
            _ = try await call("/api/v1/tenants/zk/l1-links/\(linkID)/revoke", .post)
            _ = try await call("/metrics", .get)
            _ = try await call("/api/v1/audit", .get)
            _ = try await call("/api/v1/audit/export", .get)

            // Learn the L2 the way only the key owner could: open the seal, unwrap with L1.
            let l2 = try #require(try await gateway.registry.l2Key(linkID: linkID))
            let sovereign = try await gateway.sovereignBinding(of: l2)
            let keystore = try #require(gateway.keystores["hsm"])
            let material = try await keystore.token.unwrap(sovereign, with: try KeyReference(parsing: "pkcs11:token=server;object=l1"))
            let l2Bytes = material.withUnsafeBytes { Data($0) }
            #expect(l2Bytes.count == 32)

            let secrets: [(String, Data)] = [
                ("L2", l2Bytes), ("L2 hex", Data(l2Bytes.map { String(format: "%02x", $0) }.joined().utf8)),
                ("L2 base64", Data(l2Bytes.base64EncodedString().utf8)), ("PIN", Data(SoftHSMFixture.userPIN.utf8)),
            ]
            let files = try FileManager.default.contentsOfDirectory(atPath: harness.directory)
                .filter { $0.hasPrefix("cmk.sqlite") || $0.hasPrefix("audit.sqlite") }
                .compactMap { FileManager.default.contents(atPath: "\(harness.directory)/\($0)") }
            #expect(!files.isEmpty)
            for (name, secret) in secrets {
                for file in files { #expect(file.range(of: secret) == nil, "\(name) found in the registry files") }
                for body in bodies.all { #expect(body.range(of: secret) == nil, "\(name) found in a response") }
            }
        }
    }
}

final class ResponseLog: @unchecked Sendable {
    private let lock = NSLock()
    private var bodies: [Data] = []
    func append(_ data: Data) { lock.withLock { bodies.append(data) } }
    var all: [Data] { lock.withLock { bodies } }
}
