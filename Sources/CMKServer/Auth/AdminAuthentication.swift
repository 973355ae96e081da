import Audit
import AuditFormat
import CMKCore
import ControlPlane
import Foundation
import Hummingbird
import Registry

/// Authenticates every `/api/v1` call (a session cookie with its CSRF header for state
/// changes, or an automation token) and authorizes it against `AccessPolicy`: the role, the
/// tenant scope (another tenant's resources answer 404) and step-up. A node's signature is
/// not an administrator credential, and an administrator's credential does not work on
/// `/node/v1`.
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

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = context.endpointPath ?? request.uri.path
        let method = request.method.rawValue
        if method == "POST", path == "/api/v1/session" {
            if assertions?.settings.disablePasswordLogin == true {
                throw DomainError(.forbidden, "password login is switched off: log in through the identity gateway")
            }
            return try await next(request, context)
        }
        let principal = try await authenticate(request, method: method)
        do {
            try await authorize(principal, method: method, path: path, context: context)
        } catch {
            if case .token = principal.kind { try await recordTokenUse(principal, method: method, path: path, context: context, error: error) }
            throw error
        }
        // Every use of an automation token is on the record, refused or not.
        if case .token = principal.kind { try await recordTokenUse(principal, method: method, path: path, context: context, error: nil) }
        var context = context
        context.identity = Identity(subject: principal.name, method: principal.authMethod)
        context.principal = principal
        let response = try await next(request, context)
        if method != "GET", response.status.code < 400 { gateway.dashboard.changed() }
        return response
    }

    private func recordTokenUse(_ principal: Principal, method: String, path: String, context: Context, error: (any Error)?) async throws {
        _ = try await gateway.audit.append(AuditRecord(
            actor: principal.auditActor, operation: "auth.token_use", outcome: error == nil ? .success : .denied,
            errorCode: error.map(Gateway.auditCode), target: "\(method) \(path)", requestID: context.id, clientAddress: context.clientAddress))
    }

    private func authenticate(_ request: Request, method: String) async throws -> Principal {
        if let header = request.headers[.authorization] {
            guard header.count > 7, header.prefix(7).lowercased() == "bearer " else { throw Self.unauthenticated }
            let presented = String(header.dropFirst(7))
            if presented.hasPrefix("okat_") { return try await sessions.authenticateToken(presented) }
            if let assertions, IdentityAssertionVerifier.looksLikeJWT(presented) {
                return try await assertions.principal(presented, now: sessions.now())
            }
            throw Self.unauthenticated
        }
        if let cookie = Self.cookie(SessionManager.cookieName, in: request) {
            return try await sessions.authenticateSession(token: cookie, csrf: request.headers[.init(SessionManager.csrfHeader)!],
                                                          stateChanging: !["GET", "HEAD", "OPTIONS"].contains(method))
        }
        throw Self.unauthenticated
    }

    static let unauthenticated = DomainError(.unauthenticated, "log in (session cookie) or present an automation token")

    private func authorize(_ principal: Principal, method: String, path: String, context: Context) async throws {
        guard let rule = AccessPolicy.rule(method: method, path: path) else {
            throw DomainError(.forbidden, "\(method) \(path) is not open to administrators")
        }
        if rule.sessionOnly, case .token = principal.kind {
            throw DomainError(.forbidden, "\(method) \(path) is for a person's session, not a token")
        }
        guard rule.roles.contains(principal.role) else {
            throw DomainError(.forbidden, "the \(principal.role.rawValue) role may not \(method) \(path)")
        }
        let tenant = context.parameters.get("tenant")
        switch rule.scope {
        case .tenant:
            if let tenant, !principal.mayAccess(tenant: tenant) { throw DomainError.notFound("no tenant \(tenant)") }
        case .allTenants:
            guard principal.tenants == nil else {
                throw DomainError(.forbidden, "this concerns every tenant; the caller is limited to some")
            }
        case .global:
            break
        }
        var needsStepUp = rule.stepUp == .always
        if rule.stepUp == .onRestore, let tenant {
            needsStepUp = try await gateway.registry.links(tenantID: tenant, limit: 500, after: nil).items.contains { $0.state.isRevoked }
        }
        if needsStepUp {
            switch principal.kind {
            case .token:
                throw DomainError(.stepUpRequired, "\(method) \(path) needs a person with a fresh one-time code, not a token")
            case .session, .assertion:
                guard principal.hasFreshTOTP(now: sessions.now()) else {
                    throw DomainError(.stepUpRequired, "enter a one-time code (POST /api/v1/session/step-up) within 5 minutes before this")
                }
            }
        }
    }
}
