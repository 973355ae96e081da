import Foundation
@testable import Registry
import Storage
import TestSupport

/// The backend this run of the suite is on: SQLite by default; PostgreSQL when
/// `CMK_TEST_REGISTRY=postgres` (`Scripts/test` runs the suite both ways). Every test that is
/// about the domain runs on both; the few about one backend's files or settings say which.
enum TestBackend {
    static let current: Dialect = ProcessInfo.processInfo.environment["CMK_TEST_REGISTRY"] == "postgres" ? .postgres : .sqlite
    static var isSQLite: Bool { current == .sqlite }
    static var isPostgres: Bool { current == .postgres }
    /// The migrations a new store records: SQLite's one by one, PostgreSQL's baseline then the rest.
    static var migrations: [String] {
        isSQLite ? StorageTests.migrations : ["baseline-v9", "v10-ha"]
    }

    /// A blob literal in the backend's SQL (tests that write behind the registry's back).
    static func blob(_ hex: String) -> String { isSQLite ? "x'\(hex)'" : "'\\x\(hex)'::bytea" }

    /// A new, empty database in the test process's PostgreSQL cluster.
    static func freshPostgres() throws -> (settings: PostgresSettings, password: String) {
        let cluster = try PostgresCluster.shared()
        let name = try cluster.freshDatabase("registry")
        return (try PostgresSettings(url: cluster.url(database: name) + "?sslmode=disable&max_connections=8"), cluster.password)
    }
}

/// A registry of its own for one test: in memory (SQLite) or in a fresh PostgreSQL database.
func makeRegistry() async throws -> Registry {
    guard TestBackend.isPostgres else { return try Registry.inMemory() }
    let (settings, password) = try TestBackend.freshPostgres()
    return try await Registry.open(postgres: settings, password: password)
}

/// Runs `body` with a way to open registries on one fresh store (a file, or a PostgreSQL
/// database) as often as it likes: for what must survive closing and opening again, or be seen
/// by a second process.
func withTemporaryRegistry<T>(_ body: (@Sendable () async throws -> Registry) async throws -> T) async throws -> T {
    if TestBackend.isPostgres {
        let (settings, password) = try TestBackend.freshPostgres()
        return try await body { try await Registry.open(postgres: settings, password: password) }
    }
    return try await withTemporaryRegistryFile { path in try await body { try Registry(path: path) } }
}

/// Runs `body` with the path of a registry file in a fresh temporary directory, and removes the
/// directory afterwards. A function rather than an object with a `deinit`, so that the files
/// cannot be removed while the test still uses them (ARC may end an object's life at its last
/// use, not at the end of the scope).
func withTemporaryRegistryFile<T>(_ body: (String) async throws -> T) async throws -> T {
    let directory = FileManager.default.temporaryDirectory
        .appendingPathComponent("registry-tests-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    return try await body(directory.appendingPathComponent("registry.sqlite").path)
}

/// Values the tests share. Dates are whole seconds so that they survive the registry's
/// millisecond storage exactly.
enum Fixture {
    static let probedAt = Date(timeIntervalSince1970: 1_750_000_000)
    static let revokedAt = Date(timeIntervalSince1970: 1_750_000_600)
    static let probeReport = #"{"passed":true,"mechanism":"CKM_AES_KEY_WRAP_PAD","checks":[]}"#
    static let keyReference = "pkcs11:token=cmk-l1;object=tenant-root;type=secret-key"
    static let sovereignBinding = Data((0..<40).map { UInt8($0) })
    static let activeBinding = Data((0..<40).map { UInt8(255 - $0) })

    static func newL2(id: String = UUID().uuidString.lowercased()) -> NewL2 {
        NewL2(id: id, sovereignBinding: sovereignBinding, sovereignMechanism: "CKM_AES_KEY_WRAP_PAD+IVK",
              sovereignIVKVersion: 1, activeBinding: activeBinding, activeMechanism: "AES-256-GCM",
              activeIVKVersion: 1)
    }

    /// A tenant with one LINKED link and its ACTIVE L2.
    static func linkedTenant(_ registry: Registry, _ id: String = "acme") async throws -> (Tenant, L1Link, L2Key) {
        let tenant = try await registry.createTenant(id: id, name: "Acme \(id)")
        let (link, l2) = try await link(registry, tenant.id)
        return (tenant, link, l2)
    }

    /// Revokes (if needed), schedules and runs the shred of a link: the L2 is gone for good.
    @discardableResult
    static func shred(_ registry: Registry, _ link: L1Link) async throws -> (link: L1Link, l2: L2Key?, event: OutboxEvent) {
        var current = try await registry.link(tenantID: link.tenantID, id: link.id)
        if current.state == .linked {
            current = try await registry.revoke(tenantID: link.tenantID, linkID: link.id, expectedVersion: nil, at: revokedAt).link
        }
        _ = try await registry.scheduleShred(tenantID: link.tenantID, linkID: link.id, shredAfter: revokedAt.addingTimeInterval(60),
                                             approval: nil, at: revokedAt)
        let l2 = try await registry.l2Key(linkID: link.id)
        return try await registry.shred(linkID: link.id, sealedBinding: l2?.sovereignBinding ?? Data(), bindingSHA256: Data(repeating: 7, count: 32),
                                        at: revokedAt.addingTimeInterval(61))
    }

    static func link(_ registry: Registry, _ tenantID: String) async throws -> (L1Link, L2Key) {
        try await registry.createLink(tenantID: tenantID, provider: "pkcs11", keystoreID: "softhsm-cmk-l1",
                                      keyReference: keyReference, probeReport: probeReport, probedAt: probedAt,
                                      l2: newL2())
    }
}
