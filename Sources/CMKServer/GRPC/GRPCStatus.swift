import CMKCore
import CMKProto
import ControlPlane
import GRPCCore
import GRPCProtobuf
import KSI
import SwiftProtobuf

/// What a failed gRPC call answers: a status code chosen by the failure's kind (the one place
/// where the domain meets gRPC, as `APIError.status(for:)` is for HTTP) and a
/// `google.rpc.Status` whose details carry the stable error code (`ErrorInfo`), the request id
/// (`RequestInfo`) and, for a failed probe, its report. Never `UNKNOWN`: anything unexpected
/// is an opaque `INTERNAL` that names the request id only.
enum GRPCStatus {
    static let domain = "cmk.openkcm.io"

    static func code(for error: DomainError) -> RPCError.Code {
        switch error.code {
        case .idempotencyInProgress: return .aborted
        default: break
        }
        switch error.kind {
        case .invalidInput: return .invalidArgument
        case .unauthenticated: return .unauthenticated
        case .permissionDenied: return .permissionDenied
        case .notFound: return .notFound
        case .methodNotAllowed: return .unimplemented
        // The request is sound but the resource is not in a state that allows it (a revoked
        // link, a vote already cast, a failed probe, a shredded key).
        case .conflict, .gone, .unprocessable: return .failedPrecondition
        // An etag that no longer matches: read again and retry (AIP-154).
        case .preconditionFailed: return .aborted
        case .tooLarge, .exhausted: return .resourceExhausted
        case .unavailable: return .unavailable
        case .internal: return .internalError
        }
    }

    /// The error as the client receives it.
    static func status(_ error: DomainError, requestID: String) -> GoogleRPCStatus {
        var details: [ErrorDetails] = [
            .errorInfo(reason: error.code.rawValue.uppercased(), domain: domain, metadata: ["code": error.code.rawValue]),
            .requestInfo(requestID: requestID, servingData: ""),
        ]
        if let report = error.details as? ProbeReport, let packed = try? Google_Protobuf_Any(message: GRPCMessages.probeReport(report)) {
            details.append(.any(packed))
        }
        return GoogleRPCStatus(code: code(for: error), message: error.message, details: details)
    }

    static let unexpected = DomainError(.internal, "internal error; quote the request id to the operator")
}
