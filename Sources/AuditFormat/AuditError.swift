/// The audit log's error: a stable code, a reason for the operator. Equality compares codes.
public struct AuditError: Error, Sendable, CustomStringConvertible, Equatable {
    public enum Code: String, Sendable, Codable {
        /// Malformed input: a bad export line, key file, checkpoint, filter.
        case invalidInput = "invalid_input"
        case notFound = "not_found"
        /// The store cannot write (disk, permissions, a failed earlier write): operations that
        /// need an audit record must fail closed.
        case unavailable
        /// Verification failed: tampering, truncation, a bad signature.
        case verificationFailed = "verification_failed"
    }

    public let code: Code
    public let reason: String

    public init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    public var description: String { "\(code.rawValue): \(reason)" }

    public static func == (lhs: AuditError, rhs: AuditError) -> Bool { lhs.code == rhs.code }
}
