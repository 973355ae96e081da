public import AuditFormat

/// The tamper matrix: each way of altering an export is detected, and the failure names the
/// record at fault. The server's tests run it too, on the export of a real API run.
public enum TamperMatrix {
    public struct Case: Sendable {
        public init(name: String, alter: @escaping @Sendable ([[UInt8]]) -> [[UInt8]], named: UInt64?) {
            self.name = name
            self.alter = alter
            self.named = named
        }

        public var name: String
        /// Turns the export's lines into the tampered lines.
        public var alter: @Sendable ([[UInt8]]) -> [[UInt8]]
        /// The record the verifier must name.
        public var named: UInt64?
    }

    public static func lines(_ export: [UInt8]) -> [[UInt8]] {
        export.split(separator: 0x0A, omittingEmptySubsequences: true).map(Array.init)
    }

    public static func join(_ lines: [[UInt8]]) -> [UInt8] { lines.flatMap { $0 + [0x0A] } }

    /// The line index of record `seq` in an export that starts at record 0.
    public static func lineIndex(_ lines: [[UInt8]], seq: UInt64) -> Int { lineOf(lines, seq: seq) }

    static func lineOf(_ lines: [[UInt8]], seq: UInt64) -> Int {
        var count: UInt64 = 0
        for (i, line) in lines.enumerated() where line.starts(with: AuditExport.recordPrefix) {
            if count == seq { return i }
            count += 1
        }
        fatalError("no record \(seq)")
    }

    static func byteOffset(of member: String, in line: [UInt8]) -> Int {
        let needle = Array("\"\(member)\":".utf8)
        let start = (0...(line.count - needle.count)).first { line[$0..<($0 + needle.count)].elementsEqual(needle) }!
        return start + needle.count + 1 // inside the value (past a string's opening quote)
    }

    public static func cases(records: UInt64) -> [Case] {
        let k: UInt64 = records / 2 + 1
        func flip(_ member: String, seq: UInt64) -> Case {
            Case(name: "one byte of \(member) in record \(seq)", alter: { lines in
                var lines = lines
                let i = lineOf(lines, seq: seq)
                let offset = byteOffset(of: member, in: lines[i])
                // Stay printable and keep the JSON well-formed: digits and letters move within their class.
                let byte = lines[i][offset]
                lines[i][offset] = switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "8"): byte + 1
                case UInt8(ascii: "9"): UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "e"): byte + 1
                case UInt8(ascii: "f"): UInt8(ascii: "a")
                default: byte == UInt8(ascii: "z") ? UInt8(ascii: "y") : byte + 1
                }
                return lines
            }, named: seq)
        }
        var all = ["operation", "outcome", "tenant", "key", "time", "latencyMicros", "chain", "requestId", "id", "seq"]
            .map { flip($0, seq: k) }
        all.append(flip("operation", seq: 0))
        all.append(flip("outcome", seq: records - 1))
        all.append(Case(name: "record \(k) deleted", alter: { lines in
            var lines = lines
            lines.remove(at: lineOf(lines, seq: k))
            return lines
        }, named: k))
        all.append(Case(name: "a record inserted before record \(k)", alter: { lines in
            var lines = lines
            var forged = lines[lineOf(lines, seq: k)]
            let offset = byteOffset(of: "operation", in: forged)
            forged[offset] = UInt8(ascii: "x")
            lines.insert(forged, at: lineOf(lines, seq: k))
            return lines
        }, named: k))
        all.append(Case(name: "records \(k) and \(k + 1) swapped", alter: { lines in
            var lines = lines
            lines.swapAt(lineOf(lines, seq: k), lineOf(lines, seq: k + 1))
            return lines
        }, named: k))
        all.append(Case(name: "the last three records dropped", alter: { lines in
            var lines = lines
            for _ in 0..<3 { lines.remove(at: lineOf(lines, seq: records - 3)) }
            return lines
        }, named: records - 3))
        all.append(Case(name: "a checkpoint's signature replaced", alter: { lines in
            var lines = lines
            let i = lines.lastIndex { $0.starts(with: AuditExport.checkpointPrefix) }!
            // The signature's base64 sits before the note's final "\n" and the closing `"}`.
            let position = lines[i].count - 8
            lines[i][position] = lines[i][position] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
            return lines
        }, named: records - 1))
        return all
    }

    /// Runs every case on `export` (records 0..<records, ending with a checkpoint); returns
    /// what went wrong, empty when the untouched export verifies and every tampering is
    /// detected with the right record named.
    public static func problems(on export: [UInt8], records: UInt64, key: VerifierKey) throws -> [String] {
        let verifier = AuditVerifier(options: .init(publicKey: key))
        var problems: [String] = []
        let summary = try verifier.verify(export)
        if summary.records != records { problems.append("the untouched export has \(summary.records) records, not \(records)") }
        let original = lines(export)
        for tamper in cases(records: records) {
            let altered = join(tamper.alter(original))
            if altered == export { problems.append("\(tamper.name) changed nothing") }
            do {
                _ = try verifier.verify(altered)
                problems.append("not detected: \(tamper.name)")
            } catch let failure as AuditVerifier.Failure {
                if failure.seq != tamper.named { problems.append("\(tamper.name): named \(failure)") }
            }
        }
        return problems
    }
}

