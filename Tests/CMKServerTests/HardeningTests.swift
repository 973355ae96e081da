import Audit
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing
import TestSupport
@testable import CMKServer

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
