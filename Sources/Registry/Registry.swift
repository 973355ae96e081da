import Foundation
import GRDB
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The system of record: tenants, L1 links, L2 records, IVK versions, handshake attempts and
/// the event outbox, in one SQLite file.
///
/// Every method is one transaction on GRDB's own dispatch queues (the async `read`/`write`
/// suspend the caller instead of blocking Swift's cooperative pool). Writes are serialised and
/// begin IMMEDIATE, so a rule checked inside a write (one live link per tenant) cannot race
/// another writer, in this process or another. Constraint failures come out as
/// `RegistryError`; anything else (disk full, I/O error) propagates as it is.
public final class Registry: Sendable {
    let writer: any DatabaseWriter
    /// Whether the calling thread may block on SQLite: true on threads made for blocking work
    /// (the gateway's PKCS#11 threads), where a synchronous access costs microseconds while a
    /// hop to GRDB's queue and back costs two thread wake-ups. Elsewhere (Swift's cooperative
    /// pool) accesses go through GRDB's async API.
    let blockingAllowed: @Sendable () -> Bool

    /// The database file; nil for an in-memory registry.
    public let path: String?

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
        var configuration = Self.configuration()
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA secure_delete = ON")
        }
        // DatabasePool puts the file in WAL mode itself and sets `synchronous=NORMAL` on its one
        // writer connection; `durableWrite` raises it to FULL around the kill-switch's commit.
        let pool = try DatabasePool(path: path, configuration: configuration)
        try self.init(writer: pool, path: path, blockingAllowed: blockingAllowed)
    }

    /// A registry that lives in memory only, with the same schema: for tests.
    public static func inMemory() throws -> Registry {
        try Registry(writer: DatabaseQueue(configuration: configuration()), path: nil)
    }

    init(writer: any DatabaseWriter, path: String?, blockingAllowed: @escaping @Sendable () -> Bool = { false }) throws {
        self.writer = writer
        self.blockingAllowed = blockingAllowed
        self.path = path
        try RegistrySchema.migrator.migrate(writer)
    }

    private static func configuration() -> Configuration {
        var configuration = Configuration()
        configuration.label = "Registry"
        configuration.foreignKeysEnabled = true
        // Another process (a second gateway, `cmk` tooling) may hold the write lock briefly;
        // wait for it rather than fail at once.
        configuration.busyMode = .timeout(10)
        return configuration
    }

    /// Creates the file with mode 0600 before SQLite opens it (so it is never readable by
    /// others, not even for an instant), and tightens an existing file we own to 0600.
    private static func restrictPermissions(_ path: String) throws {
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
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
            if blockingAllowed() { return try writeNow(updates) }
            return try await writer.write(updates)
        } catch let error as DatabaseError {
            throw RegistryError(error) ?? error
        }
    }

    // Synchronous accesses (from a non-async function, so that GRDB's blocking overloads are
    // the ones chosen).
    private func writeNow<T>(_ updates: (Database) throws -> T) throws -> T { try writer.write(updates) }
    private func readNow<T>(_ value: (Database) throws -> T) throws -> T { try writer.read(value) }

    /// A write whose commit is synced to disk before it returns (`synchronous=FULL` for this
    /// transaction only), for what must survive a power loss: the kill-switch.
    func durableWrite<T: Sendable>(_ updates: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await writer.writeWithoutTransaction { db in
                try db.execute(sql: "PRAGMA synchronous = FULL")
                defer { try? db.execute(sql: "PRAGMA synchronous = NORMAL") }
                var result: T?
                try db.inTransaction(.immediate) {
                    result = try updates(db)
                    return .commit
                }
                return result!
            }
        } catch let error as DatabaseError {
            throw RegistryError(error) ?? error
        }
    }

    func read<T: Sendable>(_ value: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            if blockingAllowed() { return try readNow(value) }
            return try await writer.read(value)
        } catch let error as DatabaseError {
            throw RegistryError(error) ?? error
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
        try await writer.writeWithoutTransaction { db in
            StorageSettings(
                journalMode: try String.fetchOne(db, sql: "PRAGMA journal_mode") ?? "",
                synchronous: try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1,
                foreignKeys: try Bool.fetchOne(db, sql: "PRAGMA foreign_keys") ?? false,
                appliedMigrations: try RegistrySchema.migrator.appliedMigrations(db),
                indexes: try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name")
            )
        }
    }

    /// Problems found by SQLite's own checks and by the Registry's invariants; empty when the
    /// store is sound. The invariants are re-stated here independently of the schema, so a
    /// schema change that drops a constraint is caught.
    func consistencyProblems() async throws -> [String] {
        try await read { db in
            var problems: [String] = []
            let integrity = try String.fetchAll(db, sql: "PRAGMA integrity_check")
            if integrity != ["ok"] { problems += integrity }
            for row in try Row.fetchAll(db, sql: "PRAGMA foreign_key_check") {
                problems.append("dangling reference in \(row[0] as String? ?? "?")")
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
