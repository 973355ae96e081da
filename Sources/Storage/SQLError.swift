/// A failure of the database, translated once from each backend's own error. The message never
/// holds bound values (SQLite's and PostgreSQL's name the constraint, not the row).
public struct SQLError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// UNIQUE or PRIMARY KEY.
        case uniqueViolation
        case foreignKeyViolation
        /// CHECK, NOT NULL or a value of the wrong type.
        case checkViolation
        /// A trigger refused the change (the audit log's append-only rule, the registry's
        /// state rules): the message is the trigger's.
        case refusedByTrigger
        /// The database cannot be reached or went away mid-transaction (restart, failover,
        /// network). Nothing is known to have committed unless the error says so.
        case unavailable
        /// Anything else: a bug in a statement, a missing table.
        case other
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
