import AuditFormat
import CMKCore
import ControlPlane
import Foundation
import Hummingbird
import KSI
import Logging
import NIOCore

/// What a failed request answers over HTTP: the status and the one JSON shape
/// `{"error":{"code","message","requestId"}}`. Operations throw `DomainError`; this is only the
/// HTTP side of the translation, made in `ErrorMiddleware`.
struct APIError: Sendable {
    let status: HTTPResponse.Status
    let code: String
    let message: String
    /// Extra machine-readable detail (the probe report of a failed handshake).
    let details: ProbeReport?

    init(_ status: HTTPResponse.Status, code: String, _ message: String, details: ProbeReport? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.details = details
    }

    init(_ error: DomainError) {
        self.init(Self.status(for: error.kind), code: error.code.rawValue, error.message, details: error.details as? ProbeReport)
    }

    /// The HTTP status of each kind of failure: the one place where the domain meets HTTP.
    static func status(for kind: ErrorKind) -> HTTPResponse.Status {
        switch kind {
        case .invalidInput: .badRequest
        case .unauthenticated: .unauthorized
        case .permissionDenied: .forbidden
        case .notFound: .notFound
        case .methodNotAllowed: .methodNotAllowed
        case .conflict: .conflict
        case .gone: .gone
        case .preconditionFailed: .preconditionFailed
        case .tooLarge: .contentTooLarge
        case .unprocessable: .unprocessableContent
        case .exhausted: .tooManyRequests
        case .unavailable: .serviceUnavailable
        case .internal: .internalServerError
        }
    }

    /// Every error a request can end with, as HTTP: the domain's (and the lower layers' it
    /// translates), then the HTTP framework's own. Nil: unexpected, an opaque 500.
    static func from(_ error: any Error) -> APIError? {
        if let domain = DomainError.from(error) { return APIError(domain) }
        switch error {
        case let error as HTTPError:
            switch error.status {
            case .contentTooLarge: return APIError(DomainError(.bodyTooLarge, "the request body is larger than the server accepts"))
            case .notFound: return APIError(DomainError(.notFound, "no such resource"))
            case .methodNotAllowed: return APIError(DomainError(.methodNotAllowed, "method not allowed on this resource"))
            case .unauthorized: return APIError(DomainError(.unauthenticated, "a valid bearer token is required"))
            case .badRequest: return APIError(DomainError(.invalidInput, "the request body is not valid JSON for this route"))
            default:
                return error.status.code < 500 ? APIError(error.status, code: ErrorCode.invalidInput.rawValue, error.status.reasonPhrase) : nil
            }
        case is NIOTooManyBytesError:
            return APIError(DomainError(.bodyTooLarge, "the request body is larger than the server accepts (64 KiB)"))
        case is DecodingError:
            return APIError(DomainError(.invalidInput, "the request body is not valid JSON for this route"))
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
                apiError = APIError(DomainError(.internal, "internal error; quote the request id to the operator"))
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
