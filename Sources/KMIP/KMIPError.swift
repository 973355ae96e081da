public import KSI

/// What went wrong below the token: the server's answer to one operation (its Result Reason
/// and Result Message), the connection (TCP, TLS, time), or the bytes (not TTLV, not the
/// answer asked for). Translated to a `KeystoreError` once, by `KeystoreError(_:)` below.
/// Never holds key material: messages are the server's text and names of tags.
public struct KMIPError: Error, Sendable, CustomStringConvertible, Equatable {
    public enum Kind: Sendable, Equatable {
        /// The server answered Operation Failed with this reason.
        case operationFailed(KMIP.Operation, KMIP.ResultReason?)
        /// No TCP connection (refused, no route, name not resolved) or none within the connect time.
        case unreachable
        /// The TLS handshake failed: the server's certificate, or the server refused ours.
        case tls
        /// No complete answer within the request time.
        case timeout
        /// The connection closed before the answer.
        case closed
        /// The answer is not a KMIP response to the request (bad TTLV, missing fields).
        case malformed
        /// The client's own files (CA bundle, certificate, key) cannot be used.
        case configuration
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }

    /// The server answered (as opposed to a failed connection or a garbled answer).
    public var isOperationFailure: Bool {
        if case .operationFailed = kind { return true }
        return false
    }

    public static func == (lhs: KMIPError, rhs: KMIPError) -> Bool { lhs.kind == rhs.kind }
}

extension KeystoreError {
    /// The translation of KMIP failures, done once, here: the Result Reasons of KMIP 1.4
    /// §9.1.3.2.29 and the transport's failures to the KSI's codes.
    public init(_ error: KMIPError, server: String) {
        let detail = error.message
        switch error.kind {
        case .operationFailed(let operation, let reason):
            let what = "KMIP \(operation) at \(server)"
            switch reason {
            case .itemNotFound?:
                self.init(.notFound, "the KMIP server has no such object (or this client may not see it)", detail: "\(what): \(detail)")
            case .permissionDenied?, .sensitive?, .notExtractable?:
                self.init(.permissionDenied, "the KMIP server does not permit this client the operation on this key (its operation policy, or the key's state)",
                          detail: "\(what): \(detail)")
            case .authenticationNotSuccessful?, .attestationRequired?, .attestationFailed?:
                self.init(.permissionDenied, "the KMIP server did not accept this client's credentials", detail: "\(what): \(detail)")
            case .operationNotSupported?, .featureNotSupported?, .keyFormatTypeNotSupported?, .keyCompressionTypeNotSupported?,
                 .applicationNamespaceNotSupported?, .encodingOptionError?:
                self.init(.unsupported, "the KMIP server does not support this operation or its parameters", detail: "\(what): \(detail)")
            case .cryptographicFailure?:
                self.init(.invalidInput, "the KMIP server could not process the data: the blob is malformed or was not wrapped by this key",
                          detail: "\(what): \(detail)")
            case .invalidMessage?, .invalidField?, .missingData?, .indexOutOfBounds?:
                self.init(.invalidInput, "the KMIP server rejected the request's fields", detail: "\(what): \(detail)")
            case .illegalOperation?, .objectArchived?, .objectAlreadyExists?, .keyValueNotPresent?:
                self.init(.conflict, "the KMIP server refused the operation in the object's present state", detail: "\(what): \(detail)")
            case .responseTooLarge?:
                self.init(.unsupported, "the KMIP server's answer would exceed the size this client accepts", detail: "\(what): \(detail)")
            case .operationCanceledByRequester?, .generalFailure?, nil:
                self.init(.unavailable, "the KMIP server failed the operation", detail: "\(what): \(detail)")
            }
        case .unreachable:
            self.init(.unavailable, "the KMIP server \(server) is unreachable", detail: detail)
        case .tls:
            self.init(.unavailable, "the TLS handshake with the KMIP server \(server) failed: \(detail)", detail: detail)
        case .timeout:
            self.init(.unavailable, "the KMIP server \(server) did not answer in time", detail: detail)
        case .closed:
            self.init(.unavailable, "the KMIP server \(server) closed the connection before answering", detail: detail)
        case .malformed:
            self.init(.unavailable, "the KMIP server \(server) sent an answer that is not a valid KMIP response", detail: detail)
        case .configuration:
            self.init(.invalidInput, detail)
        }
    }
}
