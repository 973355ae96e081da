/// The one error the gateway's operations throw: a stable code, a message for the person who
/// called, and where the kind differs from the code's usual one (the same refusal can be a
/// malformed request or a conflict with the present state). Lower layers' errors
/// (registry, keystore, audit) are translated into it once, at the domain boundary; the
/// transports only turn its kind into their status.
public struct DomainError: Error, Sendable, CustomStringConvertible {
    public let code: ErrorCode
    public let kind: ErrorKind
    public let message: String
    /// Machine-readable detail that travels with the error (a failed handshake's probe report).
    public let details: (any Encodable & Sendable)?

    public init(_ code: ErrorCode, _ message: String, kind: ErrorKind? = nil, details: (any Encodable & Sendable)? = nil) {
        self.code = code
        self.kind = kind ?? code.kind
        self.message = message
        self.details = details
    }

    public var description: String { "\(code.rawValue): \(message)" }

    public static func invalidInput(_ message: String) -> DomainError { DomainError(.invalidInput, message) }
    public static func notFound(_ message: String) -> DomainError { DomainError(.notFound, message) }
    public static func conflict(_ message: String) -> DomainError { DomainError(.conflict, message) }
}

extension DomainError: Equatable {
    /// Errors are equal when their codes and kinds are: tests build the error they expect.
    public static func == (lhs: DomainError, rhs: DomainError) -> Bool { lhs.code == rhs.code && lhs.kind == rhs.kind }
}
