/// Which SQL the connection speaks. Repository SQL is written once in the subset both share
/// (D95); the few places that differ (diagnostics, migrations) ask.
public enum Dialect: String, Sendable {
    case sqlite
    case postgres
}

/// What a backend does for one statement on the connection a transaction holds.
package protocol Connection: AnyObject {
    var dialect: Dialect { get }
    /// Runs one statement with `?` placeholders; returns its rows (if any) and the number of
    /// rows it changed.
    func run(_ sql: String, _ arguments: [DatabaseValue]) throws -> (rows: [Row], changes: Int)
}

/// The connection inside one transaction, as repository code sees it. Not `Sendable`: it
/// lives for one transaction on one thread.
public final class Database {
    let connection: any Connection
    public var dialect: Dialect { connection.dialect }
    /// Rows changed by the last `execute`.
    public private(set) var changesCount = 0

    package init(_ connection: any Connection) { self.connection = connection }

    public func execute(sql: String, arguments: StatementArguments = []) throws {
        changesCount = try connection.run(sql, arguments.values).changes
    }

    func rows(_ sql: String, _ arguments: StatementArguments) throws -> [Row] {
        let result = try connection.run(sql, arguments.values)
        changesCount = result.changes
        return result.rows
    }

    /// A statement run many times in a transaction. Both backends cache what they prepare by
    /// its text, so this only names the text once.
    public func cachedStatement(sql: String) throws -> Statement { Statement(database: self, sql: sql) }
}

public struct Statement {
    let database: Database
    let sql: String

    public func execute(arguments: StatementArguments = []) throws {
        try database.execute(sql: sql, arguments: arguments)
    }
}
