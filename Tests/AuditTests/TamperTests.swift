import Foundation
import Testing
import TestSupport
@testable import Audit
@testable import AuditFormat

@Suite struct TamperTests {
    @Test func everyTamperingIsDetectedAndNamesTheRecord() async throws {
        try await withTemporaryDirectory { directory in
            let log = try Sample.log(in: directory, checkpointEvery: 16)
            try await Sample.fill(log, count: 60)
            #expect(try TamperMatrix.problems(on: try Sample.export(log), records: 60, key: log.verifierKey) == [])
        }
    }

    /// The streaming file reader, with chunks small enough that lines straddle them, agrees
    /// with the in-memory verifier on every tampered export.
    @Test func theFileVerifierAgreesWithTheInMemoryOneAcrossChunkBoundaries() async throws {
        try await withTemporaryDirectory { directory in
            let log = try Sample.log(in: directory, checkpointEvery: 16)
            try await Sample.fill(log, count: 60)
            let export = try Sample.export(log)
            let verifier = AuditVerifier(options: .init(publicKey: log.verifierKey))
            let path = directory + "/export.jsonl"
            for tamper in [TamperMatrix.Case(name: "untouched", alter: { $0 }, named: nil)] + TamperMatrix.cases(records: 60) {
                let bytes = TamperMatrix.join(tamper.alter(TamperMatrix.lines(export)))
                try Data(bytes).write(to: URL(fileURLWithPath: path))
                for chunk in [1024, 3000, 1 << 20] {
                    let inMemory = Result { try verifier.verify(bytes) }
                    let fromFile = Result { try verifier.verify(fileAt: path, chunkSize: chunk) }
                    switch (inMemory, fromFile) {
                    case (.success(let a), .success(let b)): #expect(a == b, "\(tamper.name), chunk \(chunk)")
                    case (.failure(let a as AuditVerifier.Failure), .failure(let b as AuditVerifier.Failure)):
                        #expect(a.seq == b.seq && a.reason == b.reason, "\(tamper.name), chunk \(chunk): \(a) vs \(b)")
                    default: Issue.record("\(tamper.name), chunk \(chunk): \(inMemory) vs \(fromFile)")
                    }
                }
            }
        }
    }

    @Test func aTruncationIsDetectedAgainstAKnownCheckpoint() async throws {
        try await withTemporaryDirectory { directory in
            let log = try Sample.log(in: directory)
            // A checkpoint inside the first 25 records, made on demand: the automatic ones come
            // after group commits, whose size depends on the machine's load.
            try await Sample.fill(log, count: 20)
            _ = try await log.checkpoint()
            try await Sample.fill(log, count: 10, from: 20)
            let witnessed = try await log.checkpoint()
            // The exporter (or an attacker) stops at 25 records, with no checkpoint after them.
            let short = try Sample.export(log, to: 25)
            let verifier = AuditVerifier(options: .init(publicKey: log.verifierKey, knownCheckpoints: [witnessed]))
            #expect { try verifier.verify(short) } throws: { error in
                (error as? AuditVerifier.Failure)?.seq == 25
            }
            // Without the witness copy, the same export verifies and says what is unsigned.
            let summary = try AuditVerifier(options: .init(publicKey: log.verifierKey)).verify(short)
            #expect(summary.records == 25)
            #expect(summary.unsignedTail == 25 - (summary.treeSize - summary.unsignedTail))
        }
    }

    @Test func anExportOfALaterRangeVerifiesOnItsOwn() async throws {
        try await withTemporaryDirectory { directory in
            let log = try Sample.log(in: directory, checkpointEvery: 10)
            try await Sample.fill(log, count: 45)
            let middle = try Sample.export(log, from: 13, to: 45)
            let summary = try AuditVerifier(options: .init(publicKey: log.verifierKey)).verify(middle)
            #expect(summary.firstSeq == 13 && summary.records == 32 && summary.treeSize == 45)
            #expect(summary.root == log.store.head.root)
            #expect(summary.checkpointsVerified >= 1)
            // A forged starting frontier is caught by the first checkpoint after it.
            var lines = TamperMatrix.lines(middle)
            let header = String(decoding: lines[0], as: UTF8.self)
            let frontierHash = try #require(header.range(of: #"frontier":[""#)).upperBound
            var forged = Array(header.utf8)
            let offset = header.utf8.distance(from: header.utf8.startIndex, to: frontierHash)
            forged[offset] = forged[offset] == UInt8(ascii: "0") ? UInt8(ascii: "1") : UInt8(ascii: "0")
            lines[0] = forged
            #expect(throws: AuditVerifier.Failure.self) {
                _ = try AuditVerifier(options: .init(publicKey: log.verifierKey)).verify(TamperMatrix.join(lines))
            }
        }
    }

    @Test func anExportSignedByAnotherKeyIsRefusedWhenAKeyIsPinned() async throws {
        try await withTemporaryDirectory { directory in
            let log = try Sample.log(in: directory)
            try await Sample.fill(log, count: 3)
            let other = try VerifierKey(name: log.store.origin, publicKey: Array(repeating: 7, count: 32))
            #expect(throws: AuditVerifier.Failure.self) { _ = try AuditVerifier(options: .init(publicKey: other)).verify(try Sample.export(log)) }
            let summary = try AuditVerifier().verify(try Sample.export(log))
            #expect(summary.keyFromExport)
        }
    }
}
