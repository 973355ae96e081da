import GRDB

/// The one error type of the Registry: a small stable code that the HTTP layer maps to a status
/// in one `switch`, and a message written for the operator. Never holds key material, PINs or
/// bound SQL values. Equality compares codes, so tests can build the expected error.
public struct RegistryError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable, Codable, CaseIterable {
        /// The record does not exist, or belongs to another tenant (tenant isolation: the two
        /// are indistinguishable on purpose).
        case notFound = "not_found"
        /// The request conflicts with the stored state: duplicate id, a second active link,
        /// revoking what is already revoked, deleting a tenant that still has a live link.
        case conflict
        /// The caller's `expectedVersion` (ETag) is stale.
        case preconditionFailed = "precondition_failed"
        /// The request is malformed: bad id, empty reference, PIN in a key reference, bad cursor.
        case invalidInput = "invalid_input"
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }

    public static func == (lhs: RegistryError, rhs: RegistryError) -> Bool { lhs.code == rhs.code }
}

extension RegistryError {
    /// The translation of SQLite constraint failures, done once, here. The transactions check
    /// their rules before writing, so these are the schema's backstops (a race with another
    /// process, a rule the Swift code missed). SQLite's message names the constraint, never
    /// the bound values. Nil for anything that is not a constraint failure: that propagates.
    init?(_ error: DatabaseError) {
        guard error.resultCode == .SQLITE_CONSTRAINT else { return nil }
        let detail = error.message ?? "constraint failed"
        switch error.extendedResultCode {
        case .SQLITE_CONSTRAINT_UNIQUE, .SQLITE_CONSTRAINT_PRIMARYKEY, .SQLITE_CONSTRAINT_ROWID:
            self.init(.conflict, "the record already exists (\(detail))")
        case .SQLITE_CONSTRAINT_FOREIGNKEY:
            self.init(.conflict, "the change would break a reference between records (\(detail))")
        case .SQLITE_CONSTRAINT_TRIGGER:
            self.init(.conflict, detail)
        default:
            self.init(.invalidInput, "the registry refused the values (\(detail))")
        }
    }
}
