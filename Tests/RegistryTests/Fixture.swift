import Foundation
@testable import Registry

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
