import Foundation
import GRDB

/// A GRDB connection inside one of GRDB's transactions.
final class SQLiteConnection: Connection {
    let db: GRDB.Database
    var dialect: Dialect { .sqlite }

    init(_ db: GRDB.Database) { self.db = db }

    func run(_ sql: String, _ arguments: [DatabaseValue]) throws -> (rows: [Row], changes: Int) {
        do {
            let statement = try db.cachedStatement(sql: sql)
            let bound = GRDB.StatementArguments(arguments.map(\.grdb))
            let cursor = try GRDB.Row.fetchCursor(statement, arguments: bound)
            var rows: [Row] = []
            var columns: [String]?
            while let row = try cursor.next() {
                let names = columns ?? Array(row.columnNames)
                columns = names
                rows.append(Row(columns: names, values: row.databaseValues.map(DatabaseValue.init)))
            }
            return (rows, db.changesCount)
        } catch let error as GRDB.DatabaseError {
            throw SQLError(error)
        }
    }
}

extension SQLError {
    /// SQLite's result codes, translated once.
    init(_ error: GRDB.DatabaseError) {
        let message = error.message ?? "SQLite error \(error.resultCode.rawValue)"
        switch error.extendedResultCode {
        case .SQLITE_CONSTRAINT_UNIQUE, .SQLITE_CONSTRAINT_PRIMARYKEY, .SQLITE_CONSTRAINT_ROWID:
            self.init(.uniqueViolation, message)
        case .SQLITE_CONSTRAINT_FOREIGNKEY:
            self.init(.foreignKeyViolation, message)
        case .SQLITE_CONSTRAINT_TRIGGER:
            self.init(.refusedByTrigger, message)
        default:
            switch error.resultCode {
            case .SQLITE_CONSTRAINT, .SQLITE_MISMATCH: self.init(.checkViolation, message)
            case .SQLITE_BUSY, .SQLITE_LOCKED, .SQLITE_IOERR, .SQLITE_FULL, .SQLITE_CANTOPEN, .SQLITE_READONLY:
                self.init(.unavailable, message)
            default: self.init(.other, message)
            }
        }
    }
}

extension DatabaseValue {
    init(_ value: GRDB.DatabaseValue) {
        switch value.storage {
        case .null: self = .null
        case .int64(let number): self = .integer(number)
        case .double(let number): self = .real(number)
        case .string(let text): self = .text(text)
        case .blob(let data): self = .blob(Array(data))
        }
    }

    var grdb: (any GRDB.DatabaseValueConvertible)? {
        switch self {
        case .null: nil
        case .integer(let number): number
        case .real(let number): number
        case .text(let text): text
        case .blob(let bytes): Data(bytes)
        }
    }
}
