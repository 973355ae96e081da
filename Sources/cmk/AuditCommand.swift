import ArgumentParser
import Audit
import CMKCore
import Foundation

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Verify audit log exports offline, and make checkpoint signing keys.",
        subcommands: [Verify.self, Keygen.self]
    )
}

extension AuditCommand {
    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Verify an audit export (no server or database needed), or that one checkpoint extends another.",
            discussion: """
            cmk audit verify EXPORT [--public-key FILE] [--checkpoint FILE ...]
              checks every line, every record's position and chain value, the Merkle tree, every \
            checkpoint's signature and root, and each --checkpoint given (a witness copy): an export \
            shorter than a known checkpoint is a truncation.
            cmk audit verify --consistency OLD NEW --proof FILE --public-key FILE
              checks that checkpoint NEW extends checkpoint OLD (the proof is what \
            GET /api/v1/audit/consistency returns).
            Exit codes: 0 verified; 65 verification failed (the first bad record is named); 64 bad input.
            """)

        @Argument(help: "The export file (JSON Lines), or OLD NEW with --consistency.")
        var files: [String]

        @Flag(name: .long, help: "Check that checkpoint NEW extends checkpoint OLD.")
        var consistency = false

        @Option(name: .customLong("public-key"), help: "The log's verifier key (name+hash+base64, or PEM). Without it the export's own key is used.")
        var publicKey: String?

        @Option(name: .customLong("checkpoint"), help: "A checkpoint known from elsewhere (repeatable).")
        var checkpoints: [String] = []

        @Option(name: .long, help: "The consistency proof (JSON with a \"proof\" array of hex hashes).")
        var proof: String?

        @OptionGroup var output: OutputOptions

        func run() async throws {
            do {
                if consistency { try verifyConsistency() } else { try verifyExport() }
            } catch let failure as AuditVerifier.Failure {
                fail(code: "verification_failed", failure.description, status: 65)
            } catch let error as AuditError {
                fail(code: error.code.rawValue, error.reason, status: error.code == .verificationFailed ? 65 : 64)
            }
        }

        private func fail(code: String, _ message: String, status: Int32) -> Never {
            if output.json {
                print(Output.json(["verified": "false", "code": code, "message": message]))
            } else {
                FileHandle.standardError.write(Data("cmk: verification FAILED: \(message)\n".utf8))
            }
            Foundation.exit(status)
        }

        private func verifyExport() throws {
            guard files.count == 1 else { throw AuditError(.invalidInput, "give one export file") }
            let path = files[0]
            let origin = try exportOrigin(path)
            let key = try publicKey.map { try Self.key(at: $0, name: origin) }
            let known = try checkpoints.map { try Self.checkpoint(at: $0) }
            let summary = try AuditVerifier(options: .init(publicKey: key, knownCheckpoints: known)).verify(fileAt: path)
            if output.json {
                struct Report: Encodable {
                    var verified = true
                    var origin, key: String
                    var keyFromExport: Bool
                    var firstRecord, records, treeSize: UInt64
                    var firstTime, lastTime: String?
                    var root: String
                    var checkpointsVerified, knownCheckpointsChecked: Int
                    var unsignedTail: UInt64
                }
                print(Output.json(Report(origin: summary.origin, key: summary.key, keyFromExport: summary.keyFromExport,
                                         firstRecord: summary.firstSeq, records: summary.records, treeSize: summary.treeSize,
                                         firstTime: summary.firstTime, lastTime: summary.lastTime, root: Hex.encode(summary.root),
                                         checkpointsVerified: summary.checkpointsVerified,
                                         knownCheckpointsChecked: summary.knownCheckpointsChecked, unsignedTail: summary.unsignedTail)))
                return
            }
            let range = summary.records == 0 ? "none" : "\(summary.firstSeq)–\(summary.firstSeq + summary.records - 1)"
            print("""
                verified: \(summary.records) records (\(range)) of log \(summary.origin)
                time range: \(summary.firstTime ?? "-") … \(summary.lastTime ?? "-")
                tree size: \(summary.treeSize)
                root: \(Hex.encode(summary.root))
                checkpoints verified: \(summary.checkpointsVerified); known checkpoints checked: \(summary.knownCheckpointsChecked)
                """)
            if summary.unsignedTail > 0 {
                print("note: the last \(summary.unsignedTail) records are chained but not yet under a signed checkpoint")
            }
            if summary.keyFromExport {
                print("note: the signing key was taken from the export itself (\(summary.key)); pass --public-key to pin it")
            }
        }

        private func verifyConsistency() throws {
            guard files.count == 2 else { throw AuditError(.invalidInput, "--consistency takes OLD and NEW checkpoint files") }
            guard let proof, let publicKey else { throw AuditError(.invalidInput, "--consistency needs --proof FILE and --public-key FILE") }
            let old = try Self.checkpoint(at: files[0]), new = try Self.checkpoint(at: files[1])
            let key = try Self.key(at: publicKey, name: old.checkpoint.origin)
            guard let data = FileManager.default.contents(atPath: proof),
                  let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let items = object["proof"] as? [String] else {
                throw AuditError(.invalidInput, "\(proof) is not a consistency proof (JSON with a \"proof\" array)")
            }
            let hashes = try items.map { item -> Hash in
                guard let hash = Hex.decode(item), hash.count == 32 else { throw AuditError(.invalidInput, "a proof hash is not 32 bytes of hex") }
                return hash
            }
            try AuditVerifier.verifyConsistency(old: old, new: new, proof: hashes, key: key)
            if output.json {
                print(Output.json(["verified": "true", "old": String(old.checkpoint.size), "new": String(new.checkpoint.size)]))
            } else {
                print("verified: the log of \(new.checkpoint.size) records extends the log of \(old.checkpoint.size) records (\(new.checkpoint.origin))")
            }
        }

        private func exportOrigin(_ path: String) throws -> String? {
            guard let handle = FileHandle(forReadingAtPath: path) else { throw AuditError(.invalidInput, "cannot open \(path)") }
            defer { try? handle.close() }
            let head = handle.readData(ofLength: 64 * 1024)
            let firstLine = head.prefix { $0 != 0x0A }
            return (try? CanonicalJSON.parse(Array(firstLine)))?["header"]?["origin"]?.stringValue
        }

        static func key(at path: String, name: String?) throws -> VerifierKey {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw AuditError(.invalidInput, "cannot read \(path)") }
            return try VerifierKey(parsing: text, defaultName: name)
        }

        static func checkpoint(at path: String) throws -> SignedCheckpoint {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw AuditError(.invalidInput, "cannot read \(path)") }
            return try SignedCheckpoint(text: text)
        }
    }

    struct Keygen: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make an Ed25519 checkpoint signing key (PKCS#8 PEM, mode 0600) and print its public key.")

        @Option(name: .long, help: "Where to write the private key (must not exist).")
        var out: String

        func run() async throws {
            do {
                let (_, publicPEM) = try Ed25519Keys.generate(path: out)
                try Data(publicPEM.utf8).write(to: URL(fileURLWithPath: out + ".pub"))
                print("wrote \(out) (private, mode 0600) and \(out).pub:\n\(publicPEM)", terminator: "")
            } catch let error as KeyFileError {
                FileHandle.standardError.write(Data("cmk: \(error.reason)\n".utf8))
                Foundation.exit(64)
            }
        }
    }
}
