import Storage

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
        /// The database cannot be reached or went away (a PostgreSQL restart, a failover): the
        /// change was not made, or (when the message says so) its outcome is unknown. Retry.
        case unavailable = "storage_unavailable"
        /// The database failed in a way that is a bug (a statement it does not understand).
        case `internal`
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
    /// The translation of database failures, done once, here. The transactions check their
    /// rules before writing, so constraint failures are the schema's backstops (a race with
    /// another process, a rule the Swift code missed). The database's message names the
    /// constraint, never the bound values.
    init(_ error: SQLError) {
        switch error.kind {
        case .uniqueViolation:
            self.init(.conflict, "the record already exists (\(error.message))")
        case .foreignKeyViolation:
            self.init(.conflict, "the change would break a reference between records (\(error.message))")
        case .refusedByTrigger:
            self.init(.conflict, error.message)
        case .checkViolation:
            self.init(.invalidInput, "the registry refused the values (\(error.message))")
        case .unavailable:
            self.init(.unavailable, "the registry database is unavailable: \(error.message)")
        case .other:
            self.init(.internal, "the registry database failed: \(error.message)")
        }
    }
}
