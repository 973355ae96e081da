import Foundation
import GRDB
@testable import Registry
import Storage
import Testing

/// The schema's own backstops, hit directly with SQL that bypasses the Swift checks: a bug in a
/// later version, or another program writing the file, still cannot break the rules.
@Suite struct SchemaTests {
    func rawWrite(_ registry: Registry, _ sql: String) async throws {
        try await registry.write { db in try db.execute(sql: sql) }
    }

    @Test func partialUniqueIndexRefusesASecondLiveLink() async throws {
        let registry = try await makeRegistry()
        let (_, link, _) = try await Fixture.linkedTenant(registry)
        await #expect(throws: RegistryError(.conflict, "")) {
            try await rawWrite(registry, """
                INSERT INTO l1_link (id, tenant_id, provider, keystore_id, key_reference, l1_version, state, epoch, created_at, version)
                SELECT 'second', tenant_id, provider, keystore_id, key_reference, 1, 'PENDING_VALIDATION', 1, created_at, 1
                FROM l1_link WHERE id = '\(link.id)'
                """)
        }
    }

    @Test func revokedLinkIsNotRestoredWithoutANewEpoch() async throws {
        let registry = try await makeRegistry()
        let (_, link, _) = try await Fixture.linkedTenant(registry)
        _ = try await registry.revoke(tenantID: "acme", linkID: link.id, expectedVersion: nil, at: Fixture.revokedAt)
        await #expect(throws: RegistryError(.conflict, "")) {
            try await rawWrite(registry, "UPDATE l1_link SET state = 'LINKED', revoked_at = NULL WHERE id = '\(link.id)'")
        }
        #expect(try await registry.link(tenantID: "acme", id: link.id).state == .revoked)
    }

    @Test func linkCannotBeRevokedWhileItsL2IsActive() async throws {
        let registry = try await makeRegistry()
        let (_, link, _) = try await Fixture.linkedTenant(registry)
        await #expect(throws: RegistryError(.conflict, "")) {
            try await rawWrite(registry, "UPDATE l1_link SET state = 'REVOKED', revoked_at = 1 WHERE id = '\(link.id)'")
        }
        #expect(try await registry.link(tenantID: "acme", id: link.id).state == .linked)
    }

    @Test func lockedL2CannotKeepOrRegainAnActiveBinding() async throws {
        let registry = try await makeRegistry()
        let (_, link, l2) = try await Fixture.linkedTenant(registry)
        await #expect(throws: RegistryError(.invalidInput, "")) {
            try await rawWrite(registry, "UPDATE l2_key SET state = 'LOCKED', locked_at = 1 WHERE id = '\(l2.id)'")
        }
        _ = try await registry.revoke(tenantID: "acme", linkID: link.id, expectedVersion: nil, at: Fixture.revokedAt)
        await #expect(throws: RegistryError(.conflict, "")) {
            try await rawWrite(registry, """
                UPDATE l2_key SET state = 'ACTIVE', locked_at = NULL, active_binding = \(TestBackend.blob("00")), active_mechanism = 'm',
                                  active_ivk_version = 1
                WHERE id = '\(l2.id)'
                """)
        }
        #expect(try await registry.l2Key(linkID: link.id)?.state == .locked)
    }

    @Test func l2CannotPointAtALinkOfAnotherTenant() async throws {
        let registry = try await makeRegistry()
        let (_, linkOfA, _) = try await Fixture.linkedTenant(registry, "a")
        _ = try await registry.createTenant(id: "b", name: "B")
        await #expect(throws: RegistryError(.conflict, "")) {
            try await rawWrite(registry, """
                INSERT INTO l2_key (id, tenant_id, link_id, sovereign_binding, sovereign_mechanism, sovereign_ivk_version, sovereign_l1_version,
                                    active_binding, active_mechanism, active_ivk_version, state, created_at, version)
                VALUES ('x', 'b', '\(linkOfA.id)', \(TestBackend.blob("01")), 'm', 1, 1, \(TestBackend.blob("01")), 'm', 1, 'ACTIVE', 0, 1)
                """)
        }
    }

    @Test func aNewLinkBesideARestorableOneIsRefusedByTheSchema() async throws {
        let registry = try await makeRegistry()
        let (_, link, _) = try await Fixture.linkedTenant(registry)
        _ = try await registry.revoke(tenantID: "acme", linkID: link.id, expectedVersion: nil, at: Fixture.revokedAt)
        await #expect(throws: RegistryError(.conflict, "")) {
            try await rawWrite(registry, """
                INSERT INTO l1_link (id, tenant_id, provider, keystore_id, key_reference, l1_version, state, epoch, created_at, version)
                VALUES ('second', 'acme', 'pkcs11', 'k', 'pkcs11:object=x', 1, 'LINKED', 1, 0, 1)
                """)
        }
    }

    @Test func tenantWithLinksCannotBeDeletedBehindTheRegistrysBack() async throws {
        let registry = try await makeRegistry()
        _ = try await Fixture.linkedTenant(registry)
        await #expect(throws: RegistryError(.conflict, "")) {
            try await rawWrite(registry, "DELETE FROM tenant WHERE id = 'acme'")
        }
    }
}
