public import Foundation
import Storage

/// A regional node: the gateway knows it by its identity keys, never by a shared secret.
public struct Node: Codable, Sendable, Equatable {
    public var id: String
    public var region: String
    /// Ed25519 public key: every request the node makes is signed with its private half.
    public var signingKey: Data
    /// X25519 public key: unsealed L2 keys are sealed to it (HPKE).
    public var hpkeKey: Data
    public var enrolledAt: Date
    public var lastSeenAt: Date?
    /// Disabled: its requests are refused (`node_disabled`) and its acknowledgements not awaited.
    public var disabledAt: Date? = nil
    /// Removed for good; the row stays for the proofs that name it.
    public var removedAt: Date? = nil
    /// The last time its keys were replaced.
    public var rekeyedAt: Date? = nil

    /// Enabled and not removed: it may call the gateway, and revocations wait for it.
    public var isActive: Bool { disabledAt == nil && removedAt == nil }
}

/// A one-time enrolment token as stored: its hash, region, expiry and use.
public struct NodeEnrolment: Codable, Sendable, Equatable {
    public var id: String
    public var region: String
    public var createdAt: Date
    public var expiresAt: Date
    public var usedAt: Date?
    public var nodeID: String?
}

extension Node {
    init(row: Row) {
        self.init(id: row["id"], region: row["region"], signingKey: row["signing_key"], hpkeKey: row["hpke_key"],
                  enrolledAt: Date(registryMilliseconds: row["enrolled_at"]),
                  lastSeenAt: (row["last_seen_at"] as Int64?).map(Date.init(registryMilliseconds:)),
                  disabledAt: (row["disabled_at"] as Int64?).map(Date.init(registryMilliseconds:)),
                  removedAt: (row["removed_at"] as Int64?).map(Date.init(registryMilliseconds:)),
                  rekeyedAt: (row["rekeyed_at"] as Int64?).map(Date.init(registryMilliseconds:)))
    }
}

extension NodeEnrolment {
    init(row: Row) {
        self.init(id: row["id"], region: row["region"], createdAt: Date(registryMilliseconds: row["created_at"]),
                  expiresAt: Date(registryMilliseconds: row["expires_at"]),
                  usedAt: (row["used_at"] as Int64?).map(Date.init(registryMilliseconds:)), nodeID: row["node_id"])
    }
}

extension Registry {
    /// Records a new enrolment token by its hash (the caller shows the token once, never stores it).
    /// `approval`: the approved request this enrolment carries out (when enrolments need more
    /// than one person); it is used in the same transaction.
    public func createEnrolment(tokenHash: Data, region: String, expiresAt: Date,
                                approval: (id: String, by: String)? = nil) async throws -> NodeEnrolment {
        try Validation.region(region)
        guard tokenHash.count == 32 else { throw RegistryError(.invalidInput, "an enrolment token hash is 32 bytes") }
        let id = Self.newID()
        let at = Date()
        let now = at.registryMilliseconds
        return try await write { db in
            try self.consumeApproval(db, approval, operation: .nodeEnrolment, target: region, at: at)
            try db.execute(sql: """
                INSERT INTO node_enrolment (id, token_hash, region, created_at, expires_at) VALUES (?, ?, ?, ?, ?)
                """, arguments: [id, tokenHash, region, now, expiresAt.registryMilliseconds])
            return try NodeEnrolment(row: Row.fetchOne(db, sql: "SELECT * FROM node_enrolment WHERE id = ?", arguments: [id])!)
        }
    }

    /// Uses the enrolment token with `tokenHash` and records the node, in one transaction. A
    /// missing, used or expired token is one `notFound`, so the answer says nothing about which.
    public func enrolNode(tokenHash: Data, signingKey: Data, hpkeKey: Data, at date: Date) async throws -> Node {
        guard signingKey.count == 32, hpkeKey.count == 32 else {
            throw RegistryError(.invalidInput, "node public keys are 32 bytes each (Ed25519, X25519)")
        }
        let now = date.registryMilliseconds
        let id = Self.newID()
        return try await write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM node_enrolment WHERE token_hash = ?", arguments: [tokenHash]),
                  row["used_at"] as Int64? == nil, (row["expires_at"] as Int64) > now else {
                throw RegistryError(.notFound, "the enrolment token is unknown, used or expired")
            }
            if try Row.fetchOne(db, sql: "SELECT 1 FROM node WHERE signing_key = ?", arguments: [signingKey]) != nil {
                throw RegistryError(.conflict, "a node with this signing key is already enrolled")
            }
            try db.execute(sql: "INSERT INTO node (id, region, signing_key, hpke_key, enrolled_at) VALUES (?, ?, ?, ?, ?)",
                           arguments: [id, row["region"] as String, signingKey, hpkeKey, now])
            try db.execute(sql: "UPDATE node_enrolment SET used_at = ?, node_id = ? WHERE id = ?",
                           arguments: [now, id, row["id"] as String])
            return try Node(row: Row.fetchOne(db, sql: "SELECT * FROM node WHERE id = ?", arguments: [id])!)
        }
    }

    public func node(_ id: String) async throws -> Node {
        try await read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM node WHERE id = ?", arguments: [id]) else {
                throw RegistryError(.notFound, "no node \(id)")
            }
            return Node(row: row)
        }
    }

    /// Every enrolled node, in enrolment order.
    public func nodes() async throws -> [Node] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM node ORDER BY enrolled_at, id").map(Node.init(row:))
        }
    }

    /// Disables (or enables again) a node. `conflict` once it is removed.
    public func setNodeDisabled(_ id: String, _ disabled: Bool, at: Date = Date()) async throws -> Node {
        try await write { db in
            _ = try Self.liveNode(db, id)
            try db.execute(sql: "UPDATE node SET disabled_at = ? WHERE id = ?", arguments: [disabled ? at.registryMilliseconds : nil, id])
            return Node(row: try Row.fetchOne(db, sql: "SELECT * FROM node WHERE id = ?", arguments: [id])!)
        }
    }

    /// Removes a node for good (it keeps its row, for the proofs that name it).
    public func removeNode(_ id: String, at: Date = Date()) async throws -> Node {
        try await write { db in
            _ = try Self.liveNode(db, id)
            try db.execute(sql: "UPDATE node SET removed_at = ? WHERE id = ?", arguments: [at.registryMilliseconds, id])
            return Node(row: try Row.fetchOne(db, sql: "SELECT * FROM node WHERE id = ?", arguments: [id])!)
        }
    }

    /// Replaces a node's identity keys. `conflict` if it is disabled or removed, or the signing
    /// key belongs to another node.
    public func rekeyNode(_ id: String, signingKey: Data, hpkeKey: Data, at: Date = Date()) async throws -> Node {
        guard signingKey.count == 32, hpkeKey.count == 32 else {
            throw RegistryError(.invalidInput, "node public keys are 32 bytes each (Ed25519, X25519)")
        }
        return try await write { db in
            let node = try Self.liveNode(db, id)
            guard node.disabledAt == nil else { throw RegistryError(.conflict, "node \(id) is disabled") }
            try db.execute(sql: "UPDATE node SET signing_key = ?, hpke_key = ?, rekeyed_at = ? WHERE id = ?",
                           arguments: [signingKey, hpkeKey, at.registryMilliseconds, id])
            return Node(row: try Row.fetchOne(db, sql: "SELECT * FROM node WHERE id = ?", arguments: [id])!)
        }
    }

    private static func liveNode(_ db: Database, _ id: String) throws -> Node {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM node WHERE id = ?", arguments: [id]) else {
            throw RegistryError(.notFound, "no node \(id)")
        }
        let node = Node(row: row)
        guard node.removedAt == nil else { throw RegistryError(.conflict, "node \(id) was removed") }
        return node
    }

    public func touchNode(_ id: String, at date: Date) async throws {
        try await write { db in
            try db.execute(sql: "UPDATE node SET last_seen_at = ? WHERE id = ?", arguments: [date.registryMilliseconds, id])
        }
    }
}
