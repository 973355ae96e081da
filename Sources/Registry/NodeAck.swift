import CMKCore
public import Foundation
import Storage

/// A node's signed acknowledgement that it dropped the keys of a revoked link.
public struct NodeAck: Codable, Sendable, Equatable {
    public var eventID: String
    public var nodeID: String
    public var linkID: String
    public var keysDropped: Int
    /// The canonical JSON the node signed.
    public var statement: String
    /// Ed25519, 64 bytes, by the node's enrolled key over `statement`.
    public var signature: Data
    public var receivedAt: Date

    public init(eventID: String, nodeID: String, linkID: String, keysDropped: Int, statement: String, signature: Data, receivedAt: Date) {
        self.eventID = eventID
        self.nodeID = nodeID
        self.linkID = linkID
        self.keysDropped = keysDropped
        self.statement = statement
        self.signature = signature
        self.receivedAt = receivedAt
    }
}

extension NodeAck {
    init(row: Row) {
        self.init(eventID: row["event_id"], nodeID: row["node_id"], linkID: row["link_id"], keysDropped: row["keys_dropped"],
                  statement: row["statement"], signature: row["signature"], receivedAt: Date(registryMilliseconds: row["received_at"]))
    }
}

extension Registry {
    /// Stores acknowledgements in one transaction (they arrive by the hundred at once after a
    /// revocation); for each, true if stored, false if that node had acknowledged that event.
    public func recordAcks(_ acks: [NodeAck]) async throws -> [Bool] {
        try await write { db in
            let insert = try db.cachedStatement(sql: """
                INSERT INTO node_ack (event_id, node_id, link_id, keys_dropped, statement, signature, received_at)
                VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id, node_id) DO NOTHING
                """)
            let stored = try acks.map { ack in
                try insert.execute(arguments: [ack.eventID, ack.nodeID, ack.linkID, ack.keysDropped, ack.statement, ack.signature,
                                               ack.receivedAt.registryMilliseconds])
                return db.changesCount > 0
            }
            // A revocation's progress, watched on any replica, moved.
            if stored.contains(true) { try Registry.announce(db, .dashboard) }
            return stored
        }
    }

    public func acks(eventID: String) async throws -> [NodeAck] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM node_ack WHERE event_id = ? ORDER BY received_at, node_id",
                             arguments: [eventID]).map(NodeAck.init(row:))
        }
    }

    /// The latest revocation event of a link (a restored link may be revoked again), if any.
    public func revocationEvent(linkID: String) async throws -> OutboxEvent? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM outbox_event WHERE link_id = ? AND type = ? ORDER BY sequence DESC LIMIT 1",
                             arguments: [linkID, EventType.l1Revoked.rawValue]).map(OutboxEvent.init(row:))
        }
    }
}
