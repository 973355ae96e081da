import Foundation
import Logging

import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO
import Synchronization

/// Connections to one PostgreSQL database, each used by one transaction at a time on a thread
/// of this pool's own. Repository code is synchronous (the same closures run inside GRDB's
/// transactions), so a transaction runs on a thread made for blocking, waiting on each
/// statement's future; Swift's cooperative threads never block (the `async` entry points hop
/// here first). The thread count is the connection limit.
package final class PostgresPool: Sendable {
    let settings: PostgresSettings
    private let configuration: PostgresConnection.Configuration
    private let group: any EventLoopGroup
    private let threads: NIOThreadPool
    /// Idle connections and how many exist; at most `settings.maxConnections` exist at once, a
    /// transaction beyond them waits (up to `checkoutTimeout`) for one to come back.
    private let state = Mutex(State())
    private let returned = NSCondition()
    private static let checkoutTimeout: TimeInterval = 10

    private struct State {
        var idle: [PostgresConnection] = []
        var open = 0
    }
    private let nextID = Atomic<Int>(1)
    let logger: Logger

    init(settings: PostgresSettings, password: String?, logger: Logger = Logger(label: "openkcm.sql.postgres")) throws(SQLError) {
        self.settings = settings
        self.logger = logger
        let tls: PostgresConnection.Configuration.TLS
        switch settings.tls {
        case .disable:
            tls = .disable
        case .require, .verifyFull:
            var tlsConfiguration = TLSConfiguration.makeClientConfiguration()
            tlsConfiguration.minimumTLSVersion = .tlsv12
            if settings.tls == .require {
                tlsConfiguration.certificateVerification = .none
            } else if let root = settings.rootCertificate {
                do {
                    tlsConfiguration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(root))
                } catch {
                    throw SQLError(.other, "cannot read the database CA certificate \(root): \(error)")
                }
            }
            do {
                tls = .require(try NIOSSLContext(configuration: tlsConfiguration))
            } catch {
                throw SQLError(.other, "cannot set up TLS to the database: \(error)")
            }
        }
        var configuration = PostgresConnection.Configuration(host: settings.host, port: settings.port, username: settings.user,
                                                             password: password, database: settings.database, tls: tls)
        configuration.options.connectTimeout = .seconds(5)
        // verify-full checks the chain and, for a host name, that the certificate names it;
        // NIOSSL cannot check an IP address against the certificate, so with an IP only the
        // chain is checked: name the server by a host name (Docs/Operations-HA.md).
        self.configuration = configuration
        group = MultiThreadedEventLoopGroup.singleton
        threads = NIOThreadPool(numberOfThreads: settings.maxConnections)
        threads.start()
    }

    deinit {
        for connection in state.withLock({ $0.idle }) { Self.close(connection) }
        threads.shutdownGracefully { _ in }
    }

    /// Closes without waiting, holding the connection until it is closed (postgres-nio requires
    /// a connection to be closed before it is released).
    static func close(_ connection: PostgresConnection) {
        connection.close().whenComplete { _ in withExtendedLifetime(connection) {} }
    }

    /// Runs `body` on one of the pool's threads (where it may block on the database).
    package func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        do {
            return try await threads.runIfActive(body)
        } catch let error as NIOThreadPoolError.ThreadPoolInactive {
            throw SQLError(.unavailable, "the database pool is shut down (\(error))")
        }
    }

    /// A connection for the calling (blocking) thread: an idle one that is still open, or a new
    /// one while fewer than `maxConnections` exist; else it waits for one to come back.
    func checkout() throws(SQLError) -> (connection: PostgresConnection, reused: Bool) {
        let deadline = Date().addingTimeInterval(Self.checkoutTimeout)
        returned.lock()
        while true {
            let taken: PostgresConnection?? = state.withLock { state in
                while let connection = state.idle.popLast() {
                    if !connection.isClosed { return .some(connection) }
                    state.open -= 1
                }
                guard state.open < settings.maxConnections else { return nil }
                state.open += 1
                return .some(nil)
            }
            switch taken {
            case .some(.some(let connection)):
                returned.unlock()
                return (connection, true)
            case .some(.none):
                returned.unlock()
                let id = nextID.add(1, ordering: .relaxed).oldValue
                do {
                    let connection = try PostgresConnection.connect(on: group.next(), configuration: configuration, id: id, logger: logger).wait()
                    return (connection, false)
                } catch {
                    forget()
                    throw SQLError(connecting: error, to: settings)
                }
            case .none:
                guard returned.wait(until: deadline) else {
                    returned.unlock()
                    throw SQLError(.unavailable, "all \(settings.maxConnections) database connections stayed busy for \(Int(Self.checkoutTimeout)) s")
                }
            }
        }
    }

    func checkin(_ connection: PostgresConnection) {
        if connection.isClosed { return forget() }
        state.withLock { $0.idle.append(connection) }
        returned.lock()
        returned.signal()
        returned.unlock()
    }

    func discard(_ connection: PostgresConnection) {
        Self.close(connection)
        forget()
    }

    /// A connection that no longer exists: another may be opened.
    private func forget() {
        state.withLock { $0.open -= 1 }
        returned.lock()
        returned.signal()
        returned.unlock()
    }

    /// A transaction on the calling (blocking) thread. `begin` opens it (and takes any lock);
    /// its statements are sent without waiting, ahead of the body's first statement, whose
    /// answer then covers them (one round trip, not three, before the body's first result; the
    /// write lock is held for one round trip less). A read-only transaction's COMMIT is not
    /// waited for either. A reused connection that fails before any statement was answered (the
    /// server restarted since it was last used) is replaced once and the body run again: nothing
    /// of it can have committed.
    func transaction<T>(begin: [String], readOnly: Bool = false, _ body: (Database) throws -> T) throws -> T {
        var attempt = 0
        while true {
            attempt += 1
            let (connection, reused) = try checkout()
            let adapter = PostgresTransaction(connection, logger: logger)
            for statement in begin { adapter.send(statement) }
            let result: T
            do {
                result = try body(Database(adapter))
                try adapter.flush()
            } catch let error as SQLError where error.kind == .unavailable && reused && attempt == 1 && adapter.answered == 0 {
                discard(connection)
                continue
            } catch {
                do {
                    _ = try adapter.run("ROLLBACK", [])
                    checkin(connection)
                } catch {
                    discard(connection)
                }
                throw error
            }
            if readOnly {
                // Nothing to make durable; a failure shows on the connection's next use.
                adapter.send("COMMIT")
                checkin(connection)
                return result
            }
            do {
                _ = try adapter.run("COMMIT", [])
            } catch let error as SQLError where error.kind == .unavailable {
                discard(connection)
                throw SQLError(.unavailable, "the database went away while committing: the change may or may not have been made (\(error.message))")
            } catch {
                discard(connection)
                throw error
            }
            checkin(connection)
            return result
        }
    }

    /// Statements outside a transaction (each its own), for settings checks and migrations' locks.
    func session<T>(_ body: (Database) throws -> T) throws -> T {
        let (connection, _) = try checkout()
        do {
            let result = try body(Database(PostgresTransaction(connection, logger: logger)))
            checkin(connection)
            return result
        } catch {
            discard(connection)
            throw error
        }
    }

    /// A connection of its own, outside the pool, for LISTEN: it lives as long as the listener.
    func dedicatedConnection() async throws -> PostgresConnection {
        let id = nextID.add(1, ordering: .relaxed).oldValue
        do {
            return try await PostgresConnection.connect(on: group.next(), configuration: configuration, id: id, logger: logger).get()
        } catch {
            throw SQLError(connecting: error, to: settings)
        }
    }
}

/// One PostgreSQL connection inside a transaction.
final class PostgresTransaction: Connection {
    let connection: PostgresConnection
    let logger: Logger
    var dialect: Dialect { .postgres }

    /// Statements sent and not yet waited for, in order.
    private var pending: [EventLoopFuture<PostgresQueryResult>] = []
    /// Statements whose answers came back.
    private(set) var answered = 0

    init(_ connection: PostgresConnection, logger: Logger) {
        self.connection = connection
        self.logger = logger
    }

    /// The longest any one statement is waited for, lock waits included: a server that stopped
    /// answering (not closed, just silent) fails the transaction instead of holding its thread.
    static let statementTimeout: TimeAmount = .seconds(30)

    /// Sends a statement without arguments and without waiting for it: the connection runs
    /// statements in the order they are sent, and the next `run` or `flush` waits for it.
    func send(_ sql: String) {
        pending.append(bounded(PostgresQuery(unsafeSQL: sql)))
    }

    /// Waits for every statement sent; the first failure is thrown.
    func flush() throws {
        let waiting = pending
        pending.removeAll()
        for future in waiting {
            do { _ = try future.wait() } catch { throw SQLError(postgres: error) }
            answered += 1
        }
    }

    /// `future`, failed after `statementTimeout`, and sent only on a connection still open.
    /// postgres-nio writes a query to its channel without a write promise, so a query written
    /// after the connection closed (the server ended the session, a failover) is never
    /// answered: waiting for it alone would wait forever. The check before sending makes that
    /// rare (a close racing the write); the timeout bounds it.
    private func bounded(_ query: PostgresQuery) -> EventLoopFuture<PostgresQueryResult> {
        guard !connection.isClosed else {
            return connection.eventLoop.makeFailedFuture(SQLError(.unavailable, "the database connection is closed"))
        }
        let promise = connection.eventLoop.makePromise(of: PostgresQueryResult.self)
        let timeout = connection.eventLoop.scheduleTask(in: Self.statementTimeout) {
            promise.fail(SQLError(.unavailable, "the database did not answer a statement within \(Self.statementTimeout.nanoseconds / 1_000_000_000) s"))
        }
        connection.query(query, logger: logger).whenComplete { result in
            timeout.cancel()
            promise.completeWith(result)
        }
        return promise.futureResult
    }

    func run(_ sql: String, _ arguments: [DatabaseValue]) throws -> (rows: [Row], changes: Int) {
        var binds = PostgresBindings(capacity: arguments.count)
        for argument in arguments {
            switch argument {
            case .null: binds.appendNull()
            case .integer(let number): binds.append(number)
            case .real(let number): binds.append(number)
            case .text(let text): binds.append(text)
            case .blob(let bytes): binds.append(ByteBuffer(bytes: bytes))
            }
        }
        // Without arguments there is nothing to rewrite (and a `?` in a plpgsql body stays one).
        let query = PostgresQuery(unsafeSQL: arguments.isEmpty ? sql : Placeholders.postgres(sql), binds: binds)
        let sent = bounded(query)
        try flush()
        let result: PostgresQueryResult
        do {
            result = try sent.wait()
        } catch {
            throw SQLError(postgres: error)
        }
        answered += 1
        var rows: [Row] = []
        rows.reserveCapacity(result.rows.count)
        var columns: [String]?
        for row in result.rows {
            var names: [String] = []
            var values: [DatabaseValue] = []
            for cell in row {
                if columns == nil { names.append(cell.columnName) }
                values.append(try DatabaseValue(cell))
            }
            if columns == nil { columns = names }
            rows.append(Row(columns: columns!, values: values))
        }
        return (rows, result.metadata.rows ?? 0)
    }
}

extension DatabaseValue {
    /// The five storage classes from PostgreSQL's types (the schema uses no others; a boolean
    /// or a count from an expression becomes an integer, as SQLite gives it).
    init(_ cell: PostgresCell) throws {
        guard cell.bytes != nil else {
            self = .null
            return
        }
        do {
            switch cell.dataType {
            case .int2, .int4, .int8, .oid:
                self = .integer(try cell.decode(Int64.self))
            case .bool:
                self = .integer(try cell.decode(Bool.self) ? 1 : 0)
            case .float4, .float8:
                self = .real(try cell.decode(Double.self))
            case .numeric:
                let decimal = try cell.decode(Decimal.self)
                if let integer = Int64(exactly: NSDecimalNumber(decimal: decimal).doubleValue), Decimal(integer) == decimal {
                    self = .integer(integer)
                } else {
                    self = .real(NSDecimalNumber(decimal: decimal).doubleValue)
                }
            case .bytea:
                self = .blob(Array(buffer: try cell.decode(ByteBuffer.self)))
            case .void:
                self = .null
            default:
                self = .text(try cell.decode(String.self))
            }
        } catch {
            throw SQLError(.other, "cannot read column \(cell.columnName) of type \(cell.dataType): \(error)")
        }
    }
}

extension SQLError {
    /// postgres-nio's errors, translated once: the server's SQLSTATE for what it refused, the
    /// client's codes for a connection that failed or went away.
    init(postgres error: any Error) {
        if let error = error as? SQLError {
            self = error
            return
        }
        guard let error = error as? PSQLError else {
            self.init(.unavailable, "the database connection failed: \(error)")
            return
        }
        switch error.code {
        case .server:
            let state = error.serverInfo?[.sqlState] ?? ""
            let message = error.serverInfo?[.message] ?? "the database refused the statement"
            let constraint = error.serverInfo?[.constraintName].map { " (\($0))" } ?? ""
            switch state {
            case "23505": self.init(.uniqueViolation, "UNIQUE constraint failed\(constraint): \(message)")
            case "23503": self.init(.foreignKeyViolation, "FOREIGN KEY constraint failed\(constraint): \(message)")
            case "23502", "23514": self.init(.checkViolation, "CHECK constraint failed\(constraint): \(message)")
            case "P0001": self.init(.refusedByTrigger, message)
            case _ where state.hasPrefix("22"): self.init(.checkViolation, "the database refused a value: \(message)")
            case _ where state.hasPrefix("08") || state.hasPrefix("57P") || state == "53300" || state == "40001" || state == "40P01" || state == "25006":
                self.init(.unavailable, "the database is unavailable (\(state)): \(message)")
            default: self.init(.other, "the database refused the statement (\(state)): \(message)")
            }
        case .serverClosedConnection, .connectionError, .uncleanShutdown, .clientClosedConnection, .poolClosed,
             .queryCancelled, .sslUnsupported, .failedToAddSSLHandler, .receivedUnencryptedDataAfterSSLRequest:
            self.init(.unavailable, "the database connection failed (\(error.code))")
        default:
            self.init(.other, "the database client failed (\(error.code))")
        }
    }

    init(connecting error: any Error, to settings: PostgresSettings) {
        if let psql = error as? PSQLError, psql.code == .server {
            let state = psql.serverInfo?[.sqlState] ?? ""
            let message = psql.serverInfo?[.message] ?? ""
            // 28P01 wrong password, 28000 no pg_hba entry, 3D000 no such database: the
            // operator's to fix, said as such.
            self.init(state.hasPrefix("28") || state == "3D000" ? .other : .unavailable,
                      "cannot connect to \(settings.redacted): \(message) (\(state))")
        } else if let psql = error as? PSQLError, psql.code == .authMechanismRequiresPassword {
            self.init(.other, "cannot connect to \(settings.redacted): the server asks for a password and none was given (databasePasswordFile, or CMK_DATABASE_PASSWORD)")
        } else if let psql = error as? PSQLError {
            self.init(.unavailable, "cannot connect to \(settings.redacted): \(psql.code)")
        } else {
            self.init(.unavailable, "cannot connect to \(settings.redacted): \(error)")
        }
    }
}
