public import GRDB

/// One database, on either backend, with the transaction rules the repositories rely on:
///
/// - **writes are serialised**: SQLite's `BEGIN IMMEDIATE` (one writer per file), and on
///   PostgreSQL a transaction-scoped advisory lock every writer of this store takes first
///   (`writeLock`). A rule checked inside a write (one live link per tenant) therefore cannot
///   race another writer, in this process, another replica or a `cmk` command, and sequence
///   numbers become visible in the order they were given (the outbox's cursor relies on it);
/// - **reads see one snapshot**: SQLite's WAL readers, PostgreSQL's `REPEATABLE READ READ ONLY`;
/// - failures come out as `SQLError` (or the body's own error), translated once.
public final class SQLStore: Sendable {
    enum Backend: Sendable {
        case sqlite(any DatabaseWriter)
        case postgres(PostgresPool)
    }

    let backend: Backend
    /// How a PostgreSQL write opens: the transaction, then the advisory lock every writer of
    /// this store holds for its transaction (`writeLock` at init).
    let writeBegin: [String]
    /// How a PostgreSQL read opens: one snapshot for all its statements.
    static let readBegin = ["BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"]

    public var dialect: Dialect {
        switch backend {
        case .sqlite: .sqlite
        case .postgres: .postgres
        }
    }

    /// SQLite through a GRDB writer (a pool for a file, a queue in memory).
    public init(sqlite writer: any DatabaseWriter) {
        backend = .sqlite(writer)
        writeBegin = []
    }

    /// PostgreSQL; `writeLock` distinguishes the stores sharing one database (the registry and
    /// the audit log serialise their writers separately).
    public init(postgres settings: PostgresSettings, password: String?, writeLock: Int64) throws(SQLError) {
        backend = .postgres(try PostgresPool(settings: settings, password: password))
        writeBegin = ["BEGIN", "SELECT pg_advisory_xact_lock(\(writeLock))"]
    }

    /// The GRDB writer of a SQLite store (its migrations and pragmas), nil on PostgreSQL.
    public var sqliteWriter: (any DatabaseWriter)? {
        if case .sqlite(let writer) = backend { return writer }
        return nil
    }

    package var postgresPool: PostgresPool? {
        if case .postgres(let pool) = backend { return pool }
        return nil
    }

    /// Runs `body`, which blocks on the database (the `…Now` accesses), where blocking is
    /// allowed: the PostgreSQL pool's threads; for SQLite, in place.
    public func blockingWork<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        switch backend {
        case .sqlite: return try body()
        case .postgres(let pool): return try await pool.blocking(body)
        }
    }

    // MARK: - Transactions

    public func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        switch backend {
        case .sqlite(let writer):
            return try await translated { try await writer.write { db in try body(Database(SQLiteConnection(db))) } }
        case .postgres(let pool):
            return try await pool.blocking { [writeBegin] in try pool.transaction(begin: writeBegin, body) }
        }
    }

    /// A transaction on rows that no rule relates to any other (a nonce cache): on PostgreSQL it
    /// does not take the write lock, so it never waits behind the registry's writers. SQLite
    /// has one writer anyway.
    public func writeIndependent<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        switch backend {
        case .sqlite:
            return try await write(body)
        case .postgres(let pool):
            return try await pool.blocking { try pool.transaction(begin: ["BEGIN"], body) }
        }
    }

    public func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        switch backend {
        case .sqlite(let writer):
            return try await translated { try await writer.read { db in try body(Database(SQLiteConnection(db))) } }
        case .postgres(let pool):
            return try await pool.blocking { try pool.transaction(begin: Self.readBegin, readOnly: true, body) }
        }
    }

    /// A write whose commit is on stable storage before it returns, for what must survive a
    /// power loss (the kill-switch). SQLite: `synchronous=FULL` for this transaction (the file
    /// runs at NORMAL otherwise). PostgreSQL: every commit is (`synchronous_commit` on, the
    /// default, which Docs/Operations-HA.md tells operators to keep).
    public func durableWrite<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        switch backend {
        case .sqlite(let writer):
            return try await translated {
                try await writer.writeWithoutTransaction { db in
                    try db.execute(sql: "PRAGMA synchronous = FULL")
                    defer { try? db.execute(sql: "PRAGMA synchronous = NORMAL") }
                    var result: T?
                    try db.inTransaction(.immediate) {
                        result = try body(Database(SQLiteConnection(db)))
                        return .commit
                    }
                    return result!
                }
            }
        case .postgres:
            return try await write(body)
        }
    }

    /// As `write`, blocking the calling thread: for threads made for blocking work (the
    /// gateway's PKCS#11 threads), where a hop to another thread and back costs more than the
    /// statement. Never call it from Swift's cooperative pool.
    public func writeNow<T>(_ body: (Database) throws -> T) throws -> T {
        switch backend {
        case .sqlite(let writer):
            return try translatedNow { try writer.write { db in try body(Database(SQLiteConnection(db))) } }
        case .postgres(let pool):
            return try pool.transaction(begin: writeBegin, body)
        }
    }

    public func readNow<T>(_ body: (Database) throws -> T) throws -> T {
        switch backend {
        case .sqlite(let writer):
            return try translatedNow { try writer.read { db in try body(Database(SQLiteConnection(db))) } }
        case .postgres(let pool):
            return try pool.transaction(begin: Self.readBegin, readOnly: true, body)
        }
    }

    /// Statements outside any transaction, each committed on its own, on one connection: for
    /// diagnostics, and for a table whose rows are independent of each other (a nonce cache),
    /// where taking the write lock would only add waiting.
    public func unlocked<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        switch backend {
        case .sqlite(let writer):
            return try await translated { try await writer.writeWithoutTransaction { db in try body(Database(SQLiteConnection(db))) } }
        case .postgres(let pool):
            return try await pool.blocking { try pool.session(body) }
        }
    }

    /// Makes the bytes of rows that commits replaced or deleted unreachable in the store's files,
    /// as far as the backend allows. SQLite (with `secure_delete`, which rewrites freed pages):
    /// checkpoints the write-ahead log into the file and truncates it; false when readers kept
    /// the checkpoint from completing (try again). PostgreSQL: `VACUUM` of `tables`, which prunes
    /// dead row versions; what it cannot promise (freed space not zeroed, WAL segments until
    /// recycled, backups) is written down in Docs/ThreatModel.md.
    public func purgeReplacedRows(tables: [String]) async throws -> Bool {
        switch backend {
        case .sqlite(let writer):
            return try await writer.writeWithoutTransaction { db in
                do {
                    let result = try db.checkpoint(.truncate)
                    return result.walFrameCount == result.checkpointedFrameCount
                } catch let error as GRDB.DatabaseError where error.resultCode == .SQLITE_BUSY || error.resultCode == .SQLITE_LOCKED {
                    return false
                }
            }
        case .postgres(let pool):
            try await pool.blocking {
                try pool.session { db in for table in tables { try db.execute(sql: "VACUUM \(table)") } }
            }
            return true
        }
    }

    private func translated<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let error as GRDB.DatabaseError { throw SQLError(error) }
    }

    private func translatedNow<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as GRDB.DatabaseError { throw SQLError(error) }
    }
}
