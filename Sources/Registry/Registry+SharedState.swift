public import Foundation
import Storage

/// State that every gateway replica must see, kept in the registry rather than in one
/// process's memory, so that neither a restart nor a request landing on another replica
/// forgets it (D99): node request nonces, idempotency records, failed logins by client address.
extension Registry {
    // MARK: - Node request nonces

    /// Claims each (node, nonce) until its expiry, in one transaction: true where the pair was
    /// new, false where it was seen before (a replay, on this replica or another). Expired
    /// pairs are pruned on the way. The rows are independent of every other table, so the
    /// transaction does not take the registry's write lock.
    public func claimNonces(_ claims: [(node: String, nonce: String, expiresAt: Int64)], now: Int64) async throws -> [Bool] {
        do {
            return try await store.writeIndependent { db in
                let insert = try db.cachedStatement(sql: """
                    INSERT INTO node_nonce (node_id, nonce, expires_at) VALUES (?, ?, ?) ON CONFLICT (node_id, nonce) DO NOTHING
                    """)
                let refresh = try db.cachedStatement(sql: """
                    UPDATE node_nonce SET expires_at = ? WHERE node_id = ? AND nonce = ? AND expires_at <= ?
                    """)
                let claimed = try claims.map { claim in
                    try insert.execute(arguments: [claim.node, claim.nonce, claim.expiresAt])
                    if db.changesCount > 0 { return true }
                    // An expired pair may be claimed again (its request is outside the window anyway).
                    try refresh.execute(arguments: [claim.expiresAt, claim.node, claim.nonce, now])
                    return db.changesCount > 0
                }
                if Int.random(in: 0..<64) == 0 {
                    try db.execute(sql: "DELETE FROM node_nonce WHERE expires_at <= ?", arguments: [now])
                }
                return claimed
            }
        } catch let error as SQLError {
            throw RegistryError(error)
        }
    }

    // MARK: - Idempotency records

    public enum IdempotencyClaim: Sendable, Equatable {
        /// The key is new (or its record expired): run the request, then `completeIdempotency`
        /// or `releaseIdempotency`.
        case run
        /// The first request succeeded: its response.
        case replay(status: Int, headers: String, body: Data)
        /// The first request is still running (on this replica or another).
        case inProgress
        /// The key was used with another request.
        case mismatch
    }

    /// Claims `key` for `subject`'s request. A record older than `lifetime` counts as absent; so
    /// does one still running after `stale` (its replica died with it in flight).
    public func claimIdempotency(subject: String, key: String, method: String, path: String, bodySHA256: Data,
                                 at now: Date, lifetime: TimeInterval, stale: TimeInterval) async throws -> IdempotencyClaim {
        let at = now.registryMilliseconds
        let expired = now.addingTimeInterval(-lifetime).registryMilliseconds
        let abandoned = now.addingTimeInterval(-stale).registryMilliseconds
        return try await write { db in
            try db.execute(sql: "DELETE FROM idempotency_record WHERE created_at <= ?", arguments: [expired])
            try db.execute(sql: "DELETE FROM idempotency_record WHERE subject = ? AND key = ? AND status IS NULL AND created_at <= ?",
                           arguments: [subject, key, abandoned])
            if let row = try Row.fetchOne(db, sql: "SELECT * FROM idempotency_record WHERE subject = ? AND key = ?", arguments: [subject, key]) {
                let sameRequest = (row["method"] as String) == method && (row["path"] as String) == path
                    && (row["body_sha256"] as Data) == bodySHA256
                guard sameRequest else { return .mismatch }
                guard let status = row["status"] as Int?, let headers = row["headers"] as String? else { return .inProgress }
                return .replay(status: status, headers: headers, body: row["body"] as Data? ?? Data())
            }
            try db.execute(sql: """
                INSERT INTO idempotency_record (subject, key, method, path, body_sha256, status, headers, body, replayable, created_at)
                VALUES (?, ?, ?, ?, ?, NULL, NULL, NULL, 1, ?)
                """, arguments: [subject, key, method, path, bodySHA256, at])
            return .run
        }
    }

    /// The request under `key` succeeded: keep its response for replays.
    public func completeIdempotency(subject: String, key: String, status: Int, headers: String, body: Data) async throws {
        try await write { db in
            try db.execute(sql: "UPDATE idempotency_record SET status = ?, headers = ?, body = ? WHERE subject = ? AND key = ?",
                           arguments: [status, headers, body, subject, key])
        }
    }

    /// The request under `key` failed: it changed nothing, and may be retried with the same key.
    public func releaseIdempotency(subject: String, key: String) async throws {
        try await write { db in
            try db.execute(sql: "DELETE FROM idempotency_record WHERE subject = ? AND key = ? AND status IS NULL",
                           arguments: [subject, key])
        }
    }

    // MARK: - Failed logins by client address

    /// The failures counted against `address`, and until when it is locked.
    public func addressFailures(_ address: String) async throws -> (count: Int, lockedUntil: Date?)? {
        try await read { db in try Self.addressFailure(db, address) }
    }

    /// One more failure from `address`; locked until `lockUntil` once `threshold` is reached.
    public func recordAddressFailure(_ address: String, threshold: Int, lockUntil: Date, at now: Date) async throws -> (count: Int, lockedUntil: Date?) {
        try await write { db in
            try db.execute(sql: """
                INSERT INTO login_failure (address, count, locked_until, updated_at) VALUES (?, 1, NULL, ?)
                ON CONFLICT (address) DO UPDATE SET count = login_failure.count + 1, updated_at = excluded.updated_at
                """, arguments: [address, now.registryMilliseconds])
            try db.execute(sql: "UPDATE login_failure SET locked_until = ? WHERE address = ? AND count >= ?",
                           arguments: [lockUntil.registryMilliseconds, address, threshold])
            guard let failure = try Self.addressFailure(db, address) else {
                throw RegistryError(.internal, "the login failure of an address vanished inside its own transaction")
            }
            return failure
        }
    }

    private static func addressFailure(_ db: Database, _ address: String) throws -> (count: Int, lockedUntil: Date?)? {
        try Row.fetchOne(db, sql: "SELECT count, locked_until FROM login_failure WHERE address = ?", arguments: [address]).map {
            (count: $0["count"] as Int, lockedUntil: ($0["locked_until"] as Int64?).map(Date.init(registryMilliseconds:)))
        }
    }

    /// A successful login from `address`: its failures are forgiven.
    public func clearAddressFailures(_ address: String) async throws {
        try await write { db in try db.execute(sql: "DELETE FROM login_failure WHERE address = ?", arguments: [address]) }
    }
}
