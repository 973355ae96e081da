public import Foundation

/// A value as both backends store it: SQLite's five storage classes. The PostgreSQL schema
/// uses the same five (BIGINT, DOUBLE PRECISION, TEXT, BYTEA and NULL; booleans as 0/1
/// integers), so that one SQL text and one row decoder serve both (D95).
public enum DatabaseValue: Sendable, Hashable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])
}

/// A Swift type that can be bound as an argument and read back from a column.
public protocol DatabaseValueConvertible: Sendable {
    var databaseValue: DatabaseValue { get }
    /// Nil when the stored value cannot be this type.
    static func fromDatabaseValue(_ value: DatabaseValue) -> Self?
}

extension String: DatabaseValueConvertible {
    public var databaseValue: DatabaseValue { .text(self) }
    public static func fromDatabaseValue(_ value: DatabaseValue) -> String? {
        switch value {
        case .text(let text): text
        case .blob(let bytes): String(decoding: bytes, as: UTF8.self)
        case .integer(let number): String(number)
        case .real(let number): String(number)
        case .null: nil
        }
    }
}

extension Int64: DatabaseValueConvertible {
    public var databaseValue: DatabaseValue { .integer(self) }
    public static func fromDatabaseValue(_ value: DatabaseValue) -> Int64? {
        switch value {
        case .integer(let number): number
        case .real(let number): Int64(exactly: number.rounded(.towardZero))
        case .text(let text): Int64(text)
        case .blob, .null: nil
        }
    }
}

extension Int: DatabaseValueConvertible {
    public var databaseValue: DatabaseValue { .integer(Int64(self)) }
    public static func fromDatabaseValue(_ value: DatabaseValue) -> Int? { Int64.fromDatabaseValue(value).flatMap(Int.init(exactly:)) }
}

extension Int32: DatabaseValueConvertible {
    public var databaseValue: DatabaseValue { .integer(Int64(self)) }
    public static func fromDatabaseValue(_ value: DatabaseValue) -> Int32? { Int64.fromDatabaseValue(value).flatMap(Int32.init(exactly:)) }
}

extension UInt64: DatabaseValueConvertible {
    /// Stored as a signed 64-bit integer: positions and sizes never reach 2^63.
    public var databaseValue: DatabaseValue { .integer(Int64(bitPattern: self)) }
    public static func fromDatabaseValue(_ value: DatabaseValue) -> UInt64? { Int64.fromDatabaseValue(value).flatMap(UInt64.init(exactly:)) }
}

extension Bool: DatabaseValueConvertible {
    /// 0 or 1, in both backends (the PostgreSQL schema has no BOOLEAN columns).
    public var databaseValue: DatabaseValue { .integer(self ? 1 : 0) }
    public static func fromDatabaseValue(_ value: DatabaseValue) -> Bool? { Int64.fromDatabaseValue(value).map { $0 != 0 } }
}

extension Double: DatabaseValueConvertible {
    public var databaseValue: DatabaseValue { .real(self) }
    public static func fromDatabaseValue(_ value: DatabaseValue) -> Double? {
        switch value {
        case .real(let number): number
        case .integer(let number): Double(number)
        case .text(let text): Double(text)
        case .blob, .null: nil
        }
    }
}

extension Data: DatabaseValueConvertible {
    public var databaseValue: DatabaseValue { .blob(Array(self)) }
    public static func fromDatabaseValue(_ value: DatabaseValue) -> Data? {
        switch value {
        case .blob(let bytes): Data(bytes)
        case .text(let text): Data(text.utf8)
        case .integer, .real, .null: nil
        }
    }
}

extension Array: DatabaseValueConvertible where Element == UInt8 {
    public var databaseValue: DatabaseValue { .blob(self) }
    public static func fromDatabaseValue(_ value: DatabaseValue) -> [UInt8]? { Data.fromDatabaseValue(value).map(Array.init) }
}

extension Optional: DatabaseValueConvertible where Wrapped: DatabaseValueConvertible {
    public var databaseValue: DatabaseValue { self?.databaseValue ?? .null }
    /// `.some(nil)` for NULL: a NULL is a valid optional.
    public static func fromDatabaseValue(_ value: DatabaseValue) -> Wrapped?? {
        if case .null = value { return .some(nil) }
        return Wrapped.fromDatabaseValue(value).map { .some($0) }
    }
}

extension DatabaseValue: DatabaseValueConvertible {
    public var databaseValue: DatabaseValue { self }
    public static func fromDatabaseValue(_ value: DatabaseValue) -> DatabaseValue? { value }
}

/// The arguments of one statement, in the order of its `?` placeholders.
public struct StatementArguments: Sendable, ExpressibleByArrayLiteral {
    public var values: [DatabaseValue]

    public init(_ values: [(any DatabaseValueConvertible)?]) {
        self.values = values.map { $0?.databaseValue ?? .null }
    }

    public init(values: [DatabaseValue]) { self.values = values }

    public init(arrayLiteral elements: (any DatabaseValueConvertible)?...) { self.init(elements) }

    public static func + (lhs: StatementArguments, rhs: StatementArguments) -> StatementArguments {
        StatementArguments(values: lhs.values + rhs.values)
    }
}
