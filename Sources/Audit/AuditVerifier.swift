import Crypto
import Foundation

/// Verifies an export without the server or its database: every line's form, every record's
/// position and chain value, the Merkle tree recomputed from the records, every checkpoint's
/// signature and root, and any checkpoint the caller already holds (a witness copy).
public struct AuditVerifier {
    public struct Options: Sendable {
        /// The key to trust. Without it the export's own key is used, and the summary says so.
        public var publicKey: VerifierKey?
        /// Checkpoints known from elsewhere; a shorter export is a truncation.
        public var knownCheckpoints: [SignedCheckpoint]

        public init(publicKey: VerifierKey? = nil, knownCheckpoints: [SignedCheckpoint] = []) {
            self.publicKey = publicKey
            self.knownCheckpoints = knownCheckpoints
        }
    }

    public struct Summary: Sendable, Equatable {
        public var origin: String
        public var key: String
        /// Whether the key came from the export itself rather than from the caller.
        public var keyFromExport: Bool
        public var firstSeq: UInt64
        public var records: UInt64
        public var firstTime: String?
        public var lastTime: String?
        public var treeSize: UInt64
        public var root: Hash
        public var checkpointsVerified: Int
        /// Records after the last signed checkpoint: chained, but not yet under a signature.
        public var unsignedTail: UInt64
        public var knownCheckpointsChecked: Int
    }

    /// The first problem found. `seq` names the record at fault: the record found at that
    /// position, or the one that should have been there.
    public struct Failure: Error, Sendable, Equatable, CustomStringConvertible {
        public var line: Int
        public var seq: UInt64?
        public var reason: String
        public var description: String {
            (seq.map { "record \($0) (line \(line))" } ?? "line \(line)") + ": " + reason
        }
    }

    let options: Options

    public init(options: Options = Options()) { self.options = options }

    /// Verifies the export file at `path`, streaming it.
    public func verify(fileAt path: String) throws -> Summary {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw AuditError(.invalidInput, "cannot open \(path)")
        }
        defer { try? handle.close() }
        var state = State(options: options)
        var carry: [UInt8] = []
        while true {
            let chunk = handle.readData(ofLength: 1 << 22)
            if chunk.isEmpty { break }
            carry.append(contentsOf: chunk)
            try carry.withUnsafeBufferPointer { buffer in
                var lineStart = 0
                while let newline = buffer[lineStart...].firstIndex(of: UInt8(ascii: "\n")) {
                    try state.line(UnsafeBufferPointer(rebasing: buffer[lineStart..<newline]))
                    lineStart = newline + 1
                }
                carry.removeFirst(lineStart)
            }
        }
        if !carry.isEmpty {
            try carry.withUnsafeBufferPointer { try state.line($0) }
        }
        return try state.finish()
    }

    /// Verifies an export held in memory.
    public func verify(_ export: [UInt8]) throws -> Summary {
        var state = State(options: options)
        try export.withUnsafeBufferPointer { buffer in
            var lineStart = 0
            while lineStart < buffer.count {
                let end = buffer[lineStart...].firstIndex(of: UInt8(ascii: "\n")) ?? buffer.count
                try state.line(UnsafeBufferPointer(rebasing: buffer[lineStart..<end]))
                lineStart = end + 1
            }
        }
        return try state.finish()
    }

    /// Checks that `new` extends `old` with a consistency proof, and both signatures.
    public static func verifyConsistency(old: SignedCheckpoint, new: SignedCheckpoint, proof: [Hash], key: VerifierKey) throws {
        guard old.isSigned(by: key) else { throw AuditError(.verificationFailed, "the old checkpoint's signature does not verify with \(key.name)") }
        guard new.isSigned(by: key) else { throw AuditError(.verificationFailed, "the new checkpoint's signature does not verify with \(key.name)") }
        guard old.checkpoint.origin == new.checkpoint.origin else { throw AuditError(.verificationFailed, "the checkpoints are from different logs") }
        guard old.checkpoint.size <= new.checkpoint.size else {
            throw AuditError(.verificationFailed, "the old checkpoint (\(old.checkpoint.size)) is larger than the new one (\(new.checkpoint.size))")
        }
        if old.checkpoint.size == 0 { return }
        guard Merkle.verifyConsistency(old: old.checkpoint.size, oldRoot: old.checkpoint.root, new: new.checkpoint.size,
                                       newRoot: new.checkpoint.root, proof: proof) else {
            throw AuditError(.verificationFailed, "the consistency proof does not show that the tree of \(new.checkpoint.size) records extends the tree of \(old.checkpoint.size): the log was rewritten")
        }
    }

    // MARK: - The streaming state

    struct State {
        let options: Options
        var lineNumber = 0
        var origin = ""
        var key: VerifierKey?
        var keyFromExport = false
        var frontier = MerkleFrontier()
        var chain = AuditExport.initialChain
        var startSeq: UInt64 = 0
        var records: UInt64 = 0
        var firstTime: String?
        var lastTime: String?
        var checkpointsVerified = 0
        var lastCheckpointSize: UInt64?
        /// Known checkpoints by size, checked as the tree passes through each size.
        var known: [UInt64: SignedCheckpoint] = [:]
        var knownChecked = 0

        init(options: Options) {
            self.options = options
            for checkpoint in options.knownCheckpoints { known[checkpoint.checkpoint.size] = checkpoint }
        }

        func fail(_ reason: String, seq: UInt64? = nil) -> Failure { Failure(line: lineNumber, seq: seq, reason: reason) }

        var expectedSeq: UInt64 { frontier.size }

        mutating func line(_ bytes: UnsafeBufferPointer<UInt8>) throws {
            lineNumber += 1
            if lineNumber == 1 { return try header(bytes) }
            if bytes.starts(with: AuditExport.recordPrefix) { return try record(bytes) }
            if bytes.starts(with: AuditExport.checkpointPrefix) { return try checkpointLine(bytes) }
            throw fail("neither a record nor a checkpoint line", seq: expectedSeq)
        }

        mutating func header(_ bytes: UnsafeBufferPointer<UInt8>) throws {
            guard bytes.starts(with: AuditExport.headerPrefix), let value = try? CanonicalJSON.parse(bytes),
                  let header = value["header"], header["format"]?.stringValue == AuditExport.format,
                  let origin = header["origin"]?.stringValue, let keyText = header["key"]?.stringValue,
                  let start = header["start"], let size = start["size"]?.integerValue, size >= 0,
                  case .array(let frontierItems)? = start["frontier"],
                  let chainHex = start["chain"]?.stringValue, let chain = Hex.decode(chainHex), chain.count == 32 else {
                throw fail("the first line is not an \(AuditExport.format) header")
            }
            self.origin = origin
            let exportKey: VerifierKey
            do { exportKey = try VerifierKey(parsing: keyText) } catch { throw fail("the header's key is malformed") }
            if let pinned = options.publicKey {
                guard pinned == exportKey else {
                    throw fail("the export is signed with \(exportKey.name) (\(exportKey)), not with the key given")
                }
                key = pinned
            } else {
                key = exportKey
                keyFromExport = true
            }
            let hashes = frontierItems.compactMap { $0.stringValue.flatMap(Hex.decode) }
            do { frontier = try MerkleFrontier(size: UInt64(size), hashes: hashes) } catch { throw fail("the header's start frontier is malformed") }
            self.chain = chain
            startSeq = UInt64(size)
            if size == 0, chain != AuditExport.initialChain { throw fail("an export from record 0 must start from the zero chain") }
            if size > 0, let knownCheckpoint = known[UInt64(size)] { try checkKnown(knownCheckpoint) }
        }

        mutating func record(_ bytes: UnsafeBufferPointer<UInt8>) throws {
            let seq = expectedSeq
            let bodyStart = AuditExport.recordPrefix.count + 64 + AuditExport.recordInfix.count
            guard bytes.count > bodyStart + 1, bytes.last == UInt8(ascii: "}"),
                  let stated = Hex.decode(UnsafeBufferPointer(rebasing: bytes[AuditExport.recordPrefix.count..<(AuditExport.recordPrefix.count + 64)])),
                  bytes[(AuditExport.recordPrefix.count + 64)..<bodyStart].elementsEqual(AuditExport.recordInfix) else {
                throw fail("malformed record line", seq: seq)
            }
            let body = UnsafeBufferPointer(rebasing: bytes[bodyStart..<(bytes.count - 1)])
            var foundSeq: Int64?
            var time: Range<Int>?
            var scanner = CanonicalScanner(body)
            do {
                try scanner.objectRanges { scanner, key in
                    let name = scanner.bytes[key]
                    if name.elementsEqual("seq".utf8) {
                        foundSeq = try scanner.integer()
                    } else if name.elementsEqual("time".utf8) {
                        time = try scanner.stringRange()
                    } else {
                        try scanner.skip()
                    }
                }
                try scanner.expectEnd()
            } catch let error as CanonicalJSONError {
                throw fail("the record is not canonical JSON (\(error.reason) at byte \(error.offset)): it was altered", seq: seq)
            }
            guard let foundSeq, let time else { throw fail("the record has no seq or time", seq: seq) }
            if foundSeq != Int64(seq) {
                if foundSeq > Int64(seq) {
                    throw fail("record \(seq) is missing: record \(foundSeq) is where it should be", seq: seq)
                }
                throw fail("record \(foundSeq) appears again or out of order where record \(seq) should be", seq: seq)
            }
            let leaf = Merkle.leafHash(body)
            let next = AuditExport.chain(chain, leaf)
            guard next == stated else {
                throw fail("the record does not match its chain value: it, or a record before it since the last good checkpoint, was altered", seq: seq)
            }
            chain = next
            frontier.append(leaf)
            records += 1
            let timeText = String(decoding: UnsafeBufferPointer(rebasing: body[time]), as: UTF8.self)
            if firstTime == nil { firstTime = timeText }
            lastTime = timeText
            if let knownCheckpoint = known[frontier.size] { try checkKnown(knownCheckpoint) }
        }

        mutating func checkpointLine(_ bytes: UnsafeBufferPointer<UInt8>) throws {
            guard let value = try? CanonicalJSON.parse(bytes), let text = value["checkpoint"]?.stringValue,
                  let signed = try? SignedCheckpoint(text: text) else {
                throw fail("malformed checkpoint line", seq: lastSeq)
            }
            let checkpoint = signed.checkpoint
            guard let key, signed.isSigned(by: key) else {
                throw fail("the checkpoint for \(checkpoint.size) records is not validly signed by \(key?.name ?? "the log's key")", seq: lastSeq)
            }
            guard checkpoint.origin == origin else { throw fail("the checkpoint is from another log (\(checkpoint.origin))", seq: lastSeq) }
            guard checkpoint.size == frontier.size else {
                if checkpoint.size > frontier.size {
                    throw fail("a checkpoint signs \(checkpoint.size) records but only \(frontier.size) precede it: records \(frontier.size)–\(checkpoint.size - 1) were removed", seq: frontier.size)
                }
                throw fail("a checkpoint for \(checkpoint.size) records follows record \(frontier.size - 1): records were inserted", seq: checkpoint.size)
            }
            guard checkpoint.root == frontier.root else {
                throw fail("the records before this checkpoint do not hash to its signed root: a record after \(lastCheckpointSize.map { "record \($0 - 1)" } ?? "the export's start") was altered and the chain recomputed", seq: lastCheckpointSize ?? startSeq)
            }
            checkpointsVerified += 1
            lastCheckpointSize = checkpoint.size
        }

        var lastSeq: UInt64? { frontier.size > 0 ? frontier.size - 1 : nil }

        mutating func checkKnown(_ checkpoint: SignedCheckpoint) throws {
            guard let key, checkpoint.isSigned(by: key), checkpoint.checkpoint.origin == origin else {
                throw fail("the checkpoint given for \(checkpoint.checkpoint.size) records is not signed by this log's key", seq: lastSeq)
            }
            guard checkpoint.checkpoint.root == frontier.root else {
                throw fail("the export disagrees with the checkpoint given for \(checkpoint.checkpoint.size) records: the log was rewritten", seq: lastSeq)
            }
            knownChecked += 1
        }

        mutating func finish() throws -> Summary {
            guard let key else { throw Failure(line: 0, seq: nil, reason: "the export is empty") }
            if let longest = known.keys.max(), longest > frontier.size {
                throw Failure(line: lineNumber, seq: frontier.size,
                              reason: "the export ends after \(frontier.size) records but a checkpoint given covers \(longest): records \(frontier.size)–\(longest - 1) were cut off")
            }
            return Summary(origin: origin, key: key.description, keyFromExport: keyFromExport, firstSeq: startSeq, records: records,
                           firstTime: firstTime, lastTime: lastTime, treeSize: frontier.size, root: frontier.root,
                           checkpointsVerified: checkpointsVerified,
                           unsignedTail: frontier.size - (lastCheckpointSize ?? startSeq), knownCheckpointsChecked: knownChecked)
        }
    }
}
