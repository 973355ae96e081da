/// One result row: column names (shared by every row of a result) and values.
public struct Row: Sendable {
    public let columns: [String]
    public let values: [DatabaseValue]

    public init(columns: [String], values: [DatabaseValue]) {
        self.columns = columns
        self.values = values
    }

    /// The index of a column by name; exact first, then ignoring case (SQLite keeps the case
    /// the query wrote, PostgreSQL folds unquoted names to lower case).
    public func index(of column: String) -> Int? {
        if let index = columns.firstIndex(of: column) { return index }
        let lowered = column.lowercased()
        return columns.firstIndex { $0.lowercased() == lowered }
    }

    public func hasColumn(_ column: String) -> Bool { index(of: column) != nil }

    /// The value of a column. A missing column or a value that cannot be `T` is a programming
    /// error (the query and the type disagree), as it is in GRDB: tests catch it on both backends.
    public subscript<T: DatabaseValueConvertible>(_ column: String) -> T {
        guard let index = index(of: column) else { preconditionFailure("no column \(column) in the row (\(columns))") }
        return self[index]
    }

    public subscript<T: DatabaseValueConvertible>(_ index: Int) -> T {
        guard let value = T.fromDatabaseValue(values[index]) else {
            preconditionFailure("column \(columns[index]) holds \(values[index].kindName), not \(T.self)")
        }
        return value
    }
}

extension DatabaseValue {
    var kindName: String {
        switch self {
        case .null: "NULL"
        case .integer: "an integer"
        case .real: "a real"
        case .text: "text"
        case .blob: "a blob"
        }
    }
}

// MARK: - Fetching, as GRDB spells it, so that repository code reads the same on both backends

extension Row {
    public static func fetchAll(_ db: Database, sql: String, arguments: StatementArguments = []) throws -> [Row] {
        try db.rows(sql, arguments)
    }

    public static func fetchOne(_ db: Database, sql: String, arguments: StatementArguments = []) throws -> Row? {
        try db.rows(sql, arguments).first
    }

    public static func fetchAll(_ statement: Statement, arguments: StatementArguments = []) throws -> [Row] {
        try statement.database.rows(statement.sql, arguments)
    }

    public static func fetchOne(_ statement: Statement, arguments: StatementArguments = []) throws -> Row? {
        try statement.database.rows(statement.sql, arguments).first
    }
}

extension DatabaseValueConvertible {
    /// The first column of the first row; nil when there is no row or the value is NULL.
    public static func fetchOne(_ db: Database, sql: String, arguments: StatementArguments = []) throws -> Self? {
        try db.rows(sql, arguments).first.flatMap { $0.values.first.flatMap(Self.fromDatabaseValue) }
    }

    /// The first column of every row, NULLs skipped.
    public static func fetchAll(_ db: Database, sql: String, arguments: StatementArguments = []) throws -> [Self] {
        try db.rows(sql, arguments).compactMap { $0.values.first.flatMap(Self.fromDatabaseValue) }
    }

    public static func fetchOne(_ statement: Statement, arguments: StatementArguments = []) throws -> Self? {
        try fetchOne(statement.database, sql: statement.sql, arguments: arguments)
    }

    public static func fetchAll(_ statement: Statement, arguments: StatementArguments = []) throws -> [Self] {
        try fetchAll(statement.database, sql: statement.sql, arguments: arguments)
    }
}
