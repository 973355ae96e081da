import Foundation
public import Storage
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// At file scope, where `open` is the C function (inside `Registry` it is the static factory).
private func openFile(_ path: String, _ flags: Int32, _ mode: mode_t) -> Int32 { open(path, flags, mode) }

/// The system of record: tenants, L1 links, L2 records, IVK versions, handshake attempts and
/// the event outbox, in one SQLite file (the embedded default) or one PostgreSQL database
/// shared by several gateway replicas.
///
/// Every method is one transaction through `SQLStore`, whose rules it relies on: writes are
/// serialised (SQLite's `BEGIN IMMEDIATE`; PostgreSQL's advisory lock), so a rule checked
/// inside a write (one live link per tenant) cannot race another writer, in this process,
/// another replica or a `cmk` command; reads see one snapshot. The SQL is written once, in the
/// subset both backends share (D95). Constraint failures come out as `RegistryError`; a
/// database that cannot be reached as `RegistryError.unavailable`.
public final class Registry: Sendable {
    let store: SQLStore
    /// Whether the calling thread may block on the database: true on threads made for blocking
    /// work (the gateway's PKCS#11 threads), where a synchronous access costs microseconds while
    /// a hop to another queue and back costs two thread wake-ups. Elsewhere (Swift's
    /// cooperative pool) accesses go through the async API.
    let blockingAllowed: @Sendable () -> Bool

    /// The database file; nil for an in-memory registry or PostgreSQL.
    public let path: String?

    public var dialect: Dialect { store.dialect }

    /// Opens (creating if needed) the registry file at `path` and migrates it.
    ///
    /// WAL, so that readers never wait for the writer; `synchronous=NORMAL`, so that every commit
    /// survives a process crash, and the kill-switch's commit is made with `synchronous=FULL`
    /// (`durableWrite`), so that a revocation also survives a power loss (syncing the WAL then
    /// makes every earlier commit durable too) without an fsync on every probe result; foreign
    /// keys on; `secure_delete`, so that a deleted tenant's
    /// wrapped blobs are overwritten in the file rather than left in free pages. The file is
    /// mode 0600 (SQLite gives its -wal and -shm files the same mode).
    public convenience init(path: String, blockingAllowed: @escaping @Sendable () -> Bool = { false }) throws {
        try Self.restrictPermissions(path)
        try self.init(store: try RegistrySchema.openFile(path), path: path, blockingAllowed: blockingAllowed)
    }

    /// A registry that lives in memory only, with the same schema: for tests.
    public static func inMemory() throws -> Registry {
        try Registry(store: try RegistrySchema.openInMemory(), path: nil)
    }

    /// The registry on PostgreSQL, migrated (once, whichever replica gets there first).
    public static func open(postgres settings: PostgresSettings, password: String?,
                            blockingAllowed: @escaping @Sendable () -> Bool = { false }) async throws -> Registry {
        let store: SQLStore
        do {
            store = try SQLStore(postgres: settings, password: password, writeLock: RegistrySchema.postgresWriteLock)
            try await store.migrate(RegistrySchema.postgres, table: RegistrySchema.postgresMigrationTable)
        } catch let error as SQLError {
            throw RegistryError(error)
        }
        return try Registry(store: store, path: nil, blockingAllowed: blockingAllowed)
    }

    /// `database` as configured: a `postgres://` URL (the password from `password`), or the
    /// path of a SQLite file.
    public static func open(database: String, password: PasswordSource = .environment(PasswordSource.defaultVariable),
                            blockingAllowed: @escaping @Sendable () -> Bool = { false }) async throws -> Registry {
        guard PostgresSettings.isPostgresURL(database) else { return try Registry(path: database, blockingAllowed: blockingAllowed) }
        do {
            return try await open(postgres: try PostgresSettings(url: database), password: try password.read(), blockingAllowed: blockingAllowed)
        } catch let error as SQLError {
            throw RegistryError(error)
        }
    }

    init(store: SQLStore, path: String?, blockingAllowed: @escaping @Sendable () -> Bool = { false }) throws {
        self.store = store
        self.blockingAllowed = blockingAllowed
        self.path = path
    }

    /// Creates the file with mode 0600 before SQLite opens it (so it is never readable by
    /// others, not even for an instant), and tightens an existing file we own to 0600.
    private static func restrictPermissions(_ path: String) throws {
        let descriptor = openFile(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw RegistryError(.invalidInput, "cannot open the registry file \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(descriptor) }
        guard fchmod(descriptor, 0o600) == 0 else {
            throw RegistryError(.invalidInput, "cannot restrict the registry file \(path) to mode 0600: \(String(cString: strerror(errno)))")
        }
    }

    // MARK: - Access, with the error translation done once

    func write<T: Sendable>(_ updates: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            if blockingAllowed() { return try store.writeNow(updates) }
            return try await store.write(updates)
        } catch let error as SQLError {
            throw RegistryError(error)
        }
    }

    /// A write whose commit is synced to disk before it returns, for what must survive a
    /// power loss: the kill-switch.
    func durableWrite<T: Sendable>(_ updates: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await store.durableWrite(updates)
        } catch let error as SQLError {
            throw RegistryError(error)
        }
    }

    func read<T: Sendable>(_ value: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            if blockingAllowed() { return try store.readNow(value) }
            return try await store.read(value)
        } catch let error as SQLError {
            throw RegistryError(error)
        }
    }

    static func newID() -> String { UUID().uuidString.lowercased() }
}

extension Registry {
    /// What the storage is actually configured to, read back from SQLite (not from our
    /// intentions): for tests and diagnostics.
    struct StorageSettings: Sendable, Equatable {
        var journalMode: String
        /// 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA.
        var synchronous: Int
        var foreignKeys: Bool
        var appliedMigrations: [String]
        var indexes: [String]
    }

    /// Read on the writer connection: its settings are the ones that make a commit durable.
    func storageSettings() async throws -> StorageSettings {
        try await store.unlocked { db in
            switch db.dialect {
            case .sqlite:
                StorageSettings(
                    journalMode: try String.fetchOne(db, sql: "PRAGMA journal_mode") ?? "",
                    synchronous: try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1,
                    foreignKeys: try Bool.fetchOne(db, sql: "PRAGMA foreign_keys") ?? false,
                    appliedMigrations: try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations ORDER BY rowid"),
                    indexes: try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name")
                )
            case .postgres:
                StorageSettings(
                    journalMode: "wal",
                    // synchronous_commit on (or remote_*): every commit is flushed, as FULL is.
                    synchronous: try String.fetchOne(db, sql: "SHOW synchronous_commit") == "off" ? 1 : 2,
                    foreignKeys: true,
                    appliedMigrations: try String.fetchAll(db, sql: "SELECT id FROM \(RegistrySchema.postgresMigrationTable) ORDER BY position"),
                    indexes: try String.fetchAll(db, sql: "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() ORDER BY indexname")
                )
            }
        }
    }

    /// Problems found by SQLite's own checks and by the Registry's invariants; empty when the
    /// store is sound. The invariants are re-stated here independently of the schema, so a
    /// schema change that drops a constraint is caught.
    func consistencyProblems() async throws -> [String] {
        try await read { db in
            var problems: [String] = []
            // PostgreSQL checks pages and enforces references on every write; SQLite is asked.
            if db.dialect == .sqlite {
                let integrity = try String.fetchAll(db, sql: "PRAGMA integrity_check")
                if integrity != ["ok"] { problems += integrity }
                for row in try Row.fetchAll(db, sql: "PRAGMA foreign_key_check") {
                    problems.append("dangling reference in \(row[0] as String? ?? "?")")
                }
            }
            for tenant in try String.fetchAll(db, sql: """
                SELECT tenant_id FROM l1_link WHERE state IN ('PENDING_VALIDATION', 'LINKED') GROUP BY tenant_id HAVING count(*) > 1
                """) {
                problems.append("tenant \(tenant) has more than one live link")
            }
            for key in try String.fetchAll(db, sql: """
                SELECT l2_key.id FROM l2_key JOIN l1_link ON l1_link.id = l2_key.link_id
                WHERE (l1_link.state = 'LINKED') <> (l2_key.state = 'ACTIVE')
                   OR (l1_link.state = 'SHREDDED') <> (l2_key.state = 'SHREDDED')
                   OR (l2_key.state <> 'ACTIVE' AND l2_key.active_binding IS NOT NULL)
                   OR (l2_key.state = 'SHREDDED' AND l2_key.sovereign_binding IS NOT NULL)
                   OR l1_link.tenant_id <> l2_key.tenant_id
                   OR l2_key.sovereign_l1_version > l1_link.l1_version
                """) {
                problems.append("L2 key \(key) disagrees with its link")
            }
            return problems
        }
    }
}
