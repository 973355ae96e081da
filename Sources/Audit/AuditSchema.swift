import AuditFormat
import GRDB
import Storage
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The audit store's schema. SQLite's migrations are GRDB's (`grdb_migrations`); PostgreSQL's
/// (`AuditSchema+Postgres.swift`) carry the same identifiers. Never edit a shipped migration.
extension AuditSchema {
    /// The advisory lock every PostgreSQL writer of the audit log takes (ASCII "CMKA").
    static let postgresWriteLock: Int64 = 0x434D_4B41
    static let postgresMigrationTable = "audit_migrations"

    /// The audit file, mode 0600, opened and migrated.
    static func openFile(_ path: String) throws -> SQLStore {
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
        let pool = try DatabasePool(path: path, configuration: configuration)
        try migrator.migrate(pool)
        return SQLStore(sqlite: pool)
    }

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
        // The committed tree's head in one row (issue 17): every batch continues from it, so
        // that appenders in several processes make one chain. Filled at open from the records.
        migrator.registerMigration("v2-head") { db in
            try db.execute(sql: """
                CREATE TABLE audit_head (
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    size INTEGER NOT NULL CHECK (size >= 0),
                    chain BLOB NOT NULL CHECK (length(chain) = 32),
                    last_time INTEGER NOT NULL,
                    frontier BLOB NOT NULL CHECK (length(frontier) % 32 = 0)
                ) STRICT
                """)
        }
        return migrator
    }
}
