import Audit
import AuditFormat
import CMKCore
@testable import CMKServer
import ControlPlane
import Foundation
import Hummingbird
import HummingbirdTesting
import KSI
import TestSupport
import Testing

@Suite(.serialized) struct AuditAPITests {
    /// Every path that touches an L1 key leaves exactly one record per request, counted against
    /// the KSI's own per-key counter; failures are recorded too; admin actions are recorded; the
    /// API's export verifies offline and every tampering of it is caught.
    @Test func everyL1RequestAndAdminActionIsRecordedOnce() async throws {
        let harness = try ServerHarness()
        try await harness.test { client, gateway in
            func call(_ uri: String, _ method: HTTPRequest.Method, _ body: String? = nil) async throws -> TestResponse {
                try await client.execute(uri: uri, method: method, headers: ServerHarness.auth, body: body.map(ServerHarness.body))
            }
            let token = try #require(gateway.keystores["hsm"]?.pkcs11)
            let keystore = try #require(gateway.keystores["hsm"])
            let l1 = try Gateway.keyReference("pkcs11:object=l1", keystore: keystore)
            let missing = try Gateway.keyReference("pkcs11:object=nope", keystore: keystore)
            let (l1Before, missingBefore) = (token.useCount(of: l1), token.useCount(of: missing))

            #expect(try await call("/api/v1/tenants", .post, #"{"id":"aud","name":"Audited"}"#).status == .created)
            #expect(try await call("/api/v1/tenants", .post, #"{"id":"aud2","name":"Audited 2"}"#).status == .created)
            let created = try await call("/api/v1/tenants/aud/l1-links", .post, #"{"provider":"pkcs11","keystore":"hsm","key":"pkcs11:object=l1"}"#)
            #expect(created.status == .created)
            let linkID = try #require(try created.json()["id"] as? String)
            for _ in 0..<2 { #expect(try await call("/api/v1/tenants/aud/l1-links/\(linkID)/probe", .post).status == .ok) }
            let failed = try await call("/api/v1/tenants/aud2/l1-links", .post, #"{"provider":"pkcs11","keystore":"hsm","key":"pkcs11:object=nope"}"#)
            #expect(failed.status == .unprocessableContent)
            #expect(try await call("/api/v1/tenants/aud/l1-links/\(linkID)/revoke", .post).status == .ok)
            #expect(try await call("/api/v1/tenants/aud/l1-links/\(linkID)/probe", .post).status == .conflict)

            let records = try gateway.audit.store.records(AuditQuery(limit: 1000)).records
            let l1Records = records.filter { $0.operation.hasPrefix("l1.") && $0.keyReference == l1.description }
            #expect(l1Records.count == token.useCount(of: l1) - l1Before)
            #expect(l1Records.map(\.operation) == ["l1.probe", "l1.generate_l2", "l1.probe", "l1.probe"])
            #expect(l1Records.allSatisfy { $0.outcome == .success && $0.actor.id == ServerHarness.adminName && $0.requestID != nil })
            let missingRecords = records.filter { $0.operation.hasPrefix("l1.") && $0.keyReference == missing.description }
            #expect(missingRecords.count == token.useCount(of: missing) - missingBefore)
            #expect(missingRecords.count == 1 && missingRecords[0].outcome == .failure && missingRecords[0].errorCode != nil)
            let admin = records.filter { !$0.operation.hasPrefix("l1.") }.map { "\($0.operation) \($0.outcome.rawValue)" }
            #expect(admin == ["tenant.create success", "tenant.create success", "link.create success", "link.create failure", "link.revoke success"])
            #expect(records.allSatisfy { $0.clientAddress == nil || !$0.clientAddress!.isEmpty })

            // Filters.
            let filtered = try await call("/api/v1/audit?tenant=aud2&outcome=failure", .get)
            #expect(filtered.status == .ok)
            let items = try #require(try filtered.json()["items"] as? [[String: Any]])
            #expect(items.map { $0["operation"] as? String } == ["l1.probe", "link.create"])
            #expect(try await call("/api/v1/audit?outcome=maybe", .get).status == .badRequest)

            // A record with its inclusion proof against a signed checkpoint.
            let one = try await call("/api/v1/audit/records/3", .get)
            #expect(one.status == .ok)
            let body = try one.json()
            let noteText = try #require(body["checkpoint"] as? String)
            let note = try SignedCheckpoint(text: noteText)
            #expect(note.isSigned(by: gateway.audit.verifierKey))
            let proofTexts = try #require(body["inclusionProof"] as? [String])
            let proof = proofTexts.compactMap(Hex.decode)
            let leafText = try #require(body["leafHash"] as? String)
            let leaf = try #require(Hex.decode(leafText))
            #expect(Merkle.verifyInclusion(leafHash: leaf, index: 3, size: note.checkpoint.size, proof: proof, root: note.checkpoint.root))
            #expect(try await call("/api/v1/audit/records/999999", .get).status == .notFound)

            // The export verifies offline, and the tamper matrix holds on it.
            let export = try await call("/api/v1/audit/export", .get)
            #expect(export.status == .ok)
            let bytes = Array(export.body.readableBytesView)
            #expect(try TamperMatrix.problems(on: bytes, records: UInt64(records.count), key: gateway.audit.verifierKey) == [])

            // Consistency between the checkpoint of an early size and the latest one.
            let latest = try await call("/api/v1/audit/checkpoint", .get)
            let size = try #require(try latest.json()["treeSize"] as? Int)
            let consistency = try await call("/api/v1/audit/consistency?from=2&to=\(size)", .get)
            #expect(consistency.status == .ok)
            let stepTexts = try #require(try consistency.json()["proof"] as? [String])
            let steps = stepTexts.compactMap(Hex.decode)
            #expect(Merkle.verifyConsistency(old: 2, oldRoot: try gateway.audit.store.root(size: 2), new: UInt64(size),
                                             newRoot: note.checkpoint.size == UInt64(size) ? note.checkpoint.root : try gateway.audit.store.root(size: UInt64(size)),
                                             proof: steps))
        }
    }

    /// Fail closed: once the audit store cannot write, state changes are refused with 503.
    @Test func aFailedAuditStoreRefusesWork() async throws {
        let harness = try ServerHarness()
        try await harness.test { client, gateway in
            #expect(try await client.execute(uri: "/api/v1/tenants", method: .post, headers: ServerHarness.auth,
                                             body: ServerHarness.body(#"{"id":"before","name":"B"}"#)).status == .created)
            try breakStore(harness.directory)
            let refused = try await client.execute(uri: "/api/v1/tenants", method: .post, headers: ServerHarness.auth,
                                                   body: ServerHarness.body(#"{"id":"during","name":"D"}"#))
            #expect(refused.status == .serviceUnavailable)
            #expect(refused.errorCode == "audit_unavailable")
            let again = try await client.execute(uri: "/api/v1/tenants", method: .post, headers: ServerHarness.auth,
                                                 body: ServerHarness.body(#"{"id":"after","name":"A"}"#))
            #expect(again.status == .serviceUnavailable)
            // Refused before acting: the tenant was not created.
            #expect(try await client.execute(uri: "/api/v1/tenants/after", method: .get, headers: ServerHarness.auth).status == .notFound)
        }
    }
}

/// Makes every later insert into the audit store fail, as a full disk would.
func breakStore(_ directory: String) throws {
    let result = try SoftHSMFixture.run("/usr/bin/env", ["python3", "-c", """
        import sqlite3
        db = sqlite3.connect('\(directory)/audit.sqlite')
        db.execute("CREATE TRIGGER refuse BEFORE INSERT ON audit_record BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        db.commit()
        """])
    guard result.status == 0 else { throw SoftHSMFixture.FixtureError(message: "could not break the store: \(result.error)") }
}
