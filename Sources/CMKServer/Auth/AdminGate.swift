import Audit
import AuditFormat
import CMKCore
import ControlPlane
import Foundation
import Registry

/// Who may call the Management API, whichever transport carries the call: the credential is
/// checked (an automation token or identity assertion as a bearer token, or a session with its
/// CSRF token for changes) and the call is authorized against `AccessPolicy` — role, tenant
/// scope (another tenant's resources answer not found), step-up — and every use of an
/// automation token is recorded, refused or not. REST reads the credential from headers, gRPC
/// from metadata of the same names; the decision is made here, once.
struct AdminGate: Sendable {
    let gateway: Gateway
    let sessions: SessionManager
    let assertions: IdentityAssertionVerifier?

    /// What the caller presented.
    enum Credential: Sendable {
        /// `Authorization: Bearer …`: an automation token (`okat_…`) or, behind an identity
        /// gateway, its signed assertion.
        case bearer(String)
        /// The `cmk_session` cookie and, for changes, its `X-CSRF-Token`.
        case session(token: String, csrf: String?)
        /// Anything else in the authorization header (another scheme, no token).
        case malformed
    }

    /// The call being made: the access policy's route it counts as, and where it came from.
    struct Call: Sendable {
        /// `POST`, `GET`, … and the route as the policy spells it (`/api/v1/tenants/{tenant}`).
        var method: String
        var path: String
        /// The tenant the call names, if any.
        var tenant: String?
        /// How the audit log names the call in a token-use record (`POST /api/v1/tenants`, or
        /// the gRPC method's full name).
        var recordedAs: String
        var requestID: String
        var clientAddress: String?

        var stateChanging: Bool { !["GET", "HEAD", "OPTIONS"].contains(method) }
    }

    static let unauthenticated = DomainError(.unauthenticated, "log in (session cookie) or present an automation token")

    /// Authenticates and authorizes `call`; the principal it is made by.
    func admit(_ credential: Credential?, _ call: Call) async throws -> Principal {
        let principal = try await authenticate(credential, stateChanging: call.stateChanging)
        do {
            try await authorize(principal, call)
        } catch {
            if case .token = principal.kind { try await recordTokenUse(principal, call, error: error) }
            throw error
        }
        if case .token = principal.kind { try await recordTokenUse(principal, call, error: nil) }
        return principal
    }

    private func authenticate(_ credential: Credential?, stateChanging: Bool) async throws -> Principal {
        switch credential {
        case .bearer(let presented):
            if presented.hasPrefix("okat_") { return try await sessions.authenticateToken(presented) }
            if let assertions, IdentityAssertionVerifier.looksLikeJWT(presented) {
                return try await assertions.principal(presented, now: sessions.now())
            }
            throw Self.unauthenticated
        case .session(let token, let csrf):
            return try await sessions.authenticateSession(token: token, csrf: csrf, stateChanging: stateChanging)
        case .malformed, nil:
            throw Self.unauthenticated
        }
    }

    private func recordTokenUse(_ principal: Principal, _ call: Call, error: (any Error)?) async throws {
        _ = try await gateway.audit.append(AuditRecord(
            actor: principal.auditActor, operation: "auth.token_use", outcome: error == nil ? .success : .denied,
            errorCode: error.map(Gateway.auditCode), target: call.recordedAs, requestID: call.requestID, clientAddress: call.clientAddress))
    }

    private func authorize(_ principal: Principal, _ call: Call) async throws {
        let (method, path) = (call.method, call.path)
        guard let rule = AccessPolicy.rule(method: method, path: path) else {
            throw DomainError(.forbidden, "\(method) \(path) is not open to administrators")
        }
        if rule.sessionOnly, case .token = principal.kind {
            throw DomainError(.forbidden, "\(method) \(path) is for a person's session, not a token")
        }
        guard rule.roles.contains(principal.role) else {
            throw DomainError(.forbidden, "the \(principal.role.rawValue) role may not \(method) \(path)")
        }
        switch rule.scope {
        case .tenant:
            if let tenant = call.tenant, !principal.mayAccess(tenant: tenant) { throw DomainError.notFound("no tenant \(tenant)") }
        case .allTenants:
            guard principal.tenants == nil else {
                throw DomainError(.forbidden, "this concerns every tenant; the caller is limited to some")
            }
        case .global:
            break
        }
        var needsStepUp = rule.stepUp == .always
        if rule.stepUp == .onRestore, let tenant = call.tenant {
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
