import AuditFormat
import Storage

extension AuditStore {
    /// The committed tree as `audit_head` holds it: what the next batch continues from.
    struct Head {
        var frontier: MerkleFrontier
        var chain: Hash
        var lastTime: Int64

        /// The head in the database; nil when it is the one `known` (the common case: this
        /// process made the last commit), so the frontier is not decoded again.
        static func load(_ db: Database, ifNot known: Head) throws -> Head? {
            let row = try storedRow(db)
            let size: UInt64 = row["size"], chain: [UInt8] = row["chain"]
            if size == known.frontier.size, chain == known.chain { return nil }
            return try Head(row)
        }

        static func load(_ db: Database) throws -> Head { try Head(try storedRow(db)) }

        private static func storedRow(_ db: Database) throws -> Row {
            guard let row = try fetchRow(db) else { throw AuditError(.unavailable, "the audit store has no head row") }
            return row
        }

        private static func fetchRow(_ db: Database) throws -> Row? {
            try Row.fetchOne(db, sql: "SELECT size, chain, last_time, frontier FROM audit_head WHERE id = 1")
        }

        /// At open, in a write: the head row, made from the records if the store predates it
        /// (a SQLite file from before migration v2-head) or is new.
        static func loadOrCreate(_ db: Database) throws -> Head {
            if let row = try fetchRow(db) { return try Head(row) }
            let size = UInt64(try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(seq) + 1, 0) FROM audit_record") ?? 0)
            let frontier = try MerkleFrontier(size: size, hashes: try AuditStore.frontierHashes(db, size: size))
            let chain = try [UInt8].fetchOne(db, sql: "SELECT chain FROM audit_record WHERE seq = ?", arguments: [Int64(size) - 1])
                ?? AuditExport.initialChain
            let lastTime = try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(time), 0) FROM audit_record") ?? 0
            let head = Head(frontier: frontier, chain: chain, lastTime: lastTime)
            try db.execute(sql: "INSERT INTO audit_head (id, size, chain, last_time, frontier) VALUES (1, ?, ?, ?, ?)",
                           arguments: [Int64(size), chain, lastTime, head.frontier.hashes.flatMap { $0 }])
            return head
        }

        private init(_ row: Row) throws {
            let size: UInt64 = row["size"]
            let packed: [UInt8] = row["frontier"]
            let hashes = stride(from: 0, to: packed.count, by: 32).map { Array(packed[$0..<min($0 + 32, packed.count)]) }
            frontier = try MerkleFrontier(size: size, hashes: hashes)
            chain = row["chain"]
            lastTime = row["last_time"]
        }

        init(frontier: MerkleFrontier, chain: Hash, lastTime: Int64) {
            self.frontier = frontier
            self.chain = chain
            self.lastTime = lastTime
        }

        func store(_ db: Database) throws {
            try db.execute(sql: "UPDATE audit_head SET size = ?, chain = ?, last_time = ?, frontier = ? WHERE id = 1",
                           arguments: [Int64(frontier.size), chain, lastTime, frontier.hashes.flatMap { $0 }])
            guard db.changesCount == 1 else { throw AuditError(.unavailable, "the audit store's head row is missing") }
        }
    }
}
