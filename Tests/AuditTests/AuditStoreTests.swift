@testable import Audit
@testable import AuditFormat
import CMKCore
import Foundation
import GRDB
import Testing

@Suite struct AuditStoreTests {
    @Test func concurrentAppendsGetDistinctPositionsAndEveryProofVerifies() async throws {
        try await withTemporaryDirectory { directory in
            let log = try Sample.log(in: directory)
            try await Sample.fill(log, count: 100)
            let checkpoint = try await log.checkpoint()
            #expect(checkpoint.checkpoint.size == 100)
            #expect(checkpoint.isSigned(by: log.verifierKey))
            for seq in UInt64(0)..<100 {
                let (record, _, leaf) = try #require(try log.store.record(seq: seq))
                #expect(record.seq == seq)
                let proof = try log.store.inclusionProof(seq: seq, size: 100)
                #expect(Merkle.verifyInclusion(leafHash: leaf, index: seq, size: 100, proof: proof, root: checkpoint.checkpoint.root))
            }
            // Times never go backwards along the log.
            let times = try (0..<100).map { try #require(try log.store.record(seq: UInt64($0))).record.time }
            #expect(times == times.sorted())
        }
    }

    @Test func everyCheckpointIsConsistentWithEveryLaterOne() async throws {
        try await withTemporaryDirectory { directory in
            let log = try Sample.log(in: directory, checkpointEvery: 1_000_000)
            var checkpoints: [SignedCheckpoint] = []
            for round in 0..<5 {
                try await Sample.fill(log, count: 7 + round * 3, from: round * 100)
                checkpoints.append(try await log.checkpoint())
            }
            for (i, old) in checkpoints.enumerated() {
                for new in checkpoints[i...] {
                    let proof = try log.store.consistencyProof(old: old.checkpoint.size, new: new.checkpoint.size)
                    try AuditVerifier.verifyConsistency(old: old, new: new, proof: proof, key: log.verifierKey)
                }
            }
            // A proof between the wrong sizes does not pass.
            let proof = try log.store.consistencyProof(old: checkpoints[1].checkpoint.size, new: checkpoints[3].checkpoint.size)
            #expect(throws: AuditError.self) {
                try AuditVerifier.verifyConsistency(old: checkpoints[2], new: checkpoints[3], proof: proof, key: log.verifierKey)
            }
        }
    }

    @Test func theLogSurvivesARestartAndKeepsGrowingTheSameTree() async throws {
        try await withTemporaryDirectory { directory in
            let first = try Sample.log(in: directory)
            try await Sample.fill(first, count: 37)
            let before = try await first.checkpoint()
            let second = try Sample.log(in: directory)
            #expect(second.store.head.size == 37)
            #expect(second.store.head.root == before.checkpoint.root)
            #expect(second.store.origin == first.store.origin)
            try await Sample.fill(second, count: 20, from: 37)
            let after = try await second.checkpoint()
            try AuditVerifier.verifyConsistency(old: before, new: after,
                                                proof: try second.store.consistencyProof(old: 37, new: 57), key: second.verifierKey)
            let summary = try AuditVerifier(options: .init(publicKey: second.verifierKey)).verify(try Sample.export(second))
            #expect(summary.records == 57)
            #expect(summary.unsignedTail == 0)
        }
    }

    @Test func theStoreRefusesToChangeOrDeleteWhatItWrote() async throws {
        try await withTemporaryDirectory { directory in
            let log = try Sample.log(in: directory)
            try await Sample.fill(log, count: 3)
            for sql in ["UPDATE audit_record SET outcome = 'success'", "DELETE FROM audit_record WHERE seq = 1",
                        "DELETE FROM audit_checkpoint", "UPDATE audit_node SET hash = hash"] {
                #expect(throws: DatabaseError.self, "\(sql)") { try execute(directory, sql) }
            }
            #expect(try log.store.record(seq: 1) != nil)
        }
    }

    @Test func aStoreAlteredBehindTheServiceIsRefusedAtStart() async throws {
        try await withTemporaryDirectory { directory in
            let log = try Sample.log(in: directory)
            try await Sample.fill(log, count: 10)
            try execute(directory, "DROP TRIGGER audit_node_no_update")
            try execute(directory, "UPDATE audit_node SET hash = zeroblob(32) WHERE level = 3")
            #expect(throws: AuditError(.verificationFailed, "")) { _ = try Sample.log(in: directory) }
        }
    }

    @Test func checkpointsAreCopiedToTheWitnessDirectory() async throws {
        try await withTemporaryDirectory { directory in
            let witness = directory + "/witness"
            try FileManager.default.createDirectory(atPath: witness, withIntermediateDirectories: true)
            let log = try Sample.log(in: directory, witness: witness)
            try await Sample.fill(log, count: 5)
            let latest = try String(contentsOfFile: witness + "/latest.checkpoint", encoding: .utf8)
            #expect(try SignedCheckpoint(text: latest) == (try await log.checkpoint()))
            #expect(FileManager.default.fileExists(atPath: witness + "/5.checkpoint"),
                    "\((try? FileManager.default.contentsOfDirectory(atPath: witness)) ?? [])")
        }
    }

    @Test func aFailedCommitFailsThatAppendAndEveryLaterOne() async throws {
        try await withTemporaryDirectory { directory in
            let log = try Sample.log(in: directory)
            try await Sample.fill(log, count: 2)
            // A trigger added behind the store makes its next commit fail, as a full disk would.
            try execute(directory, """
                CREATE TRIGGER refuse_inserts BEFORE INSERT ON audit_record
                BEGIN SELECT RAISE(ABORT, 'disk on fire'); END
                """)
            await #expect(throws: AuditError(.unavailable, "")) { _ = try await log.append(Sample.record(9)) }
            try execute(directory, "DROP TRIGGER refuse_inserts")
            // Fail closed: the store stays failed until the process restarts.
            await #expect(throws: AuditError(.unavailable, "")) { _ = try await log.append(Sample.record(10)) }
            #expect(log.store.failure != nil)
            let reopened = try Sample.log(in: directory)
            #expect(reopened.store.head.size == 2, "\(reopened.store.head.size)")
        }
    }

    @Test func filtersSelectRecordsAndPagesFollowEachOther() async throws {
        try await withTemporaryDirectory { directory in
            let log = try Sample.log(in: directory)
            // Half the records in the filter index, half behind it: a query sees both.
            for i in 0..<15 { _ = try await log.append(Sample.record(i, tenant: i % 3 == 0 ? "globex" : "acme")) }
            log.store.indexSynchronously()
            for i in 15..<30 { _ = try await log.append(Sample.record(i, tenant: i % 3 == 0 ? "globex" : "acme")) }
            let globex = try log.store.records(AuditQuery(tenant: "globex", limit: 1000)).records
            #expect(globex.count == 10 && globex.allSatisfy { $0.tenant == "globex" })
            let failures = try log.store.records(AuditQuery(outcome: .failure)).records
            #expect(failures.map(\.seq) == [0, 5, 10, 15, 20, 25])
            #expect(try log.store.records(AuditQuery(operation: "l1.wrap", limit: 1000)).records.count == 15)
            var seen: [UInt64] = []
            var cursor: UInt64?
            repeat {
                let page = try log.store.records(AuditQuery(tenant: "acme", after: cursor, limit: 7))
                seen += page.records.map(\.seq)
                cursor = page.next
            } while cursor != nil
            #expect(seen == (0..<30).filter { $0 % 3 != 0 }.map(UInt64.init))
            // Indexing the rest changes no answer.
            log.store.indexSynchronously()
            #expect(try log.store.records(AuditQuery(outcome: .failure)).records.map(\.seq) == [0, 5, 10, 15, 20, 25])
            #expect(try log.store.records(AuditQuery(tenant: "globex", limit: 1000)).records.count == 10)
        }
    }
}

/// Runs SQL on the store's file through a connection of its own, as an intruder would.
func execute(_ directory: String, _ sql: String) throws {
    let db = try DatabaseQueue(path: directory + "/audit.sqlite")
    try db.write { try $0.execute(sql: sql) }
}

@Suite struct RecordEncodingTests {
    /// The store's direct encoder and the general RFC 8785 encoder give the same bytes.
    @Test func theDirectEncoderMatchesTheGeneralOne() throws {
        let actors = [AuditActor(kind: .user, id: "alice", session: "s-1", authMethod: "bootstrap-token"),
                      AuditActor(kind: .system, id: "prober", authMethod: "internal"),
                      AuditActor(kind: .node, id: "n\u{e9}\"1\n", authMethod: "node-signature")]
        let detailSets: [[String: String]] = [[:], ["check": "wrap"], ["\u{fb01}": "a", "\u{1f600}": "b", "\u{e9}": "c", "z": "\u{0}\u{1f}\u{7f}"]]
        var seq: UInt64 = 0
        for actor in actors {
            for details in detailSets {
                for optional in [false, true] {
                    let record = AuditRecord(
                        actor: actor, operation: "l1.probe", outcome: optional ? .failure : .success,
                        tenant: optional ? "t\u{2028}" : nil, keystore: optional ? "hsm" : nil,
                        keyReference: optional ? "pkcs11:object=a%20b;type=secret-key" : nil, mechanism: optional ? "CKM_AES_KEY_WRAP_PAD" : nil,
                        errorCode: optional ? "permission_denied" : nil, target: optional ? "link" : nil, requestID: optional ? "r" : nil,
                        clientAddress: optional ? "::1" : nil, latencyMicros: optional ? -1 : nil, details: details,
                        seq: seq, time: 1_764_000_000_123 + Int64(seq))
                    #expect(try record.canonicalBytes() == record.jsonValue.canonicalBytes())
                    #expect(try AuditRecord(json: CanonicalJSON.parse(record.canonicalBytes())) == record)
                    seq += 1
                }
            }
        }
    }
}
