import Foundation
import Testing
import GRDB
@testable import Registry
import Storage

/// The file itself: durability settings, permissions, migrations, visibility across connections.
@Suite(.enabled(if: TestBackend.isSQLite)) struct StorageTests {
    static let migrations = ["v1", "v2-nodes", "v3-node-acks", "v4-accounts", "v5-lifecycle", "v6-accounts-cli-audit",
                             "v7-node-lifecycle", "v8-app-credentials", "v9-node-leases", "v10-ha"]

    @Test func fileRegistryUsesWALAndFullSynchronousWritesForTheKillSwitch() async throws {
        try await withTemporaryRegistryFile { path in
            let registry = try Registry(path: path)
            let settings = try await registry.storageSettings()
            #expect(settings.journalMode == "wal")
            #expect(settings.synchronous == 1, "NORMAL: every commit survives a process crash")
            // The kill-switch's transaction runs with FULL: it survives a power loss too.
            let during = try await registry.durableWrite { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") }
            #expect(during == 2)
            #expect(try await registry.storageSettings().synchronous == 1)
            #expect(settings.foreignKeys)
            #expect(settings.appliedMigrations == StorageTests.migrations)
            #expect(settings.indexes.contains("l1_link_one_live_per_tenant"))
            #expect(registry.path == path)
        }
    }

    @Test func fileAndItsWALAreReadableByTheOwnerOnly() async throws {
        try await withTemporaryRegistryFile { path in
            let registry = try Registry(path: path)
            _ = try await registry.createTenant(id: "acme", name: "Acme")
            for file in [path, path + "-wal"] {
                let mode = (try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? NSNumber)?.intValue
                #expect(mode == 0o600, "\(file) has mode \(String(mode ?? -1, radix: 8))")
            }
        }
    }

    @Test func existingFileIsTightenedTo0600() async throws {
        try await withTemporaryRegistryFile { path in
            #expect(FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o644]))
            let registry = try Registry(path: path)
            let mode = (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber)?.intValue
            #expect(mode == 0o600)
            #expect(try await registry.storageSettings().appliedMigrations == StorageTests.migrations, "an empty file is a new registry")
        }
    }

    @Test func inMemoryRegistryHasNoPathAndTheSameSchema() async throws {
        let registry = try Registry.inMemory()
        #expect(registry.path == nil)
        let settings = try await registry.storageSettings()
        #expect(settings.appliedMigrations == StorageTests.migrations && settings.foreignKeys)
        #expect(settings.indexes.contains("l1_link_one_live_per_tenant"))
    }

    @Test func unopenablePathIsAClearError() throws {
        #expect(throws: RegistryError(.invalidInput, "")) {
            _ = try Registry(path: "/nonexistent-directory-\(UUID().uuidString)/registry.sqlite")
        }
    }
}

/// What both backends must do alike: data and migrations across opening again, commits visible
/// to an independent connection pool (another process, another replica).
@Suite struct StoreTests {
    /// What every replica shares: a nonce claimed through one registry is refused through
    /// another on the same store, and after reopening (a restart).
    @Test func aNonceClaimedOnceIsRefusedEverywhereAfterwards() async throws {
        try await withTemporaryRegistry { open in
            let (a, b) = (try await open(), try await open())
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            #expect(try await a.claimNonces([("node-1", "nonce-1", now + 60_000), ("node-1", "nonce-2", now + 60_000)], now: now) == [true, true])
            #expect(try await b.claimNonces([("node-1", "nonce-1", now + 60_000), ("node-2", "nonce-1", now + 60_000)], now: now) == [false, true])
            #expect(try await open().claimNonces([("node-1", "nonce-2", now + 60_000)], now: now) == [false])
            // Once its window is over, a pair may be claimed again (its request is refused by the clock anyway).
            #expect(try await b.claimNonces([("node-1", "nonce-1", now + 200_000)], now: now + 120_000) == [true])
        }
    }

    @Test func failedLoginsByAddressAreCountedForEveryReplica() async throws {
        try await withTemporaryRegistry { open in
            let (a, b) = (try await open(), try await open())
            let at = Date(timeIntervalSince1970: 1_750_000_000)
            _ = try await a.recordAddressFailure("10.0.0.9", threshold: 3, lockUntil: at.addingTimeInterval(900), at: at)
            _ = try await b.recordAddressFailure("10.0.0.9", threshold: 3, lockUntil: at.addingTimeInterval(900), at: at)
            let third = try await a.recordAddressFailure("10.0.0.9", threshold: 3, lockUntil: at.addingTimeInterval(900), at: at)
            #expect(third.count == 3 && third.lockedUntil == at.addingTimeInterval(900))
            #expect(try await b.addressFailures("10.0.0.9")?.lockedUntil == at.addingTimeInterval(900))
            try await b.clearAddressFailures("10.0.0.9")
            #expect(try await a.addressFailures("10.0.0.9") == nil)
        }
    }

    @Test func anIdempotencyRecordIsSeenByEveryReplica() async throws {
        try await withTemporaryRegistry { open in
            let (a, b) = (try await open(), try await open())
            let at = Date(timeIntervalSince1970: 1_750_000_000), hash = Data(repeating: 1, count: 32)
            func claim(_ registry: Registry, _ body: Data = Data(repeating: 1, count: 32), at time: Date? = nil) async throws -> Registry.IdempotencyClaim {
                try await registry.claimIdempotency(subject: "ana", key: "k1", method: "POST", path: "/api/v1/tenants", bodySHA256: body,
                                                    at: time ?? at, lifetime: 86_400, stale: 600)
            }
            #expect(try await claim(a) == .run)
            #expect(try await claim(b) == .inProgress)
            #expect(try await claim(b, Data(repeating: 2, count: 32)) == .mismatch)
            try await a.completeIdempotency(subject: "ana", key: "k1", status: 201, headers: "[]", body: Data("{}".utf8))
            #expect(try await claim(b) == .replay(status: 201, headers: "[]", body: Data("{}".utf8)))
            // A record whose request never finished (its replica died) frees the key after `stale`.
            #expect(try await b.claimIdempotency(subject: "ana", key: "k2", method: "POST", path: "/p", bodySHA256: hash, at: at, lifetime: 86_400, stale: 600) == .run)
            #expect(try await a.claimIdempotency(subject: "ana", key: "k2", method: "POST", path: "/p", bodySHA256: hash,
                                                 at: at.addingTimeInterval(601), lifetime: 86_400, stale: 600) == .run)
            // And every record after its lifetime.
            #expect(try await claim(a, at: at.addingTimeInterval(86_401)) == .run)
        }
    }

    @Test func reopeningRunsMigrationsOnceAndKeepsData() async throws {
        try await withTemporaryRegistry { open in
            let linkID: String
            do {
                let registry = try await open()
                let (_, link, _) = try await Fixture.linkedTenant(registry)
                _ = try await registry.addIVKVersion(keyReference: "pkcs11:token=platform;object=ivk-1")
                linkID = link.id
            }
            let reopened = try await open()
            #expect(try await reopened.storageSettings().appliedMigrations == TestBackend.migrations)
            #expect(try await reopened.tenant("acme").name == "Acme acme")
            #expect(try await reopened.link(tenantID: "acme", id: linkID).state == .linked)
            #expect(try await reopened.currentIVK()?.version == 1)
            // And a third open on the same file while the second is still open.
            let third = try await open()
            #expect(try await third.storageSettings().appliedMigrations == TestBackend.migrations)
            #expect(try await third.tenants(limit: 10, after: nil).items.map(\.id) == ["acme"])
            #expect(try await reopened.consistencyProblems().isEmpty)
        }
    }

    /// What a kill-switch needs from storage: once `revoke` returns, the revocation and its
    /// outbox event are committed for every other connection. Here a second, independent
    /// Registry on the same store (another connection pool, as another process would have) reads
    /// them while the first is still open. The stronger test, a server process killed with
    /// SIGKILL right after the commit and the file reopened, lives in the server tests, which
    /// can start a child process.
    @Test func committedRevocationIsVisibleToAnIndependentConnection() async throws {
        try await withTemporaryRegistry { open in
            let writer = try await open()
            let (_, link, l2) = try await Fixture.linkedTenant(writer)
            let revoked = try await writer.revoke(tenantID: "acme", linkID: link.id, expectedVersion: link.version,
                                                  at: Fixture.revokedAt)

            let other = try await open()
            #expect(try await other.link(tenantID: "acme", id: link.id) == revoked.link)
            #expect(try await other.link(tenantID: "acme", id: link.id).state == .revoked)
            let lockedL2 = try #require(try await other.l2Key(linkID: link.id))
            #expect(lockedL2.state == .locked && lockedL2.activeBinding == nil)
            #expect(lockedL2.id == l2.id && lockedL2.sovereignBinding == l2.sovereignBinding)
            #expect(try await other.events(after: 0, limit: 10) == [revoked.event])
            // The second connection also sees the rule: no second revocation.
            await #expect(throws: RegistryError(.conflict, "")) {
                try await other.revoke(tenantID: "acme", linkID: link.id, expectedVersion: nil, at: Fixture.revokedAt)
            }
            withExtendedLifetime(writer) {} // the first registry stays open until here
        }
    }

}
