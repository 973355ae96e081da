import Logging
import PostgresNIO

/// Telling the other processes on the same database that something changed: PostgreSQL's
/// LISTEN/NOTIFY. A notification sent inside a transaction is delivered when it commits (and
/// never if it rolls back); the database stays the source of truth, so a listener that
/// (re)connects is told so and catches up by reading it.
extension SQLStore {
    public enum Wake: Sendable, Equatable {
        /// The listener is connected (first time, or again after losing the database): anything
        /// may have happened meanwhile, so read what you need.
        case listening
        case notified(String)
    }

    /// Inside a write: `payload` reaches every listener on `channel` when the transaction
    /// commits. Nothing on SQLite, which has one process writing and no listeners.
    public static func notify(_ db: Database, channel: String, payload: String) throws {
        guard db.dialect == .postgres else { return }
        try db.execute(sql: "SELECT pg_notify(?, ?)", arguments: [channel, payload])
    }

    /// Outside a transaction: best effort (a lost notification is made up by the listeners'
    /// periodic reading).
    public func notify(channel: String, payload: String) async {
        guard dialect == .postgres else { return }
        _ = try? await unlocked { db in try Self.notify(db, channel: channel, payload: payload) }
    }

    /// The notifications on `channel`, on a connection of their own that reconnects by itself
    /// (100 ms to 2 s apart). Nil on SQLite.
    public func listen(channel: String) -> AsyncStream<Wake>? {
        guard case .postgres(let pool) = backend else { return nil }
        let (stream, continuation) = AsyncStream.makeStream(of: Wake.self, bufferingPolicy: .bufferingNewest(1024))
        let task = Task {
            var delay: Duration = .milliseconds(100)
            while !Task.isCancelled {
                do {
                    let connection = try await pool.dedicatedConnection()
                    do {
                        try await connection.listen(on: channel) { notifications in
                            continuation.yield(.listening)
                            delay = .milliseconds(100)
                            for try await notification in notifications { continuation.yield(.notified(notification.payload)) }
                        }
                    } catch {
                        pool.logger.debug("database listener lost its connection", metadata: ["channel": "\(channel)"])
                    }
                    try? await connection.close()
                } catch {
                    pool.logger.debug("database listener cannot connect", metadata: ["channel": "\(channel)"])
                }
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(2))
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    /// Whether the database answers now (readiness).
    public func isReachable() async -> Bool {
        (try? await unlocked { db in try Int64.fetchOne(db, sql: "SELECT 1") }) == 1
    }
}

extension SQLStore {
    /// Whether this process leads the ones sharing the database, for work that one process
    /// should do at a time (scheduled probes, shreds, rotations, recording host actions): a
    /// PostgreSQL session advisory lock held on a connection of its own, tried every
    /// `interval`, and checked by a query as often. When the leader dies its connection closes
    /// and the lock passes to the next process within `interval`; a leader that loses the
    /// database steps down at its next check. Always the leader on SQLite.
    ///
    /// Two processes can both believe they lead for up to `interval` (a leader cut off from the
    /// database learns it at its next check): the work guarded by this must stay correct when
    /// done twice, which the write lock's rules make it; leadership only avoids doing it twice.
    public func leadership(key: Int64, interval: Duration = .seconds(2)) -> AsyncStream<Bool> {
        guard case .postgres(let pool) = backend else {
            return AsyncStream { $0.yield(true) }
        }
        let (stream, continuation) = AsyncStream.makeStream(of: Bool.self, bufferingPolicy: .bufferingNewest(1))
        let task = Task {
            var leading = false
            while !Task.isCancelled {
                do {
                    let connection = try await pool.dedicatedConnection()
                    defer { Task { try? await connection.close() } }
                    while !Task.isCancelled {
                        // A query written to a closed connection is never answered (postgres-nio).
                        guard !connection.isClosed else { throw SQLError(.unavailable, "the leader lock's connection closed") }
                        if !leading {
                            let rows = try await connection.query("SELECT pg_try_advisory_lock(\(key))", logger: pool.logger)
                            for try await (acquired) in rows.decode(Bool.self) where acquired {
                                leading = true
                                continuation.yield(true)
                            }
                        } else {
                            _ = try await connection.query("SELECT 1", logger: pool.logger)
                        }
                        try await Task.sleep(for: interval)
                    }
                } catch {
                    if leading {
                        leading = false
                        continuation.yield(false)
                    }
                    try? await Task.sleep(for: interval)
                }
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }
}
