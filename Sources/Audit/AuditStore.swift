public import AuditFormat
import CMKCore
import Dispatch
import Foundation
public import Storage
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The audit log's storage: one SQLite file (WAL, `synchronous=FULL`) or a PostgreSQL
/// database shared by every gateway replica, append-only (triggers refuse UPDATE and DELETE),
/// holding each record's canonical bytes, leaf hash and chain value, the tree's
/// perfect-subtree hashes (for O(log n) proofs), the signed checkpoints, and one mutable row,
/// `audit_head`: the committed tree's size, chain value, last time and frontier.
///
/// Appends are group-committed: callers queue records and wait; one writer thread takes
/// everything queued and, in one transaction under the store's write lock, reads the head,
/// assigns positions and times after it, inserts, and moves the head; then it resumes every
/// caller. A caller is resumed only after its record is durable. Replicas appending to one
/// PostgreSQL log therefore make one chain: the lock orders their batches, and each batch
/// continues from the head the previous one committed, whichever replica wrote it (D97).
///
/// If a commit fails on SQLite, the store fails closed: that batch and every later append get
/// `unavailable` until the process restarts (a local disk that refused a write is not to be
/// trusted with the next). On PostgreSQL a failed batch is rolled back whole and the next one
/// starts again from the head in the database, so the store recovers when the database does.
public final class AuditStore: Sendable {
    public let origin: String
    /// The SQLite file, or the PostgreSQL database (without secrets).
    public let path: String
    let store: SQLStore
    private let queue = DispatchQueue(label: "openkcm.audit.writer")
    private let state: Mutex<State>
    /// Whether one failed commit stops every later append (SQLite) or only its own batch.
    private let failClosed: Bool

    /// Appends after which the store asks for a checkpoint (`onCheckpointDue`).
    let checkpointEvery: UInt64
    private let onCheckpointDue: Mutex<(@Sendable () -> Void)?> = Mutex(nil)

    struct State {
        var pending: [Pending] = []
        var flushing = false
        var failure: AuditError?
        /// The committed tree as this process last saw it: advanced by its own commits and by
        /// reading the head that other replicas moved.
        var frontier: MerkleFrontier
        var chain: Hash
        var lastTime: Int64
        var lastCheckpointSize: UInt64?
        var dueSignalled = false
        /// Records below this position are in `audit_filter` (as far as this process knows).
        var indexedUpTo: UInt64 = 0
        var lastIndexed = ContinuousClock.now
    }

    struct Pending {
        var record: AuditRecord
        var encoded: EncodedRecord
        var continuation: CheckedContinuation<AuditRecord, any Error>
    }

    /// A committed state of the tree.
    public struct TreeHead: Sendable, Equatable {
        public var size: UInt64
        public var root: Hash
    }

    /// Opens (creating if needed) the store at `path`, mode 0600. `origin` names a new log;
    /// an existing file keeps the origin it was created with.
    public convenience init(path: String, origin proposedOrigin: String? = nil, checkpointEvery: UInt64 = 1000) throws {
        let store: SQLStore
        do { store = try AuditSchema.openFile(path) } catch {
            throw AuditError(.unavailable, "cannot open the audit store \(path): \(error)")
        }
        try self.init(store: store, path: path, origin: proposedOrigin, checkpointEvery: checkpointEvery, failClosed: true)
    }

    /// The store on PostgreSQL, migrated once whichever replica gets there first.
    public static func open(postgres settings: PostgresSettings, password: String?, origin: String? = nil,
                            checkpointEvery: UInt64 = 1000) async throws -> AuditStore {
        let store: SQLStore
        do {
            store = try SQLStore(postgres: settings, password: password, writeLock: AuditSchema.postgresWriteLock)
            try await store.migrate(AuditSchema.postgres, table: AuditSchema.postgresMigrationTable)
        } catch {
            throw AuditError(.unavailable, "cannot open the audit store \(settings.redacted): \(error)")
        }
        return try await store.blockingWork {
            try AuditStore(store: store, path: settings.redacted, origin: origin, checkpointEvery: checkpointEvery, failClosed: false)
        }
    }

    /// `database` as configured: a `postgres://` URL or a SQLite path.
    public static func open(database: String, password: PasswordSource, origin: String? = nil,
                            checkpointEvery: UInt64 = 1000) async throws -> AuditStore {
        guard PostgresSettings.isPostgresURL(database) else {
            return try AuditStore(path: database, origin: origin, checkpointEvery: checkpointEvery)
        }
        do {
            return try await open(postgres: try PostgresSettings(url: database), password: try password.read(), origin: origin,
                                  checkpointEvery: checkpointEvery)
        } catch let error as SQLError {
            throw AuditError(.unavailable, "cannot open the audit store: \(error.message)")
        }
    }

    /// Blocks the calling thread on the database: call from a thread that may block.
    init(store: SQLStore, path: String, origin proposedOrigin: String?, checkpointEvery: UInt64, failClosed: Bool) throws {
        self.store = store
        self.path = path
        self.failClosed = failClosed
        self.checkpointEvery = max(1, checkpointEvery)
        let loaded: (origin: String, head: Head, lastCheckpoint: UInt64?)
        do {
            loaded = try store.writeNow { db in
                let origin: String
                if let existing = try String.fetchOne(db, sql: "SELECT value FROM audit_meta WHERE key = 'origin'") {
                    origin = existing
                } else {
                    origin = proposedOrigin ?? "openkcm.local/audit/\(UUID().uuidString.lowercased())"
                    try db.execute(sql: "INSERT INTO audit_meta (key, value) VALUES ('origin', ?)", arguments: [origin])
                }
                let head = try Head.loadOrCreate(db)
                let lastCheckpoint = try Int64.fetchOne(db, sql: "SELECT MAX(size) FROM audit_checkpoint").map(UInt64.init)
                return (origin, head, lastCheckpoint)
            }
        } catch let error as AuditError {
            throw error
        } catch {
            throw AuditError(.unavailable, "cannot open the audit store \(path): \(error)")
        }
        origin = loaded.origin
        state = Mutex(State(frontier: loaded.head.frontier, chain: loaded.head.chain, lastTime: loaded.head.lastTime,
                            lastCheckpointSize: loaded.lastCheckpoint))
        try checkLatestCheckpoint()
    }

    /// Called (once per due point, on the writer thread) when `checkpointEvery` records have
    /// been committed since the last checkpoint.
    public func setCheckpointHandler(_ handler: @escaping @Sendable () -> Void) {
        onCheckpointDue.withLock { $0 = handler }
    }

    /// The committed tree. On PostgreSQL, read from the database (other replicas append too);
    /// if it cannot be read, the head this process last saw.
    public var head: TreeHead {
        if store.dialect == .postgres, let stored = try? store.readNow({ db in try Head.load(db) }) {
            state.withLock { state in
                if stored.frontier.size > state.frontier.size {
                    (state.frontier, state.chain, state.lastTime) = (stored.frontier, stored.chain, stored.lastTime)
                }
            }
        }
        return state.withLock { TreeHead(size: $0.frontier.size, root: $0.frontier.root) }
    }

    /// Nil while the store works; the error every append gets once it has failed.
    public var failure: AuditError? { state.withLock { $0.failure } }

    // MARK: - Appending

    /// Appends a record and returns it with its position and time, once it is durable.
    public func append(_ record: AuditRecord) async throws -> AuditRecord {
        // Encoded here, on the caller's thread, so the one writer thread only splices.
        let encoded: EncodedRecord
        do { encoded = try record.encoded() } catch {
            throw AuditError(.invalidInput, "the audit record cannot be encoded: \(error)")
        }
        return try await withCheckedThrowingContinuation { continuation in
            let startWriter: Bool = state.withLock { state in
                if let failure = state.failure {
                    continuation.resume(throwing: failure)
                    return false
                }
                state.pending.append(Pending(record: record, encoded: encoded, continuation: continuation))
                if state.flushing { return false }
                state.flushing = true
                return true
            }
            if startWriter { queue.async { self.drain() } }
        }
    }

    private func drain() {
        while true {
            indexIfDue(force: false)
            let batch = state.withLock { state in
                let batch = state.pending
                state.pending.removeAll(keepingCapacity: true)
                if batch.isEmpty { state.flushing = false }
                return batch
            }
            if batch.isEmpty { return }
            commit(batch)
        }
    }

    // MARK: - The filter index

    /// Records are indexed for filtering in bulk, at least every `indexEvery` records or
    /// `indexInterval`, rather than in each commit: with indexes on tenant and key, every
    /// commit would rewrite one index page per tenant it touches, and that write amplification
    /// (not hashing, not fsync) capped appends near 15,000 a second. Queries read the index and
    /// scan the few records behind it, so filtering is always complete.
    static let indexEvery: UInt64 = 20_000
    static let indexInterval: Duration = .seconds(1)

    /// Brings `audit_filter` up to the log (on the writer queue, so it never races a commit).
    public func indexNow() {
        queue.async { self.indexIfDue(force: true) }
    }

    /// As `indexNow`, waiting for it (tests).
    func indexSynchronously() { queue.sync { indexIfDue(force: true) } }

    private func indexIfDue(force: Bool) {
        let due = state.withLock { state -> Bool in
            guard state.failure == nil else { return false }
            return force || state.frontier.size - min(state.indexedUpTo, state.frontier.size) >= Self.indexEvery
                || ContinuousClock.now - state.lastIndexed >= Self.indexInterval
        }
        guard due else { return }
        state.withLock { $0.lastIndexed = .now }
        // Under the write lock and from the index's own end, so that replicas indexing at the
        // same time neither skip nor repeat a record. A failure leaves the records safe; only
        // filtering lags, and queries scan the lag. Retried at the next interval.
        let indexed = try? store.writeNow { db -> Int64 in
            let from = try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(seq) + 1, 0) FROM audit_filter") ?? 0
            let to = try Int64.fetchOne(db, sql: "SELECT size FROM audit_head WHERE id = 1") ?? 0
            guard to > from else { return from }
            try db.execute(sql: """
                INSERT INTO audit_filter (seq, time, tenant, key_ref, actor, operation, outcome)
                SELECT seq, time, tenant, key_ref, actor, operation, outcome FROM audit_record
                WHERE seq >= ? AND seq < ? ORDER BY seq
                """, arguments: [from, to])
            return to
        }
        if let indexed { state.withLock { $0.indexedUpTo = UInt64(indexed) } }
    }

    private typealias CommittedRow = (record: AuditRecord, body: [UInt8], leaf: Hash, chain: Hash)

    private func commit(_ batch: [Pending]) {
        let (known, knownChain, knownTime) = state.withLock { ($0.frontier, $0.chain, $0.lastTime) }
        var committed: (frontier: MerkleFrontier, chain: Hash, time: Int64, rows: [CommittedRow])?
        do {
            committed = try store.writeNow { db in
                // Continue from the head in the database: another replica may have moved it.
                var head = Head(frontier: known, chain: knownChain, lastTime: knownTime)
                if let stored = try Head.load(db, ifNot: head) { head = stored }
                var frontier = head.frontier
                var chain = head.chain
                let now = max(Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)), head.lastTime)
                let time = Array(RFC3339.format(milliseconds: now).utf8)
                var rows: [CommittedRow] = []
                var nodes: [(Int, UInt64, Hash)] = []
                rows.reserveCapacity(batch.count)
                for pending in batch {
                    var record = pending.record
                    record.seq = frontier.size
                    record.time = now
                    let body = pending.encoded.body(seq: record.seq, time: time)
                    let leaf = Merkle.leafHash(body)
                    chain = AuditExport.chain(chain, leaf)
                    frontier.append(leaf) { nodes.append(($0, $1, $2)) }
                    rows.append((record, body, leaf, chain))
                }
                try Self.insert(db, rows, nodes: nodes)
                try Head(frontier: frontier, chain: chain, lastTime: now).store(db)
                return (frontier, chain, now, rows)
            }
        } catch {
            let failure = AuditError(.unavailable, "the audit store cannot write: \(error)")
            let stranded: [CheckedContinuation<AuditRecord, any Error>] = state.withLock { state in
                guard failClosed else { return [] }
                state.failure = failure
                let stranded = state.pending
                state.pending.removeAll()
                return stranded.map(\.continuation)
            }
            for continuation in batch.map(\.continuation) + stranded { continuation.resume(throwing: failure) }
            return
        }
        guard let committed else { return }
        let due: Bool = state.withLock { state in
            state.frontier = committed.frontier
            state.chain = committed.chain
            state.lastTime = committed.time
            let since = committed.frontier.size - (state.lastCheckpointSize ?? 0)
            if since >= checkpointEvery, !state.dueSignalled {
                state.dueSignalled = true
                return true
            }
            return false
        }
        for (row, pending) in zip(committed.rows, batch) { pending.continuation.resume(returning: row.record) }
        if due, let handler = onCheckpointDue.withLock({ $0 }) { handler() }
    }

    private static func insert(_ db: Database, _ rows: [CommittedRow], nodes: [(Int, UInt64, Hash)]) throws {
        let statement = try db.cachedStatement(sql: """
            INSERT INTO audit_record (seq, time, tenant, key_ref, actor, operation, outcome, body, leaf, chain)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """)
        for row in rows {
            let record = row.record
            try statement.execute(arguments: [Int64(record.seq), record.time, record.tenant, record.keyReference, record.actor.id,
                                              record.operation, record.outcome.rawValue, row.body, row.leaf, row.chain])
        }
        let node = try db.cachedStatement(sql: "INSERT INTO audit_node (level, idx, hash) VALUES (?, ?, ?)")
        for (level, index, hash) in nodes {
            try node.execute(arguments: [level, Int64(index), hash])
        }
    }

    // MARK: - Checkpoints

    /// Stores a signed checkpoint of the committed tree and returns it.
    func store(_ checkpoint: SignedCheckpoint) throws {
        // Another replica may have signed the same tree already: the same size has the same root.
        try store.writeNow { db in
            try db.execute(sql: "INSERT INTO audit_checkpoint (size, time, root, note) VALUES (?, ?, ?, ?) ON CONFLICT (size) DO NOTHING",
                           arguments: [Int64(checkpoint.checkpoint.size), checkpoint.checkpoint.time,
                                       checkpoint.checkpoint.root, checkpoint.text])
        }
        state.withLock { state in
            state.lastCheckpointSize = max(state.lastCheckpointSize ?? 0, checkpoint.checkpoint.size)
            state.dueSignalled = false
        }
    }

    public var lastCheckpointSize: UInt64? { state.withLock { $0.lastCheckpointSize } }

    public func latestCheckpoint() throws -> SignedCheckpoint? {
        try read { db in
            try String.fetchOne(db, sql: "SELECT note FROM audit_checkpoint ORDER BY size DESC LIMIT 1")
        }.map { try SignedCheckpoint(text: $0) }
    }

    public func checkpoint(size: UInt64) throws -> SignedCheckpoint? {
        try read { db in
            try String.fetchOne(db, sql: "SELECT note FROM audit_checkpoint WHERE size = ?", arguments: [Int64(size)])
        }.map { try SignedCheckpoint(text: $0) }
    }

    /// The latest checkpoint must match the tree rebuilt from the stored hashes: catches a
    /// store edited behind the service's back, or restored from a mismatched backup.
    private func checkLatestCheckpoint() throws {
        guard let latest = try latestCheckpoint() else { return }
        let root = try read { db in try Self.subtree(db, 0, latest.checkpoint.size) }
        guard root == latest.checkpoint.root, latest.checkpoint.origin == origin else {
            throw AuditError(.verificationFailed, "the audit store's records do not match its latest signed checkpoint (\(latest.checkpoint.size) records): it was altered")
        }
    }

    // MARK: - Reading

    func read<T>(_ body: (Database) throws -> T) throws -> T {
        do { return try store.readNow(body) } catch let error as AuditError { throw error } catch {
            throw AuditError(.unavailable, "cannot read the audit store: \(error)")
        }
    }

    /// A record with its canonical bytes, or nil when `seq` is beyond the log.
    public func record(seq: UInt64) throws -> (record: AuditRecord, body: [UInt8], leaf: Hash)? {
        try read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT body, leaf FROM audit_record WHERE seq = ?", arguments: [Int64(seq)]) else {
                return nil
            }
            let body: Data = row["body"], leaf: Data = row["leaf"]
            return (try AuditRecord(json: CanonicalJSON.parse(body)), Array(body), Array(leaf))
        }
    }

    /// Records matching `query`, oldest first, and the cursor for the next page.
    public func records(_ query: AuditQuery) throws -> (records: [AuditRecord], next: UInt64?) {
        var clauses: [String] = []
        var arguments: [(any DatabaseValueConvertible)?] = []
        func filter(_ column: String, _ value: (any DatabaseValueConvertible)?) {
            if let value { clauses.append("\(column) = ?"); arguments.append(value) }
        }
        filter("tenant", query.tenant)
        filter("key_ref", query.keyReference)
        filter("actor", query.actor)
        filter("operation", query.operation)
        filter("outcome", query.outcome?.rawValue)
        if let from = query.fromTime { clauses.append("time >= ?"); arguments.append(from) }
        if let to = query.toTime { clauses.append("time < ?"); arguments.append(to) }
        if let after = query.after { clauses.append("seq > ?"); arguments.append(Int64(after)) }
        let limit = min(max(query.limit, 1), AuditQuery.maxLimit)
        func conditions(_ alias: String) -> String {
            clauses.map { alias + $0 }.joined(separator: " AND ")
        }
        let bodies = try read { db -> [Data] in
            // The indexed part first (every position in it precedes the tail), then the tail.
            let indexed = try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(seq) + 1, 0) FROM audit_filter") ?? 0
            var bodies = try Data.fetchAll(db, sql: """
                SELECT r.body FROM audit_filter f JOIN audit_record r ON r.seq = f.seq
                \(clauses.isEmpty ? "" : "WHERE " + conditions("f.")) ORDER BY f.seq LIMIT \(limit + 1)
                """, arguments: StatementArguments(arguments))
            if bodies.count <= limit {
                bodies += try Data.fetchAll(db, sql: """
                    SELECT body FROM audit_record WHERE seq >= ? \(clauses.isEmpty ? "" : "AND " + conditions(""))
                    ORDER BY seq LIMIT \(limit + 1 - bodies.count)
                    """, arguments: StatementArguments([indexed] + arguments))
            }
            return bodies
        }
        let records = try bodies.prefix(limit).map { try AuditRecord(json: CanonicalJSON.parse($0)) }
        return (records, bodies.count > limit ? records.last?.seq : nil)
    }

    public func inclusionProof(seq: UInt64, size: UInt64) throws -> [Hash] {
        guard seq < size, size <= head.size else { throw AuditError(.notFound, "record \(seq) is not in a tree of \(size) records") }
        return try read { db in try Merkle.inclusionProof(index: seq, size: size) { try Self.subtree(db, $0, $1) } }
    }

    public func consistencyProof(old: UInt64, new: UInt64) throws -> [Hash] {
        guard old <= new, new <= head.size else { throw AuditError(.notFound, "no tree of \(new) records to prove \(old) against") }
        if old == 0 || old == new { return [] }
        return try read { db in try Merkle.consistencyProof(old: old, new: new) { try Self.subtree(db, $0, $1) } }
    }

    public func root(size: UInt64) throws -> Hash {
        guard size <= head.size else { throw AuditError(.notFound, "the log has fewer than \(size) records") }
        return try read { db in try Self.subtree(db, 0, size) }
    }

    // MARK: - Export

    /// Writes the export of records `from..<to` (clamped to the log), with every stored
    /// checkpoint in that range, line by line. Without `header`, continues an export that an
    /// earlier call began (the checkpoint at `from` itself was written by that call).
    public func export(from: UInt64, to: UInt64?, key: VerifierKey, header: Bool = true, line: ([UInt8]) throws -> Void) throws {
        let end = min(to ?? head.size, head.size)
        let start = min(from, end)
        try read { db in
            let frontier = try MerkleFrontier(size: start, hashes: try Self.frontierHashes(db, size: start))
            let chain = try Data.fetchOne(db, sql: "SELECT chain FROM audit_record WHERE seq = ?", arguments: [Int64(start) - 1])
                .map(Array.init) ?? AuditExport.initialChain
            if header { try line(try AuditExport.headerLine(origin: origin, key: key, start: frontier, startChain: chain)) }
            let checkpoints = try Row.fetchAll(db, sql: "SELECT size, note FROM audit_checkpoint WHERE size >= ? AND size <= ? ORDER BY size",
                                               arguments: [Int64(header ? start : start + 1), Int64(end)])
                .map { (size: UInt64($0["size"] as Int64), note: $0["note"] as String) }
            var nextCheckpoint = checkpoints.startIndex
            func emitCheckpoints(upTo size: UInt64) throws {
                while nextCheckpoint < checkpoints.endIndex, checkpoints[nextCheckpoint].size <= size {
                    try line(try AuditExport.checkpointLine(try SignedCheckpoint(text: checkpoints[nextCheckpoint].note)))
                    nextCheckpoint += 1
                }
            }
            try emitCheckpoints(upTo: start)
            // In pages, inside the one snapshot this read holds: memory stays bounded however
            // long the log is.
            var next = Int64(start)
            while next < Int64(end) {
                let rows = try Row.fetchAll(db, sql: "SELECT seq, body, chain FROM audit_record WHERE seq >= ? AND seq < ? ORDER BY seq LIMIT 4096",
                                            arguments: [next, Int64(end)])
                guard !rows.isEmpty else { break }
                for row in rows {
                    let seq: Int64 = row[0]
                    let body: [UInt8] = row[1], chain: [UInt8] = row[2]
                    try line(AuditExport.recordLine(chain: chain, body: body))
                    try emitCheckpoints(upTo: UInt64(seq) + 1)
                    next = seq + 1
                }
            }
        }
    }

    // MARK: - Tree hashes from the database

    /// MTH(D[start:end]) from the stored leaves and perfect-subtree hashes.
    static func subtree(_ db: Database, _ start: UInt64, _ end: UInt64) throws -> Hash {
        let count = end - start
        if count == 0 { return Merkle.emptyRoot }
        if count & (count - 1) == 0, start % count == 0 {
            let level = count.trailingZeroBitCount
            let hash: Data?
            if level == 0 {
                hash = try Data.fetchOne(db.cachedStatement(sql: "SELECT leaf FROM audit_record WHERE seq = ?"), arguments: [Int64(start)])
            } else {
                hash = try Data.fetchOne(db.cachedStatement(sql: "SELECT hash FROM audit_node WHERE level = ? AND idx = ?"),
                                         arguments: [level, Int64(start >> UInt64(level))])
            }
            guard let hash else { throw AuditError(.notFound, "the audit store lacks the hash of records \(start)..<\(end)") }
            return Array(hash)
        }
        let k = Merkle.split(count)
        return Merkle.nodeHash(try subtree(db, start, start + k), try subtree(db, start + k, end))
    }

    /// The perfect-subtree roots of a tree of `size` records, largest first.
    static func frontierHashes(_ db: Database, size: UInt64) throws -> [Hash] {
        var offset: UInt64 = 0
        return try MerkleFrontier.levels(for: size).map { level in
            let width = UInt64(1) << UInt64(level)
            defer { offset += width }
            return try subtree(db, offset, offset + width)
        }
    }
}

/// Filters for listing records; every filter is an exact match except the time range.
public struct AuditQuery: Sendable {
    public static let maxLimit = 1000
    public var tenant: String?
    public var keyReference: String?
    public var actor: String?
    public var operation: String?
    public var outcome: AuditRecord.Outcome?
    /// Milliseconds since 1970, inclusive.
    public var fromTime: Int64?
    /// Milliseconds since 1970, exclusive.
    public var toTime: Int64?
    /// Records after this position.
    public var after: UInt64?
    public var limit: Int

    public init(tenant: String? = nil, keyReference: String? = nil, actor: String? = nil, operation: String? = nil,
                outcome: AuditRecord.Outcome? = nil, fromTime: Int64? = nil, toTime: Int64? = nil, after: UInt64? = nil, limit: Int = 100) {
        self.tenant = tenant
        self.keyReference = keyReference
        self.actor = actor
        self.operation = operation
        self.outcome = outcome
        self.fromTime = fromTime
        self.toTime = toTime
        self.after = after
        self.limit = limit
    }
}
