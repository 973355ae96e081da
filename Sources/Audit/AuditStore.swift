public import AuditFormat
import CMKCore
import Dispatch
import Foundation
import GRDB
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The audit log's storage: one SQLite file (WAL, `synchronous=FULL`), append-only (triggers
/// refuse UPDATE and DELETE), holding each record's canonical bytes, leaf hash and chain value,
/// the tree's perfect-subtree hashes (for O(log n) proofs) and the signed checkpoints.
///
/// Appends are group-committed: callers queue records and wait; one writer thread takes
/// everything queued, assigns positions and times, and commits it in one fsynced transaction,
/// then resumes every caller. A caller is resumed only after its record is on disk. If a commit
/// fails, the store fails closed: that batch and every later append get `unavailable` until the
/// process restarts, since a log with a gap it cannot explain is worse than no service.
public final class AuditStore: Sendable {
    public let origin: String
    public let path: String
    let pool: DatabasePool
    private let queue = DispatchQueue(label: "openkcm.audit.writer")
    private let state: Mutex<State>

    /// Appends after which the store asks for a checkpoint (`onCheckpointDue`).
    let checkpointEvery: UInt64
    private let onCheckpointDue: Mutex<(@Sendable () -> Void)?> = Mutex(nil)

    struct State {
        var pending: [Pending] = []
        var flushing = false
        var failure: AuditError?
        /// The committed tree: only the writer thread advances it, after a commit.
        var frontier: MerkleFrontier
        var chain: Hash
        var lastTime: Int64
        var lastCheckpointSize: UInt64?
        var dueSignalled = false
        /// Records below this position are in `audit_filter`.
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
    public init(path: String, origin proposedOrigin: String? = nil, checkpointEvery: UInt64 = 1000) throws {
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw AuditError(.unavailable, "cannot open the audit store \(path): \(String(cString: strerror(errno)))")
        }
        fchmod(descriptor, 0o600)
        close(descriptor)
        var configuration = Configuration()
        configuration.label = "Audit"
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in
            // Every commit reaches the disk before the caller hears of it.
            try db.execute(sql: "PRAGMA synchronous = FULL")
            // The indexes take inserts all over their B-trees: keep their pages in memory
            // (64 MiB) rather than reading them back for every batch, and checkpoint the WAL
            // into the main file in larger, rarer steps.
            try db.execute(sql: "PRAGMA cache_size = -65536")
            try db.execute(sql: "PRAGMA wal_autocheckpoint = 4096")
        }
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
            try Self.migrator.migrate(pool)
        } catch {
            throw AuditError(.unavailable, "cannot open the audit store \(path): \(error)")
        }
        self.path = path
        self.checkpointEvery = max(1, checkpointEvery)
        let loaded = try pool.write { db -> (String, MerkleFrontier, Hash, Int64, UInt64?, UInt64) in
            let origin: String
            if let existing = try String.fetchOne(db, sql: "SELECT value FROM audit_meta WHERE key = 'origin'") {
                origin = existing
            } else {
                origin = proposedOrigin ?? "openkcm.local/audit/\(UUID().uuidString.lowercased())"
                try db.execute(sql: "INSERT INTO audit_meta (key, value) VALUES ('origin', ?)", arguments: [origin])
            }
            let size = UInt64(try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(seq) + 1, 0) FROM audit_record") ?? 0)
            let frontier = try MerkleFrontier(size: size, hashes: try Self.frontierHashes(db, size: size))
            let chain = try Data.fetchOne(db, sql: "SELECT chain FROM audit_record WHERE seq = ?", arguments: [Int64(size) - 1])
                .map(Array.init) ?? AuditExport.initialChain
            let lastTime = try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(time), 0) FROM audit_record") ?? 0
            let lastCheckpoint = try Int64.fetchOne(db, sql: "SELECT MAX(size) FROM audit_checkpoint").map(UInt64.init)
            let indexed = UInt64(try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(seq) + 1, 0) FROM audit_filter") ?? 0)
            return (origin, frontier, chain, lastTime, lastCheckpoint, indexed)
        }
        origin = loaded.0
        state = Mutex(State(frontier: loaded.1, chain: loaded.2, lastTime: loaded.3, lastCheckpointSize: loaded.4,
                            indexedUpTo: loaded.5))
        try checkLatestCheckpoint()
    }

    /// Called (once per due point, on the writer thread) when `checkpointEvery` records have
    /// been committed since the last checkpoint.
    public func setCheckpointHandler(_ handler: @escaping @Sendable () -> Void) {
        onCheckpointDue.withLock { $0 = handler }
    }

    public var head: TreeHead {
        state.withLock { TreeHead(size: $0.frontier.size, root: $0.frontier.root) }
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
            let (batch, frontierBefore, chainBefore, lastTime) = state.withLock { state in
                let batch = state.pending
                state.pending.removeAll(keepingCapacity: true)
                if batch.isEmpty { state.flushing = false }
                return (batch, state.frontier, state.chain, state.lastTime)
            }
            if batch.isEmpty { return }
            commit(batch, frontier: frontierBefore, chain: chainBefore, lastTime: lastTime)
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
        let (from, to, due) = state.withLock { state -> (UInt64, UInt64, Bool) in
            let lag = state.frontier.size - state.indexedUpTo
            let due = lag > 0 && (force || lag >= Self.indexEvery || ContinuousClock.now - state.lastIndexed >= Self.indexInterval)
            return (state.indexedUpTo, state.frontier.size, due)
        }
        guard due, state.withLock({ $0.failure }) == nil else { return }
        do {
            try pool.write { db in
                try db.execute(sql: """
                    INSERT INTO audit_filter (seq, time, tenant, key_ref, actor, operation, outcome)
                    SELECT seq, time, tenant, key_ref, actor, operation, outcome FROM audit_record
                    WHERE seq >= ? AND seq < ? ORDER BY seq
                    """, arguments: [Int64(from), Int64(to)])
            }
            state.withLock { state in
                state.indexedUpTo = to
                state.lastIndexed = .now
            }
        } catch {
            // The records are safe; only filtering lags, and queries scan the lag. Retried at
            // the next commit.
            state.withLock { $0.lastIndexed = .now }
        }
    }

    private func commit(_ batch: [Pending], frontier start: MerkleFrontier, chain start_: Hash, lastTime: Int64) {
        var frontier = start
        var chain = start_
        let now = max(Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)), lastTime)
        let time = Array(RFC3339.format(milliseconds: now).utf8)
        var rows: [(record: AuditRecord, body: [UInt8], leaf: Hash, chain: Hash)] = []
        var nodes: [(Int, UInt64, Hash)] = []
        var accepted: [CheckedContinuation<AuditRecord, any Error>] = []
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
            accepted.append(pending.continuation)
        }
        do {
            if !rows.isEmpty { try insert(rows, nodes: nodes) }
        } catch {
            let failure = AuditError(.unavailable, "the audit store cannot write: \(error)")
            let stranded = state.withLock { state in
                state.failure = failure
                let stranded = state.pending
                state.pending.removeAll()
                return stranded.map(\.continuation)
            }
            for continuation in accepted + stranded { continuation.resume(throwing: failure) }
            return
        }
        let due: Bool = state.withLock { state in
            state.frontier = frontier
            state.chain = chain
            state.lastTime = now
            let since = frontier.size - (state.lastCheckpointSize ?? 0)
            if since >= checkpointEvery, !state.dueSignalled {
                state.dueSignalled = true
                return true
            }
            return false
        }
        for (row, continuation) in zip(rows, accepted) { continuation.resume(returning: row.record) }
        if due, let handler = onCheckpointDue.withLock({ $0 }) { handler() }
    }

    private func insert(_ rows: [(record: AuditRecord, body: [UInt8], leaf: Hash, chain: Hash)], nodes: [(Int, UInt64, Hash)]) throws {
        try pool.write { db in
            let statement = try db.cachedStatement(sql: """
                INSERT INTO audit_record (seq, time, tenant, key_ref, actor, operation, outcome, body, leaf, chain)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """)
            for row in rows {
                let record = row.record
                try statement.execute(arguments: [Int64(record.seq), record.time, record.tenant, record.keyReference, record.actor.id,
                                                  record.operation, record.outcome.rawValue, Data(row.body), Data(row.leaf), Data(row.chain)])
            }
            let node = try db.cachedStatement(sql: "INSERT INTO audit_node (level, idx, hash) VALUES (?, ?, ?)")
            for (level, index, hash) in nodes {
                try node.execute(arguments: [level, Int64(index), Data(hash)])
            }
        }
    }

    // MARK: - Checkpoints

    /// Stores a signed checkpoint of the committed tree and returns it.
    func store(_ checkpoint: SignedCheckpoint) throws {
        try pool.write { db in
            try db.execute(sql: "INSERT OR IGNORE INTO audit_checkpoint (size, time, root, note) VALUES (?, ?, ?, ?)",
                           arguments: [Int64(checkpoint.checkpoint.size), checkpoint.checkpoint.time,
                                       Data(checkpoint.checkpoint.root), checkpoint.text])
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
        do { return try pool.read(body) } catch let error as AuditError { throw error } catch {
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
            let rows = try Row.fetchCursor(db, sql: "SELECT seq, body, chain FROM audit_record WHERE seq >= ? AND seq < ? ORDER BY seq",
                                           arguments: [Int64(start), Int64(end)])
            while let row = try rows.next() {
                let seq: Int64 = row[0]
                let body: Data = row[1], chain: Data = row[2]
                try line(AuditExport.recordLine(chain: Array(chain), body: Array(body)))
                try emitCheckpoints(upTo: UInt64(seq) + 1)
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

    // MARK: - Schema

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                CREATE TABLE audit_record (
                    seq INTEGER PRIMARY KEY,
                    time INTEGER NOT NULL,
                    tenant TEXT,
                    key_ref TEXT,
                    actor TEXT NOT NULL,
                    operation TEXT NOT NULL,
                    outcome TEXT NOT NULL,
                    body BLOB NOT NULL,
                    leaf BLOB NOT NULL CHECK (length(leaf) = 32),
                    chain BLOB NOT NULL CHECK (length(chain) = 32)
                );
                -- The filter columns again, indexed in bulk behind the log (see `index`).
                CREATE TABLE audit_filter (
                    seq INTEGER PRIMARY KEY,
                    time INTEGER NOT NULL,
                    tenant TEXT,
                    key_ref TEXT,
                    actor TEXT NOT NULL,
                    operation TEXT NOT NULL,
                    outcome TEXT NOT NULL
                );
                CREATE INDEX audit_filter_tenant ON audit_filter (tenant, seq);
                CREATE INDEX audit_filter_key ON audit_filter (key_ref, seq);
                CREATE INDEX audit_filter_actor ON audit_filter (actor, seq);
                CREATE INDEX audit_filter_operation ON audit_filter (operation, seq);
                CREATE INDEX audit_filter_time ON audit_filter (time);
                CREATE TABLE audit_node (
                    level INTEGER NOT NULL,
                    idx INTEGER NOT NULL,
                    hash BLOB NOT NULL CHECK (length(hash) = 32),
                    PRIMARY KEY (level, idx)
                ) WITHOUT ROWID;
                CREATE TABLE audit_checkpoint (
                    size INTEGER PRIMARY KEY,
                    time INTEGER NOT NULL,
                    root BLOB NOT NULL,
                    note TEXT NOT NULL
                );
                """)
            // Retention: the service never changes or removes what it has written.
            for table in ["audit_meta", "audit_record", "audit_node", "audit_checkpoint", "audit_filter"] {
                try db.execute(sql: """
                    CREATE TRIGGER \(table)_no_update BEFORE UPDATE ON \(table)
                    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
                    CREATE TRIGGER \(table)_no_delete BEFORE DELETE ON \(table)
                    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
                    """)
            }
        }
        return migrator
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
