#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One step of a PostgreSQL schema: the same identifier as the SQLite migration it matches
/// (GRDB's migrator applies those), and its statements in PostgreSQL's dialect.
public struct PostgresMigration: Sendable {
    public let id: String
    public let statements: [String]

    public init(_ id: String, _ statements: [String]) {
        self.id = id
        self.statements = statements
    }
}

extension SQLStore {
    /// Applies the migrations `table` does not list yet, in one transaction (PostgreSQL's DDL
    /// is transactional: a migration is all there or not at all) under an advisory lock, so
    /// that replicas starting together migrate once and the others wait and find it done.
    public func migrate(_ migrations: [PostgresMigration], table: String) async throws {
        guard case .postgres(let pool) = backend else { return }
        try await pool.blocking { [writeBegin] in
            try pool.transaction(begin: writeBegin) { db in
                try db.execute(sql: "CREATE TABLE IF NOT EXISTS \(table) (id TEXT PRIMARY KEY, position BIGSERIAL, applied_at BIGINT NOT NULL)")
                let applied = Set(try String.fetchAll(db, sql: "SELECT id FROM \(table)"))
                for migration in migrations where !applied.contains(migration.id) {
                    for statement in migration.statements { try db.execute(sql: statement) }
                    try db.execute(sql: "INSERT INTO \(table) (id, applied_at) VALUES (?, ?)",
                                   arguments: [migration.id, Self.nowMilliseconds()])
                }
            }
        }
    }

    /// The migrations recorded in `table`, in the order they were applied.
    public func appliedMigrations(table: String) async throws -> [String] {
        try await read { db in try String.fetchAll(db, sql: "SELECT id FROM \(table) ORDER BY position") }
    }

    static func nowMilliseconds() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return Int64(time.tv_sec) * 1000 + Int64(time.tv_nsec) / 1_000_000
    }
}
