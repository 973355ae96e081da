@testable import Audit
@testable import AuditFormat
import CMKCore
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// `cmk audit verify` and `cmk audit keygen`, run as a separate process: summaries, exit
/// codes, the record named on failure, truncation against a witness copy, consistency. And the
/// standalone `cmk-audit-verify`, which must answer as `cmk audit verify` does.
@Suite struct AuditCLITests {
    /// A program built beside the test bundle (`swift build --build-tests` builds them all).
    func program(_ name: String) throws -> String {
        let path = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(name).path
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw SoftHSMFixture.FixtureError(message: "\(path) is missing: build the \(name) product first (Scripts/test does)")
        }
        return path
    }

    var cmk: String { get throws { try program("cmk") } }

    func run(_ arguments: [String]) throws -> SoftHSMFixture.RunResult { try SoftHSMFixture.run(try cmk, arguments) }

    /// The export with record `seq`'s outcome flipped (success ↔ failure): its chain no longer matches.
    static func flippingOutcome(of seq: UInt64, in export: [UInt8]) -> [UInt8] {
        var lines = TamperMatrix.lines(export)
        let line = TamperMatrix.lineIndex(lines, seq: seq)
        let text = String(decoding: lines[line], as: UTF8.self)
        lines[line] = Array((text.contains(#""outcome":"success""#)
            ? text.replacingOccurrences(of: #""outcome":"success""#, with: #""outcome":"failure""#)
            : text.replacingOccurrences(of: #""outcome":"failure""#, with: #""outcome":"success""#)).utf8)
        return TamperMatrix.join(lines)
    }

    @Test func verifyPrintsASummaryOrNamesTheFirstBadRecord() async throws {
        try await withTemporaryDirectory { directory in
            let log = try Sample.log(in: directory, checkpointEvery: 10)
            try await Sample.fill(log, count: 25)
            let witness = try await log.checkpoint()
            try Data(witness.text.utf8).write(to: URL(fileURLWithPath: directory + "/witness.checkpoint"))
            try Data(log.verifierKey.description.utf8).write(to: URL(fileURLWithPath: directory + "/log.vkey"))
            try Data(Ed25519Keys.publicKeyPEM(log.verifierKey.publicKey).utf8).write(to: URL(fileURLWithPath: directory + "/log.pem"))
            let export = try Sample.export(log)
            try Data(export).write(to: URL(fileURLWithPath: directory + "/export.jsonl"))

            for key in ["log.vkey", "log.pem"] {
                let good = try run(["audit", "verify", directory + "/export.jsonl", "--public-key", directory + "/" + key,
                                    "--checkpoint", directory + "/witness.checkpoint"])
                #expect(good.status == 0, "\(good.error)")
                #expect(good.output.contains("verified: 25 records (0–24)"))
                #expect(good.output.contains("tree size: 25"))
                #expect(good.output.contains("known checkpoints checked: 1"))
            }
            let json = try run(["audit", "verify", directory + "/export.jsonl", "--json"])
            #expect(json.status == 0)
            let summary = try #require(try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any])
            #expect(summary["records"] as? Int == 25 && summary["keyFromExport"] as? Bool == true)

            // Record 7's outcome flipped.
            try Data(Self.flippingOutcome(of: 7, in: export)).write(to: URL(fileURLWithPath: directory + "/tampered.jsonl"))
            let bad = try run(["audit", "verify", directory + "/tampered.jsonl", "--public-key", directory + "/log.vkey"])
            #expect(bad.status == 65)
            #expect(bad.error.contains("record 7"), "\(bad.error)")

            // Cut after record 19, final checkpoint removed: only the witness copy shows it.
            let short = try Sample.export(log, to: 20)
            try Data(short).write(to: URL(fileURLWithPath: directory + "/short.jsonl"))
            #expect(try run(["audit", "verify", directory + "/short.jsonl", "--public-key", directory + "/log.vkey"]).status == 0)
            let cut = try run(["audit", "verify", directory + "/short.jsonl", "--public-key", directory + "/log.vkey",
                               "--checkpoint", directory + "/witness.checkpoint"])
            #expect(cut.status == 65)
            #expect(cut.error.contains("cut off"), "\(cut.error)")

            #expect(try run(["audit", "verify", directory + "/missing.jsonl"]).status == 64)
        }
    }

    /// `cmk-audit-verify` (the audit format alone) and `cmk audit verify` run the same code: the
    /// same summary and JSON for a good export, the same status and message (after the program's
    /// name) for a tampered one, a truncated one, bad input and a consistency proof.
    @Test func theStandaloneVerifierAnswersAsCmkAuditVerifyDoes() async throws {
        try await withTemporaryDirectory { directory in
            let log = try Sample.log(in: directory, checkpointEvery: 10)
            try await Sample.fill(log, count: 25)
            let old = try await log.checkpoint()
            try await Sample.fill(log, count: 5, from: 25)
            let witness = try await log.checkpoint()
            try Data(old.text.utf8).write(to: URL(fileURLWithPath: directory + "/old.checkpoint"))
            try Data(witness.text.utf8).write(to: URL(fileURLWithPath: directory + "/witness.checkpoint"))
            try Data(log.verifierKey.description.utf8).write(to: URL(fileURLWithPath: directory + "/log.vkey"))
            try JSONSerialization.data(withJSONObject: ["proof": try log.store.consistencyProof(old: 25, new: 30).map(Hex.encode)])
                .write(to: URL(fileURLWithPath: directory + "/proof.json"))
            let export = try Sample.export(log)
            try Data(export).write(to: URL(fileURLWithPath: directory + "/export.jsonl"))
            try Data(Self.flippingOutcome(of: 7, in: export)).write(to: URL(fileURLWithPath: directory + "/tampered.jsonl"))
            try Data(try Sample.export(log, to: 20)).write(to: URL(fileURLWithPath: directory + "/short.jsonl"))

            let standalone = try program("cmk-audit-verify")
            func both(_ arguments: [String]) throws -> (cmk: SoftHSMFixture.RunResult, standalone: SoftHSMFixture.RunResult) {
                (try run(["audit", "verify"] + arguments), try SoftHSMFixture.run(standalone, arguments))
            }
            func expectSameAnswer(_ arguments: [String], status: Int32, sourceLocation: SourceLocation = #_sourceLocation) throws {
                let answer = try both(arguments)
                #expect(answer.cmk.status == status, "\(answer.cmk.error)", sourceLocation: sourceLocation)
                #expect(answer.standalone.status == status, "\(answer.standalone.error)", sourceLocation: sourceLocation)
                #expect(answer.standalone.output == answer.cmk.output, sourceLocation: sourceLocation)
                #expect(answer.standalone.error.replacingOccurrences(of: "cmk-audit-verify: ", with: "cmk: ") == answer.cmk.error,
                        sourceLocation: sourceLocation)
            }

            let good = try SoftHSMFixture.run(standalone, [directory + "/export.jsonl", "--public-key", directory + "/log.vkey",
                                                           "--checkpoint", directory + "/witness.checkpoint"])
            #expect(good.status == 0, "\(good.error)")
            #expect(good.output.contains("verified: 30 records (0–29)") && good.output.contains("known checkpoints checked: 1"))
            try expectSameAnswer([directory + "/export.jsonl", "--public-key", directory + "/log.vkey",
                                  "--checkpoint", directory + "/witness.checkpoint"], status: 0)
            try expectSameAnswer([directory + "/export.jsonl"], status: 0)
            try expectSameAnswer([directory + "/export.jsonl", "--json"], status: 0)

            let tampered = try SoftHSMFixture.run(standalone, [directory + "/tampered.jsonl", "--public-key", directory + "/log.vkey"])
            #expect(tampered.status == 65)
            #expect(tampered.error.hasPrefix("cmk-audit-verify: verification FAILED: record 7"), "\(tampered.error)")
            try expectSameAnswer([directory + "/tampered.jsonl", "--public-key", directory + "/log.vkey"], status: 65)
            try expectSameAnswer([directory + "/tampered.jsonl", "--json"], status: 65)
            try expectSameAnswer([directory + "/short.jsonl", "--public-key", directory + "/log.vkey",
                                  "--checkpoint", directory + "/witness.checkpoint"], status: 65)
            try expectSameAnswer([directory + "/missing.jsonl"], status: 64)
            try expectSameAnswer(["--consistency", directory + "/old.checkpoint", directory + "/witness.checkpoint",
                                  "--proof", directory + "/proof.json", "--public-key", directory + "/log.vkey"], status: 0)
            try expectSameAnswer(["--consistency", directory + "/witness.checkpoint", directory + "/old.checkpoint",
                                  "--proof", directory + "/proof.json", "--public-key", directory + "/log.vkey"], status: 65)
        }
    }

    /// The standalone verifier links the audit format and nothing of the live log: no symbol of
    /// `Audit` (the store, the signers), GRDB, the KSI or PKCS11 is in its binary. Read the same
    /// way, `cmk` has them all, which shows the check sees what a binary links.
    @Test func theStandaloneVerifierLinksNoStoreDatabaseOrKeystoreCode() throws {
        let modules = ["AuditFormat", "Audit", "GRDB", "KSI", "PKCS11"]
        func linked(in path: String) throws -> Set<String> {
            let binary = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
            return Set(modules.filter { module in
                // A Swift symbol of the module: `$s`, the name's length, the name.
                let prefix = Array("$s\(module.utf8.count)\(module)".utf8)
                return binary.withUnsafeBytes { Self.contains($0, prefix) }
            })
        }
        #expect(try linked(in: cmk) == Set(modules))
        #expect(try linked(in: program("cmk-audit-verify")) == ["AuditFormat"])
    }

    static func contains(_ bytes: UnsafeRawBufferPointer, _ needle: [UInt8]) -> Bool {
        guard let base = bytes.baseAddress, let first = needle.first else { return false }
        var offset = 0
        while bytes.count - offset >= needle.count, let hit = memchr(base + offset, Int32(first), bytes.count - offset) {
            let at = base.distance(to: UnsafeRawPointer(hit))
            if bytes.count - at >= needle.count, memcmp(base + at, needle, needle.count) == 0 { return true }
            offset = at + 1
        }
        return false
    }

    @Test func consistencyBetweenTwoCheckpoints() async throws {
        try await withTemporaryDirectory { directory in
            let log = try Sample.log(in: directory, checkpointEvery: 1_000_000)
            try await Sample.fill(log, count: 13)
            let old = try await log.checkpoint()
            try await Sample.fill(log, count: 20, from: 13)
            let new = try await log.checkpoint()
            try Data(old.text.utf8).write(to: URL(fileURLWithPath: directory + "/old"))
            try Data(new.text.utf8).write(to: URL(fileURLWithPath: directory + "/new"))
            try Data(log.verifierKey.description.utf8).write(to: URL(fileURLWithPath: directory + "/log.vkey"))
            let proof = try log.store.consistencyProof(old: 13, new: 33).map(Hex.encode)
            try JSONSerialization.data(withJSONObject: ["from": 13, "to": 33, "proof": proof])
                .write(to: URL(fileURLWithPath: directory + "/proof.json"))
            let ok = try run(["audit", "verify", "--consistency", directory + "/old", directory + "/new",
                              "--proof", directory + "/proof.json", "--public-key", directory + "/log.vkey"])
            #expect(ok.status == 0, "\(ok.error)")
            #expect(ok.output.contains("extends the log of 13 records"))
            // Swapped: the newer checkpoint does not extend the older one.
            let swapped = try run(["audit", "verify", "--consistency", directory + "/new", directory + "/old",
                                   "--proof", directory + "/proof.json", "--public-key", directory + "/log.vkey"])
            #expect(swapped.status == 65)
        }
    }

    @Test func keygenWritesAPrivateKeyOnlyItsOwnerCanRead() async throws {
        try await withTemporaryDirectory { directory in
            let result = try run(["audit", "keygen", "--out", directory + "/signing.key"])
            #expect(result.status == 0)
            let attributes = try FileManager.default.attributesOfItem(atPath: directory + "/signing.key")
            #expect((attributes[.posixPermissions] as? Int) == 0o600)
            let signer = try Ed25519FileSigner(path: directory + "/signing.key", keyName: "test.example/log")
            let pem = try String(contentsOfFile: directory + "/signing.key.pub", encoding: .utf8)
            #expect(try VerifierKey(parsing: pem, defaultName: "test.example/log") == signer.verifierKey)
            #expect(!result.output.contains("PRIVATE KEY"))
            // Never overwrites.
            #expect(try run(["audit", "keygen", "--out", directory + "/signing.key"]).status == 64)
        }
    }

    /// Before: with a pinned key, an export stripped of its checkpoints (records rewritten and
    /// re-chained by anyone) verified, with "checkpoints verified: 0".
    @Test func aPinnedKeyNeedsASignedCheckpointInTheExport() async throws {
        try await withTemporaryDirectory { directory in
            let log = try Sample.log(in: directory, checkpointEvery: 1000)
            try await Sample.fill(log, count: 5)
            _ = try await log.checkpoint()
            try Data(log.verifierKey.description.utf8).write(to: URL(fileURLWithPath: directory + "/log.vkey"))
            let stripped = TamperMatrix.lines(try Sample.export(log)).filter { !$0.starts(with: AuditExport.checkpointPrefix) }
            try Data(TamperMatrix.join(stripped)).write(to: URL(fileURLWithPath: directory + "/unsigned.jsonl"))
            let pinned = try run(["audit", "verify", directory + "/unsigned.jsonl", "--public-key", directory + "/log.vkey"])
            #expect(pinned.status == 65 && pinned.error.contains("no checkpoint signed by the pinned key"), "\(pinned.status) \(pinned.output) \(pinned.error)")
            // Without a pinned key it is a self-consistent chain, and says so.
            #expect(try run(["audit", "verify", directory + "/unsigned.jsonl"]).status == 0)
            // With its checkpoint: verified.
            try Data(try Sample.export(log)).write(to: URL(fileURLWithPath: directory + "/signed.jsonl"))
            #expect(try run(["audit", "verify", directory + "/signed.jsonl", "--public-key", directory + "/log.vkey"]).status == 0)
        }
    }
}
