import Foundation
@testable import Registry
import Storage
import TestSupport
import Testing

/// What only PostgreSQL has: several processes migrating at once, TLS to the server, the
/// password kept out of the URL, and a server that goes away and comes back.
@Suite(.enabled(if: TestBackend.isPostgres), .serialized) struct PostgresStorageTests {
    @Test func replicasStartingTogetherMigrateOnce() async throws {
        let (settings, password) = try TestBackend.freshPostgres()
        let registries = try await withThrowingTaskGroup(of: Registry.self) { group in
            for _ in 0..<3 { group.addTask { try await Registry.open(postgres: settings, password: password) } }
            var all: [Registry] = []
            for try await registry in group { all.append(registry) }
            return all
        }
        for registry in registries {
            let stored = try await registry.storageSettings()
            #expect(stored.appliedMigrations == ["baseline-v9", "v10-ha"])
            #expect(stored.synchronous == 2, "synchronous_commit on: every commit is flushed")
            #expect(stored.indexes.contains("l1_link_one_live_per_tenant"))
        }
        _ = try await Fixture.linkedTenant(registries[0])
        #expect(try await registries[2].tenants(limit: 10, after: nil).items.map(\.id) == ["acme"])
        #expect(try await registries[1].consistencyProblems().isEmpty)
    }

    /// `max_connections` is a cap: transactions beyond it wait for a connection, none fails.
    @Test func transactionsBeyondTheConnectionCapWaitForOne() async throws {
        let cluster = try PostgresCluster.shared()
        let name = try cluster.freshDatabase("registry_cap")
        let registry = try await Registry.open(postgres: try PostgresSettings(url: cluster.url(database: name) + "?sslmode=disable&max_connections=2"),
                                               password: cluster.password)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<24 {
                group.addTask {
                    _ = try await registry.createTenant(id: "t\(index)", name: "T")
                    _ = try await registry.tenants(limit: 50, after: nil)
                }
            }
            try await group.waitForAll()
        }
        #expect(try await registry.tenants(limit: 50, after: nil).items.count == 24)
        let connections = try cluster.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = '\(name)'")
        #expect((Int(connections.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 99) <= 2)
    }

    @Test func tlsToTheServerIsVerifiedAgainstTheGivenCA() async throws {
        let cluster = try PostgresCluster.shared()
        let ca = try #require(cluster.caCertificatePath)
        let name = try cluster.freshDatabase("registry_tls")
        let byName = cluster.url(database: name).replacingOccurrences(of: "127.0.0.1", with: "localhost")
        let settings = try PostgresSettings(url: byName + "?sslmode=verify-full&sslrootcert=\(ca)")
        let registry = try await Registry.open(postgres: settings, password: cluster.password)
        _ = try await registry.createTenant(id: "acme", name: "Acme")
        let ssl = try cluster.psql("SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE ssl AND datname = '\(name)'")
        #expect((Int(ssl.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) >= 1, "the registry's connections use TLS")
        // Another CA: the server's certificate is refused, and nothing is opened.
        let other = try TestCA(directory: NSTemporaryDirectory() + "other-ca-" + UUID().uuidString)
        let untrusted = try PostgresSettings(url: byName + "?sslmode=verify-full&sslrootcert=\(other.certificatePath)")
        await #expect(throws: RegistryError.self) { _ = try await Registry.open(postgres: untrusted, password: cluster.password) }
    }

    @Test func thePasswordStaysOutOfTheURLAndAWrongOneIsAClearError() async throws {
        let cluster = try PostgresCluster.shared()
        #expect(throws: SQLError.self) { _ = try PostgresSettings(url: "postgres://cmk:secret@127.0.0.1:\(cluster.port)/postgres") }
        #expect(throws: SQLError.self) { _ = try PostgresSettings(url: "postgres://cmk@127.0.0.1:\(cluster.port)/postgres?sslmode=sometimes") }
        let settings = try PostgresSettings(url: cluster.url(database: "postgres") + "?sslmode=disable")
        let wrong = "not-the-password-\(UUID().uuidString)"
        do {
            _ = try await Registry.open(postgres: settings, password: wrong)
            Issue.record("a wrong password opened the registry")
        } catch let error as RegistryError {
            #expect(error.message.contains("password authentication failed"), "\(error.message)")
            #expect(!error.message.contains(wrong))
        }
    }

    /// The server restarts under the registry: what was in flight fails as `unavailable`, and
    /// the next call works again on a fresh connection, without the registry being reopened.
    @Test func theRegistryRecoversWhenTheServerRestartsOrDropsItsConnections() async throws {
        let cluster = try PostgresCluster.shared()
        let registry = try await makeRegistry()
        _ = try await Fixture.linkedTenant(registry)
        try cluster.restart()
        #expect(try await registry.tenants(limit: 10, after: nil).items.map(\.id) == ["acme"])
        let databases = try cluster.psql("SELECT datname FROM pg_stat_activity WHERE datname LIKE 'registry_%' GROUP BY datname")
        for database in databases.split(separator: "\n") { try cluster.terminateConnections(database: String(database)) }
        _ = try await registry.createTenant(id: "beta", name: "Beta")
        try cluster.stop()
        await #expect(throws: RegistryError(.unavailable, "")) { _ = try await registry.createTenant(id: "gamma", name: "Gamma") }
        try cluster.restart()
        #expect(try await registry.tenants(limit: 10, after: nil).items.map(\.id) == ["acme", "beta"])
    }
}
