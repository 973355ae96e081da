import Foundation
import Storage

extension Registry {
    /// Keeps a handshake attempt, passed or failed. `notFound` if the tenant does not exist;
    /// `conflict` if an attempt with this id was already recorded.
    public func recordAttempt(_ attempt: HandshakeAttempt) async throws {
        try Validation.text(attempt.id, "an attempt id", maxLength: 128)
        try Validation.text(attempt.provider, "a provider", maxLength: 64)
        try Validation.text(attempt.keystoreID, "a keystore id")
        try Validation.keyReference(attempt.keyReference)
        try await write { db in
            _ = try Tenant.require(db, id: attempt.tenantID)
            if try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM handshake_attempt WHERE id = ?)",
                                 arguments: [attempt.id]) == true {
                throw RegistryError(.conflict, "handshake attempt \(attempt.id) is already recorded")
            }
            try db.execute(sql: """
                INSERT INTO handshake_attempt (id, tenant_id, provider, keystore_id, key_reference, passed,
                                               failure_code, failure_reason, at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [attempt.id, attempt.tenantID, attempt.provider, attempt.keystoreID, attempt.keyReference,
                                 attempt.passed, attempt.failureCode, attempt.failureReason, attempt.at.registryMilliseconds])
        }
    }

    /// The tenant's most recent attempts, newest first. `limit` is clamped to 1...500.
    /// `notFound` if the tenant does not exist.
    public func attempts(tenantID: String, limit: Int) async throws -> [HandshakeAttempt] {
        let limit = Cursor.clamp(limit)
        return try await read { db in
            _ = try Tenant.require(db, id: tenantID)
            return try Row.fetchAll(db, sql: """
                SELECT * FROM handshake_attempt WHERE tenant_id = ? ORDER BY at DESC, sequence DESC LIMIT ?
                """, arguments: [tenantID, limit])
                .map(HandshakeAttempt.init(row:))
        }
    }
}
