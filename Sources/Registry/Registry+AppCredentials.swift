import CMKCore
public import Foundation
import Storage

/// A credential an application presents to a node: what it grants (tenants) and until when.
/// The credential itself (signed by the gateway) is shown once and never stored.
public struct AppCredentialRecord: Codable, Sendable, Equatable {
    public var id: String
    public var name: String
    public var tenants: [String]
    public var createdAt: Date
    public var createdBy: String
    public var expiresAt: Date
    public var revokedAt: Date?
}

extension AppCredentialRecord {
    init(row: Row) throws {
        self.init(id: row["id"], name: row["name"], tenants: try JSONDecoder().decode([String].self, from: Data((row["tenants"] as String).utf8)),
                  createdAt: Date(registryMilliseconds: row["created_at"]), createdBy: row["created_by"],
                  expiresAt: Date(registryMilliseconds: row["expires_at"]),
                  revokedAt: (row["revoked_at"] as Int64?).map(Date.init(registryMilliseconds:)))
    }
}

extension Registry {
    public func createAppCredential(id: String, name: String, tenants: [String], createdBy: String, expiresAt: Date,
                                    at: Date = Date()) async throws -> AppCredentialRecord {
        try Validation.text(name, "a credential name", maxLength: 64)
        guard !tenants.isEmpty, tenants.count <= 64, Set(tenants).count == tenants.count else {
            throw RegistryError(.invalidInput, "a credential names 1-64 distinct tenants")
        }
        for tenant in tenants { try Validation.tenantID(tenant) }
        let tenantsText = String(decoding: try JSONEncoder().encode(tenants.sorted()), as: UTF8.self)
        return try await write { db in
            for tenant in tenants { _ = try Tenant.require(db, id: tenant) }
            try db.execute(sql: """
                INSERT INTO app_credential (id, name, tenants, created_at, created_by, expires_at) VALUES (?, ?, ?, ?, ?, ?)
                """, arguments: [id, name, tenantsText, at.registryMilliseconds, createdBy, expiresAt.registryMilliseconds])
            return try AppCredentialRecord(row: try Row.fetchOne(db, sql: "SELECT * FROM app_credential WHERE id = ?", arguments: [id])!)
        }
    }

    public func appCredentials() async throws -> [AppCredentialRecord] {
        try await read { db in try Row.fetchAll(db, sql: "SELECT * FROM app_credential ORDER BY created_at, id").map(AppCredentialRecord.init(row:)) }
    }

    /// Revokes a credential and announces it to nodes (`credential.revoked`), in one transaction.
    public func revokeAppCredential(id: String, at: Date = Date()) async throws -> (AppCredentialRecord, OutboxEvent) {
        let eventID = Self.newID()
        return try await durableWrite { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM app_credential WHERE id = ?", arguments: [id]) else {
                throw RegistryError(.notFound, "no app credential \(id)")
            }
            let record = try AppCredentialRecord(row: row)
            guard record.revokedAt == nil else { throw RegistryError(.conflict, "app credential \(id) is already revoked") }
            try db.execute(sql: "UPDATE app_credential SET revoked_at = ? WHERE id = ?", arguments: [at.registryMilliseconds, id])
            let payload = String(decoding: try JSONEncoder().encode(["id": id, "expiresAt": String(record.expiresAt.registryMilliseconds)]), as: UTF8.self)
            let event = try OutboxEvent.insert(db, id: eventID, type: EventType.credentialRevoked.rawValue, tenantID: record.tenants.first ?? "", linkID: nil,
                                               payload: payload, createdAt: at.registryMilliseconds)
            return (try AppCredentialRecord(row: try Row.fetchOne(db, sql: "SELECT * FROM app_credential WHERE id = ?", arguments: [id])!), event)
        }
    }

    /// Revoked credentials not yet expired: what a node must refuse (it asks when it connects).
    public func revokedAppCredentials(at: Date = Date()) async throws -> [AppCredentialRecord] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM app_credential WHERE revoked_at IS NOT NULL AND expires_at > ? ORDER BY id",
                             arguments: [at.registryMilliseconds]).map(AppCredentialRecord.init(row:))
        }
    }
}
