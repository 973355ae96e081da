import CMKCore
import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

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

    /// Verifies the export file at `path`, streaming it in 8 MiB chunks through a two-stage
    /// pipeline: while this thread takes chunk k's records in order (positions, tree,
    /// checkpoints), other threads scan chunk k + 1 (parsing, canonical form, leaf hashes,
    /// chain steps), so both cores stay busy.
    public func verify(fileAt path: String) throws -> Summary { try verify(fileAt: path, chunkSize: 8 << 20) }

    /// `chunkSize` is small in tests, to exercise lines split across chunks.
    func verify(fileAt path: String, chunkSize: Int) throws -> Summary {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw AuditError(.invalidInput, "cannot open \(path)") }
        defer { close(descriptor) }
        var state = State(options: options)
        let capacity = chunkSize
        var leftover: [UInt8] = []
        var pending: Chunk?
        var carriedChain: Digest32?
        defer { pending?.buffer.deallocate() }
        var finished = false
        while !finished {
            let buffer = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: capacity)
            var filled = leftover.count
            _ = UnsafeMutableBufferPointer(rebasing: buffer[0..<filled]).initialize(from: leftover)
            while filled < capacity {
                let count = read(descriptor, buffer.baseAddress! + filled, capacity - filled)
                guard count >= 0 else {
                    buffer.deallocate()
                    throw AuditError(.invalidInput, "cannot read \(path): \(String(cString: strerror(errno)))")
                }
                if count == 0 { finished = true; break }
                filled += count
            }
            let view = UnsafeBufferPointer(rebasing: buffer[0..<filled])
            var (ranges, consumed) = State.split(view, final: finished)
            if ranges.isEmpty, !finished, filled == capacity {
                buffer.deallocate()
                throw AuditError(.invalidInput, "\(path) has a line longer than \(capacity) bytes")
            }
            leftover = Array(view[consumed...])
            do {
                if carriedChain == nil {
                    ranges = try state.prepare(view, ranges)
                    carriedChain = state.statedChain
                }
            } catch {
                buffer.deallocate()
                throw error
            }
            let previousChain = carriedChain!
            carriedChain = LineScan.lastStatedChain(view, ranges) ?? previousChain
            let scan = ScanJob(buffer: view, ranges: ranges, previousChain: previousChain)
            let group = DispatchGroup()
            DispatchQueue.global().async(group: group) { scan.run() }
            do {
                if let chunk = pending {
                    pending = nil
                    defer { chunk.buffer.deallocate() }
                    try state.acceptAll(UnsafeBufferPointer(chunk.buffer), chunk.ranges, chunk.results)
                }
            } catch {
                group.wait()
                buffer.deallocate()
                throw error
            }
            group.wait()
            pending = Chunk(buffer: buffer, ranges: ranges, results: scan.results)
        }
        if let chunk = pending {
            pending = nil
            defer { chunk.buffer.deallocate() }
            try state.acceptAll(UnsafeBufferPointer(chunk.buffer), chunk.ranges, chunk.results)
        }
        return try state.finish()
    }

    struct Chunk {
        let buffer: UnsafeMutableBufferPointer<UInt8>
        let ranges: [Range<Int>]
        let results: [LineScan.Result]
    }

    /// A scan handed to another thread; the buffer outlives it (the caller waits).
    final class ScanJob: @unchecked Sendable {
        let buffer: UnsafeBufferPointer<UInt8>
        let ranges: [Range<Int>]
        let previousChain: Digest32
        var results: [LineScan.Result] = []

        init(buffer: UnsafeBufferPointer<UInt8>, ranges: [Range<Int>], previousChain: Digest32) {
            self.buffer = buffer
            self.ranges = ranges
            self.previousChain = previousChain
        }

        func run() { results = LineScan.scan(buffer, ranges, previousChain: previousChain) }
    }

    /// Verifies an export held in memory.
    public func verify(_ export: [UInt8]) throws -> Summary {
        var state = State(options: options)
        try export.withUnsafeBufferPointer { buffer in
            let ranges = try state.prepare(buffer, State.split(buffer, final: true).ranges)
            try state.acceptAll(buffer, ranges, LineScan.scan(buffer, ranges, previousChain: state.statedChain))
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
        var frontier = DigestFrontier(MerkleFrontier())
        /// The last record's chain value as stated (and checked) so far.
        var statedChain = Digest32(AuditExport.initialChain)
        var startSeq: UInt64 = 0
        var records: UInt64 = 0
        var firstTime: String?
        var lastTime: String?
        /// Where the last record's time is in the current chunk (made a string once per chunk).
        var lastTimeRange: Range<Int>?
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

        /// The complete lines of `buffer` (and a last line without a newline when `final`),
        /// and how many bytes they take.
        static func split(_ buffer: UnsafeBufferPointer<UInt8>, final: Bool) -> (ranges: [Range<Int>], consumed: Int) {
            guard let base = buffer.baseAddress else { return ([], 0) }
            var ranges: [Range<Int>] = []
            ranges.reserveCapacity(buffer.count / 256)
            var position = 0
            while position < buffer.count {
                guard let newline = memchr(base + position, 0x0A, buffer.count - position) else { break }
                let end = base.distance(to: newline.assumingMemoryBound(to: UInt8.self))
                ranges.append(position..<end)
                position = end + 1
            }
            if final, position < buffer.count {
                ranges.append(position..<buffer.count)
                position = buffer.count
            }
            return (ranges, position)
        }

        /// Reads the header from the first line; returns the other lines.
        mutating func prepare(_ buffer: UnsafeBufferPointer<UInt8>, _ ranges: [Range<Int>]) throws -> [Range<Int>] {
            guard lineNumber == 0, let first = ranges.first else { return ranges }
            lineNumber = 1
            try header(UnsafeBufferPointer(rebasing: buffer[first]))
            return Array(ranges.dropFirst())
        }

        /// Takes scanned lines in order: positions, the tree, checkpoints, known checkpoints.
        mutating func acceptAll(_ buffer: UnsafeBufferPointer<UInt8>, _ ranges: [Range<Int>], _ results: [LineScan.Result]) throws {
            defer {
                if let range = lastTimeRange { lastTime = String(decoding: UnsafeBufferPointer(rebasing: buffer[range]), as: UTF8.self) }
                lastTimeRange = nil
            }
            for (index, result) in results.enumerated() {
                lineNumber += 1
                switch result {
                case .record(let record):
                    try accept(record, in: buffer)
                case .checkpoint:
                    try checkpointLine(UnsafeBufferPointer(rebasing: buffer[ranges[index]]))
                case .invalid(let reason):
                    throw fail(reason, seq: expectedSeq)
                }
            }
        }

        var expectedSeq: UInt64 { frontier.size }

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
            do { frontier = DigestFrontier(try MerkleFrontier(size: UInt64(size), hashes: hashes)) } catch {
                throw fail("the header's start frontier is malformed")
            }
            statedChain = Digest32(chain)
            startSeq = UInt64(size)
            if size == 0, chain != AuditExport.initialChain { throw fail("an export from record 0 must start from the zero chain") }
            if size > 0, let knownCheckpoint = known[UInt64(size)] { try checkKnown(knownCheckpoint) }
        }

        mutating func accept(_ record: LineScan.Record, in buffer: UnsafeBufferPointer<UInt8>) throws {
            let seq = expectedSeq
            if record.seq != Int64(seq) {
                if record.seq > Int64(seq) {
                    throw fail("record \(seq) is missing: record \(record.seq) is where it should be", seq: seq)
                }
                throw fail("record \(record.seq) appears again or out of order where record \(seq) should be", seq: seq)
            }
            guard record.chainMatches else {
                throw fail("the record does not match its chain value: it, or a record before it since the last good checkpoint, was altered", seq: seq)
            }
            statedChain = record.statedChain
            frontier.append(record.leaf)
            records += 1
            if firstTime == nil { firstTime = String(decoding: UnsafeBufferPointer(rebasing: buffer[record.time]), as: UTF8.self) }
            lastTimeRange = record.time
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
            // With a pinned key, an export must prove it is that log's: anyone can chain records,
            // only the key's holder can sign a checkpoint over them.
            if !keyFromExport, checkpointsVerified == 0, knownChecked == 0 {
                throw Failure(line: lineNumber, seq: lastSeq,
                              reason: "the export carries no checkpoint signed by the pinned key, and none was given: nothing ties its records to the log")
            }
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

/// The order-independent part of checking record lines, run on two threads.
enum LineScan {
    struct Record: Sendable {
        var seq: Int64
        /// Byte ranges within the line buffer.
        var body: Range<Int>
        var time: Range<Int>
        var leaf: Digest32
        var statedChain: Digest32
        /// Whether the stated chain equals SHA-256(0x02 ‖ previous line's stated chain ‖ leaf).
        var chainMatches: Bool
    }

    enum Result: Sendable {
        case record(Record)
        case checkpoint
        case invalid(String)
    }

    /// A raw pointer the two workers share; each writes only its own indices.
    struct Slots: @unchecked Sendable {
        let pointer: UnsafeMutablePointer<Result?>
    }

    struct Input: @unchecked Sendable {
        let buffer: UnsafeBufferPointer<UInt8>
        let ranges: [Range<Int>]
    }

    static func scan(_ buffer: UnsafeBufferPointer<UInt8>, _ ranges: [Range<Int>], previousChain: Digest32) -> [Result] {
        let count = ranges.count
        if count == 0 { return [] }
        let slots = Slots(pointer: .allocate(capacity: count))
        slots.pointer.initialize(repeating: nil, count: count)
        defer {
            slots.pointer.deinitialize(count: count)
            slots.pointer.deallocate()
        }
        let input = Input(buffer: buffer, ranges: ranges)
        // Touch the statics once here rather than behind a once-check per line.
        _ = (seqName, timeName, bodyStart, AuditExport.recordPrefix, AuditExport.checkpointPrefix, AuditExport.recordInfix)
        let workers = count < 256 ? 1 : 2
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            let lower = count * worker / workers, upper = count * (worker + 1) / workers
            // The stated chain of the record line before `lower`: from this chunk, or the
            // last one accepted before it.
            var previous = previousChain
            var back = lower - 1
            while back >= 0 {
                if let stated = statedChain(of: input.buffer, input.ranges[back]) { previous = stated; break }
                back -= 1
            }
            for index in lower..<upper {
                let result = scanLine(input.buffer, input.ranges[index], previous: previous)
                if case .record(let record) = result { previous = record.statedChain }
                slots.pointer[index] = result
            }
        }
        return (0..<count).map { slots.pointer[$0]! }
    }

    static let bodyStart = AuditExport.recordPrefix.count + 64 + AuditExport.recordInfix.count

    /// The stated chain of the last record line in `ranges`, if any.
    static func lastStatedChain(_ buffer: UnsafeBufferPointer<UInt8>, _ ranges: [Range<Int>]) -> Digest32? {
        for range in ranges.reversed() {
            if let stated = statedChain(of: buffer, range) { return stated }
        }
        return nil
    }

    static func statedChain(of buffer: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Digest32? {
        let line = UnsafeBufferPointer(rebasing: buffer[range])
        guard line.count > bodyStart, startsWith(line, AuditExport.recordPrefix) else { return nil }
        return Digest32.hex(UnsafeBufferPointer(rebasing: line[AuditExport.recordPrefix.count..<(AuditExport.recordPrefix.count + 64)]))
    }

    static func scanLine(_ buffer: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, previous: Digest32) -> Result {
        let line = UnsafeBufferPointer(rebasing: buffer[range])
        if startsWith(line, AuditExport.checkpointPrefix) { return .checkpoint }
        guard startsWith(line, AuditExport.recordPrefix) else { return .invalid("neither a record nor a checkpoint line") }
        let prefix = AuditExport.recordPrefix.count
        guard line.count > bodyStart + 1, line[line.count - 1] == UInt8(ascii: "}"),
              let stated = Digest32.hex(UnsafeBufferPointer(rebasing: line[prefix..<(prefix + 64)])),
              equal(UnsafeBufferPointer(rebasing: line[(prefix + 64)..<bodyStart]), AuditExport.recordInfix) else {
            return .invalid("malformed record line")
        }
        let body = UnsafeBufferPointer(rebasing: line[bodyStart..<(line.count - 1)])
        var seq: Int64?
        var time: Range<Int>?
        var scanner = CanonicalScanner(body)
        do {
            try scanner.objectRanges { scanner, key in
                let name = UnsafeBufferPointer(rebasing: scanner.bytes[key])
                if equal(name, seqName) {
                    seq = try scanner.integer()
                } else if equal(name, timeName) {
                    time = try scanner.stringRange()
                } else {
                    try scanner.skip()
                }
            }
            try scanner.expectEnd()
        } catch let error as CanonicalJSONError {
            return .invalid("the record is not canonical JSON (\(error.reason) at byte \(error.offset)): it was altered")
        } catch {
            return .invalid("the record cannot be read")
        }
        guard let seq, let time else { return .invalid("the record has no seq or time") }
        let leaf = Digest32.leaf(body)
        let offset = range.lowerBound + bodyStart
        return .record(Record(seq: seq, body: offset..<(offset + body.count),
                              time: (offset + time.lowerBound)..<(offset + time.upperBound), leaf: leaf, statedChain: stated,
                              chainMatches: Digest32.pair(0x02, previous, leaf) == stated))
    }

    static let seqName = Array("seq".utf8)
    static let timeName = Array("time".utf8)

    @inline(__always) static func startsWith(_ line: UnsafeBufferPointer<UInt8>, _ prefix: [UInt8]) -> Bool {
        line.count >= prefix.count && equal(UnsafeBufferPointer(rebasing: line[0..<prefix.count]), prefix)
    }

    @inline(__always) static func equal(_ a: UnsafeBufferPointer<UInt8>, _ b: [UInt8]) -> Bool {
        a.count == b.count && b.withUnsafeBufferPointer { memcmp(a.baseAddress!, $0.baseAddress!, a.count) == 0 }
    }
}

