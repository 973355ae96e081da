import CMKCore
import Foundation

/// What `cmk audit verify` and the standalone `cmk-audit-verify` do, in one place: read the
/// files named on the command line, verify, and say what to print and which status to exit
/// with. Both commands parse their arguments and hand them here, so the small binary a
/// compliance team builds reports exactly what the CLI reports.
///
/// Exit statuses: 0 verified; 65 verification failed (the first bad record is named); 64 bad
/// input (a file missing or malformed, arguments that do not fit).
public enum OfflineVerification {
    /// The command line, parsed.
    public struct Request: Sendable {
        /// The export file, or OLD and NEW checkpoint files with `consistency`.
        public var files: [String]
        /// Check that checkpoint NEW extends checkpoint OLD instead of verifying an export.
        public var consistency: Bool
        /// The verifier key file (signed-note form or PEM).
        public var publicKey: String?
        /// Checkpoint files known from elsewhere (witness copies).
        public var checkpoints: [String]
        /// The consistency proof file.
        public var proof: String?
        /// JSON on standard output instead of text.
        public var json: Bool

        public init(files: [String], consistency: Bool = false, publicKey: String? = nil, checkpoints: [String] = [],
                    proof: String? = nil, json: Bool = false) {
            self.files = files
            self.consistency = consistency
            self.publicKey = publicKey
            self.checkpoints = checkpoints
            self.proof = proof
            self.json = json
        }
    }

    /// What to print, and the status to exit with.
    public struct Outcome: Sendable, Equatable {
        public var status: Int32
        /// For standard output: the summary, or with `json` every answer.
        public var output: String
        /// For standard error: the failure, without `json`.
        public var error: String

        /// Prints `output` and `error` to their streams (the caller then exits with `status`).
        public func write() {
            if !output.isEmpty { FileHandle.standardOutput.write(Data(output.utf8)) }
            if !error.isEmpty { FileHandle.standardError.write(Data(error.utf8)) }
        }
    }

    // MARK: The help both commands show

    public static let abstract = "Verify an audit export (no server or database needed), or that one checkpoint extends another."

    /// The usage text, with the command as it is typed (`cmk audit verify`, `cmk-audit-verify`).
    public static func discussion(command: String) -> String {
        """
        \(command) EXPORT [--public-key FILE] [--checkpoint FILE ...]
          checks every line, every record's position and chain value, the Merkle tree, every \
        checkpoint's signature and root, and each --checkpoint given (a witness copy): an export \
        shorter than a known checkpoint is a truncation.
        \(command) --consistency OLD NEW --proof FILE --public-key FILE
          checks that checkpoint NEW extends checkpoint OLD (the proof is what \
        GET /api/v1/audit/consistency returns).
        Exit codes: 0 verified; 65 verification failed (the first bad record is named); 64 bad input.
        """
    }

    public enum Help {
        public static let files = "The export file (JSON Lines), or OLD NEW with --consistency."
        public static let consistency = "Check that checkpoint NEW extends checkpoint OLD."
        public static let publicKey = "The log's verifier key (name+hash+base64, or PEM). Without it the export's own key is used."
        public static let checkpoint = "A checkpoint known from elsewhere (repeatable)."
        public static let proof = "The consistency proof (JSON with a \"proof\" array of hex hashes)."
        public static let json = "Print JSON instead of text."
    }

    // MARK: Running

    /// Verifies what `request` names. A verification failure or bad input is an outcome (65 or
    /// 64) that names the problem, prefixed with `program` on standard error; any other error
    /// is thrown.
    public static func run(_ request: Request, program: String) throws -> Outcome {
        do {
            let output = request.consistency ? try verifyConsistency(request) : try verifyExport(request)
            return Outcome(status: 0, output: output, error: "")
        } catch let failure as AuditVerifier.Failure {
            return failed(code: "verification_failed", failure.description, status: 65, request, program: program)
        } catch let error as AuditError {
            return failed(code: error.code.rawValue, error.reason, status: error.code == .verificationFailed ? 65 : 64, request, program: program)
        }
    }

    private static func failed(code: String, _ message: String, status: Int32, _ request: Request, program: String) -> Outcome {
        if request.json {
            return Outcome(status: status, output: json(["verified": "false", "code": code, "message": message]) + "\n", error: "")
        }
        return Outcome(status: status, output: "", error: "\(program): verification FAILED: \(message)\n")
    }

    private static func verifyExport(_ request: Request) throws -> String {
        guard request.files.count == 1 else { throw AuditError(.invalidInput, "give one export file") }
        let path = request.files[0]
        let origin = try exportOrigin(path)
        let key = try request.publicKey.map { try self.key(at: $0, name: origin) }
        let known = try request.checkpoints.map { try checkpoint(at: $0) }
        let summary = try AuditVerifier(options: .init(publicKey: key, knownCheckpoints: known)).verify(fileAt: path)
        if request.json {
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
            return json(Report(origin: summary.origin, key: summary.key, keyFromExport: summary.keyFromExport,
                               firstRecord: summary.firstSeq, records: summary.records, treeSize: summary.treeSize,
                               firstTime: summary.firstTime, lastTime: summary.lastTime, root: Hex.encode(summary.root),
                               checkpointsVerified: summary.checkpointsVerified,
                               knownCheckpointsChecked: summary.knownCheckpointsChecked, unsignedTail: summary.unsignedTail)) + "\n"
        }
        let range = summary.records == 0 ? "none" : "\(summary.firstSeq)–\(summary.firstSeq + summary.records - 1)"
        var text = """
            verified: \(summary.records) records (\(range)) of log \(summary.origin)
            time range: \(summary.firstTime ?? "-") … \(summary.lastTime ?? "-")
            tree size: \(summary.treeSize)
            root: \(Hex.encode(summary.root))
            checkpoints verified: \(summary.checkpointsVerified); known checkpoints checked: \(summary.knownCheckpointsChecked)

            """
        if summary.unsignedTail > 0 {
            text += "note: the last \(summary.unsignedTail) records are chained but not yet under a signed checkpoint\n"
        }
        if summary.keyFromExport {
            text += "note: the signing key was taken from the export itself (\(summary.key)); pass --public-key to pin it\n"
        }
        return text
    }

    private static func verifyConsistency(_ request: Request) throws -> String {
        guard request.files.count == 2 else { throw AuditError(.invalidInput, "--consistency takes OLD and NEW checkpoint files") }
        guard let proof = request.proof, let publicKey = request.publicKey else {
            throw AuditError(.invalidInput, "--consistency needs --proof FILE and --public-key FILE")
        }
        let old = try checkpoint(at: request.files[0]), new = try checkpoint(at: request.files[1])
        let key = try self.key(at: publicKey, name: old.checkpoint.origin)
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
        if request.json {
            return json(["verified": "true", "old": String(old.checkpoint.size), "new": String(new.checkpoint.size)]) + "\n"
        }
        return "verified: the log of \(new.checkpoint.size) records extends the log of \(old.checkpoint.size) records (\(new.checkpoint.origin))\n"
    }

    /// The origin named in the export's header, to name a PEM key by; nil if unreadable (the
    /// verifier then reports the header itself).
    private static func exportOrigin(_ path: String) throws -> String? {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw AuditError(.invalidInput, "cannot open \(path)") }
        defer { try? handle.close() }
        let head = handle.readData(ofLength: 64 * 1024)
        let firstLine = head.prefix { $0 != 0x0A }
        return (try? CanonicalJSON.parse(Array(firstLine)))?["header"]?["origin"]?.stringValue
    }

    private static func key(at path: String, name: String?) throws -> VerifierKey {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw AuditError(.invalidInput, "cannot read \(path)") }
        return try VerifierKey(parsing: text, defaultName: name)
    }

    private static func checkpoint(at path: String) throws -> SignedCheckpoint {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw AuditError(.invalidInput, "cannot read \(path)") }
        return try SignedCheckpoint(text: text)
    }

    /// As `cmk`'s other JSON answers: pretty-printed, keys sorted, slashes as they are.
    private static func json(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(value) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }
}
