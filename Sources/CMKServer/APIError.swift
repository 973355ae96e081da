import AuditFormat
import Foundation
public import Hummingbird
public import KSI
import Logging
import NIOCore
import Registry

/// The API's one error type and one JSON shape: `{"error":{"code","message","requestId"}}`.
/// Codes are stable words; statuses follow from them in one place (`status(for:)`).
public struct APIError: Error, Sendable {
    public let status: HTTPResponse.Status
    public let code: String
    public let message: String
    /// Extra machine-readable detail (the probe report of a failed handshake).
    public let details: ProbeReport?

    public init(_ status: HTTPResponse.Status, code: String, _ message: String, details: ProbeReport? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.details = details
    }

    static func badRequest(_ message: String) -> APIError { APIError(.badRequest, code: "invalid_input", message) }
    static func notFound(_ message: String) -> APIError { APIError(.notFound, code: "not_found", message) }
    static func conflict(_ message: String) -> APIError { APIError(.conflict, code: "conflict", message) }

    /// The translation of every lower layer's error, done once, here.
    static func from(_ error: any Error) -> APIError? {
        switch error {
        case let error as APIError:
            return error
        case let failure as SessionManager.Failure:
            return APIError(failure)
        case let error as RegistryError:
            switch error.code {
            case .notFound: return APIError(.notFound, code: "not_found", error.message)
            case .conflict: return APIError(.conflict, code: "conflict", error.message)
            case .preconditionFailed: return APIError(.preconditionFailed, code: "precondition_failed", error.message)
            case .invalidInput: return APIError(.badRequest, code: "invalid_input", error.message)
            }
        case let error as KeystoreError:
            switch error.code {
            case .invalidInput: return APIError(.badRequest, code: "invalid_input", error.reason)
            case .notFound: return APIError(.unprocessableContent, code: "keystore_not_found", error.reason)
            case .permissionDenied: return APIError(.unprocessableContent, code: "keystore_refused", error.reason)
            case .unsupported: return APIError(.unprocessableContent, code: "keystore_unsupported", error.reason)
            case .conflict: return APIError(.conflict, code: "conflict", error.reason)
            case .unavailable: return APIError(.serviceUnavailable, code: "keystore_unavailable", error.reason)
            case .internal: return nil
            }
        case let error as HTTPError:
            switch error.status {
            case .contentTooLarge: return APIError(.contentTooLarge, code: "body_too_large", "the request body is larger than the server accepts")
            case .notFound: return APIError(.notFound, code: "not_found", "no such resource")
            case .methodNotAllowed: return APIError(.methodNotAllowed, code: "method_not_allowed", "method not allowed on this resource")
            case .unauthorized: return APIError(.unauthorized, code: "unauthenticated", "a valid bearer token is required")
            case .badRequest: return APIError(.badRequest, code: "invalid_input", "the request body is not valid JSON for this route")
            default: return error.status.code < 500 ? APIError(error.status, code: "invalid_input", error.status.reasonPhrase) : nil
            }
        case let error as AuditError:
            switch error.code {
            case .invalidInput: return APIError(.badRequest, code: "invalid_input", error.reason)
            case .notFound: return APIError(.notFound, code: "not_found", error.reason)
            case .unavailable, .verificationFailed:
                return APIError(.serviceUnavailable, code: "audit_unavailable",
                                "the audit log cannot record this request, so it was not carried out; see the server log")
            }
        case is NIOTooManyBytesError:
            return APIError(.contentTooLarge, code: "body_too_large", "the request body is larger than the server accepts (64 KiB)")
        case is DecodingError:
            return APIError(.badRequest, code: "invalid_input", "the request body is not valid JSON for this route")
        default:
            return nil
        }
    }
}

struct ErrorBody: Codable {
    struct Inner: Codable {
        var code: String
        var message: String
        var requestId: String
        var probe: ProbeReport?
    }
    var error: Inner
}

/// Turns every error into the one JSON shape. Unexpected errors become an opaque 500 with the
/// request id; their text goes to the log only, never to the client.
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            var response = try await next(request, context)
            response.headers[.init("X-Request-Id")!] = context.id
            // Every answer is live state, much of it about keys: never kept by a browser or proxy.
            if response.headers[.cacheControl] == nil { response.headers[.cacheControl] = "no-store" }
            return response
        } catch {
            let apiError: APIError
            if let translated = APIError.from(error) {
                apiError = translated
            } else {
                context.logger.error("unexpected error", metadata: ["error.type": "\(String(reflecting: type(of: error)))"])
                apiError = APIError(.internalServerError, code: "internal", "internal error; quote the request id to the operator")
            }
            let body = ErrorBody(error: .init(code: apiError.code, message: apiError.message, requestId: context.id, probe: apiError.details))
            let encoder = JSONEncoder.api
            let data = (try? encoder.encode(body)) ?? Data("{\"error\":{\"code\":\"internal\"}}".utf8)
            var headers: HTTPFields = [.contentType: "application/json", .init("X-Request-Id")!: context.id, .cacheControl: "no-store"]
            if apiError.status == .unauthorized { headers[.wwwAuthenticate] = "Bearer" }
            return Response(status: apiError.status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
        }
    }
}
