import Audit
import AuditFormat
import CMKCore
import ControlPlane
import Foundation
import Hummingbird
import Registry

/// Authenticates and authorizes every `/api/v1` call through `AdminGate` (the same gate the
/// gRPC API uses). A node's signature is not an administrator credential, and an
/// administrator's credential does not work on `/node/v1`.
struct AdminAuthenticationMiddleware: RouterMiddleware {
    typealias Context = CMKRequestContext
    let gateway: Gateway
    let sessions: SessionManager
    let assertions: IdentityAssertionVerifier?

    static func cookie(_ name: String, in request: Request) -> String? {
        for header in request.headers[values: .cookie] {
            for part in header.split(separator: ";") {
                let pair = part.trimmingCharacters(in: .whitespaces)
                if pair.hasPrefix(name + "=") { return String(pair.dropFirst(name.count + 1)) }
            }
        }
        return nil
    }

    var gate: AdminGate { AdminGate(gateway: gateway, sessions: sessions, assertions: assertions) }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = context.endpointPath ?? request.uri.path
        let method = request.method.rawValue
        if method == "POST", path == "/api/v1/session" {
            if assertions?.settings.disablePasswordLogin == true {
                throw DomainError(.forbidden, "password login is switched off: log in through the identity gateway")
            }
            return try await next(request, context)
        }
        let call = AdminGate.Call(method: method, path: path, tenant: context.parameters.get("tenant"), recordedAs: "\(method) \(path)",
                                  requestID: context.id, clientAddress: context.clientAddress)
        let principal = try await gate.admit(Self.credential(request), call)
        var context = context
        context.identity = Identity(subject: principal.name, method: principal.authMethod)
        context.principal = principal
        let response = try await next(request, context)
        if method != "GET", response.status.code < 400 { gateway.dashboard.changed() }
        return response
    }

    /// The bearer token, else the session cookie (with its CSRF header), else nothing.
    static func credential(_ request: Request) -> AdminGate.Credential? {
        if let header = request.headers[.authorization] {
            guard header.count > 7, header.prefix(7).lowercased() == "bearer " else { return .malformed }
            return .bearer(String(header.dropFirst(7)))
        }
        if let cookie = cookie(SessionManager.cookieName, in: request) {
            return .session(token: cookie, csrf: request.headers[.init(SessionManager.csrfHeader)!])
        }
        return nil
    }

    static let unauthenticated = AdminGate.unauthenticated
}
