import Audit
import AuditFormat
import CMKCore
import ControlPlane
import Foundation
import Hummingbird
import Registry

/// `/api/v1/session` (login, who am I, logout, step-up), `/api/v1/users` and `/api/v1/tokens`.
struct SessionController {
    let gateway: Gateway
    let sessions: SessionManager

    struct LoginRequest: Decodable, Sendable { var username: String; var password: String; var totp: String }
    struct StepUpRequest: Decodable, Sendable { var totp: String }
    struct CreateUserRequest: Decodable, Sendable { var username: String; var password: String; var role: AdminRole; var tenants: [String]? }
    struct CreateTokenRequest: Decodable, Sendable { var name: String; var role: AdminRole; var tenants: [String]?; var ttlSeconds: Int? }

    struct SessionResponse: Codable, Sendable {
        var username: String
        var role: AdminRole
        var tenants: [String]?
        var authMethod: String
        var session: String?
        var csrfToken: String?
        var expiresAt: Date?
        var stepUpFresh: Bool
        /// The lifecycle policy the caller works under: how many people each operation takes
        /// (the requester included) and the shortest shred waiting period.
        var lifecycle: LifecyclePolicy?
    }

    struct LifecyclePolicy: Codable, Sendable {
        var approvals: [String: Int]
        var shredWaitingPeriodHours: Int
        var approvalExpiryMinutes: Int

        init(_ settings: LifecycleSettings) {
            approvals = Dictionary(uniqueKeysWithValues: ApprovalOperation.allCases.map { ($0.rawValue, settings.approvals.people(for: $0)) })
            approvals["link.revoke"] = 1
            shredWaitingPeriodHours = settings.shredWaitingPeriodHours
            approvalExpiryMinutes = settings.approvalExpiryMinutes
        }
    }

    struct UserResponse: Codable, Sendable {
        var id: String
        var username: String
        var role: AdminRole
        var tenants: [String]?
        var createdAt: Date
        var createdBy: String
        var lockedUntil: Date?
        var disabledAt: Date?
        /// Shown once, at creation.
        var totpSecret: String?
        var totpURI: String?
    }

    struct TokenResponse: Codable, Sendable {
        var id: String
        var name: String
        var role: AdminRole
        var tenants: [String]?
        var createdAt: Date
        var createdBy: String
        var expiresAt: Date
        var revokedAt: Date?
        var lastUsedAt: Date?
        /// Shown once, at creation.
        var token: String?
    }

    func register(on group: RouterGroup<CMKRequestContext>) {
        group.post("session", use: login)
        group.get("session", use: whoAmI)
        group.delete("session", use: logout)
        group.post("session/step-up", use: stepUp)
        group.post("users", use: createUser)
        group.get("users", use: listUsers)
        group.delete("users/:user/sessions", use: revokeUserSessions)
        group.post("users/:user/unlock", use: unlockUser)
        group.post("users/:user/disable", use: disableUser)
        group.post("users/:user/enable", use: enableUser)
        group.delete("users/:user", use: deleteUser)
        group.post("tokens", use: createToken)
        group.get("tokens", use: listTokens)
        group.delete("tokens/:token", use: revokeToken)
    }

    static func principal(_ context: CMKRequestContext) throws -> Principal {
        guard let principal = context.principal else { throw AdminAuthenticationMiddleware.unauthenticated }
        return principal
    }

    func body<T: Decodable>(_ type: T.Type, _ request: Request, _ context: CMKRequestContext) async throws -> T {
        try await ManagementController.decode(type, request, context)
    }

    func sessionCookie(_ value: String, maxAge: Int) -> String {
        "\(SessionManager.cookieName)=\(value); Path=/; Max-Age=\(maxAge); HttpOnly; Secure; SameSite=Strict"
    }

    @Sendable func login(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let input = try await body(LoginRequest.self, request, context)
        let login = try await sessions.login(username: input.username, password: input.password, totp: input.totp,
                                             clientAddress: context.clientAddress, requestID: context.id)
        var reply = try ManagementController.json(SessionResponse(
            username: login.account.username, role: login.account.role, tenants: login.account.tenants, authMethod: login.session.authMethod,
            session: login.session.id, csrfToken: login.csrfToken, expiresAt: login.session.expiresAt, stepUpFresh: true,
            lifecycle: LifecyclePolicy(gateway.lifecycle)),
            status: .created, context: context)
        reply.headers[.setCookie] = sessionCookie(login.sessionToken, maxAge: sessions.settings.absoluteHours * 3600)
        return reply.response
    }

    @Sendable func whoAmI(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let principal = try Self.principal(context)
        var session: String?
        if case .session(let id, _) = principal.kind { session = id }
        return try ManagementController.json(SessionResponse(
            username: principal.name, role: principal.role, tenants: principal.tenants, authMethod: principal.authMethod, session: session,
            csrfToken: nil, expiresAt: nil, stepUpFresh: principal.hasFreshTOTP(now: sessions.now()),
            lifecycle: LifecyclePolicy(gateway.lifecycle)), context: context).response
    }

    @Sendable func logout(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let principal = try Self.principal(context)
        guard case .session(let id, _) = principal.kind else {
            throw DomainError(.invalidInput, "only a session can log out; revoke a token with DELETE /api/v1/tokens/{id}")
        }
        try await sessions.logout(sessionID: id)
        _ = try await gateway.audit.append(AuditRecord(actor: principal.auditActor, operation: "auth.logout", outcome: .success,
                                                       requestID: context.id, clientAddress: context.clientAddress))
        return Response(status: .noContent, headers: [.setCookie: sessionCookie("", maxAge: 0)])
    }

    @Sendable func stepUp(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let principal = try Self.principal(context)
        guard case .session(let id, _) = principal.kind else {
            throw DomainError(.stepUpRequired, "only a person's session can step up")
        }
        let input = try await body(StepUpRequest.self, request, context)
        do {
            try await sessions.stepUp(sessionID: id, username: principal.name, totp: input.totp)
        } catch let failure as DomainError {
            if let suppressed = sessions.admitStepUpFailureRecord(username: principal.name, failure.code) {
                _ = try await gateway.audit.append(AuditRecord(actor: principal.auditActor, operation: "auth.step_up", outcome: .denied,
                                                               errorCode: failure.code.rawValue, requestID: context.id, clientAddress: context.clientAddress,
                                                               details: suppressed > 0 ? ["suppressedBefore": String(suppressed)] : [:]))
            }
            throw failure
        }
        _ = try await gateway.audit.append(AuditRecord(actor: principal.auditActor, operation: "auth.step_up", outcome: .success,
                                                       requestID: context.id, clientAddress: context.clientAddress))
        return Response(status: .noContent)
    }

    func userResponse(_ account: Account, secret: String? = nil, uri: String? = nil) -> UserResponse {
        UserResponse(id: account.id, username: account.username, role: account.role, tenants: account.tenants, createdAt: account.createdAt,
                     createdBy: account.createdBy, lockedUntil: account.lockedUntil, disabledAt: account.disabledAt, totpSecret: secret, totpURI: uri)
    }

    /// Refuses what would cross the separation of duties: each role creates (and manages) only
    /// the roles in `AdminRole.mayCreate`.
    static func checkMayManage(_ role: AdminRole, by principal: Principal, _ what: String) throws {
        guard principal.role.mayCreate.contains(role) else {
            let allowed = principal.role.mayCreate.map(\.rawValue).sorted().joined(separator: ", ")
            throw DomainError(.forbidden,
                           "a \(principal.role.rawValue) cannot \(what) a \(role.rawValue) (only: \(allowed.isEmpty ? "none" : allowed)); the duties are separated")
        }
    }

    @Sendable func createUser(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let principal = try Self.principal(context)
        let input = try await body(CreateUserRequest.self, request, context)
        try Self.checkMayManage(input.role, by: principal, "create")
        let created = try await gateway.recorded("user.create", target: input.username, context: context.audit) {
            try await sessions.createAccount(username: input.username, password: input.password, role: input.role,
                                             tenants: input.tenants, createdBy: principal.name)
        }
        return try ManagementController.json(userResponse(created.account, secret: created.totpSecret, uri: created.totpURI),
                                             status: .created, context: context).response
    }

    @Sendable func listUsers(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let users = try await gateway.registry.accounts().map { userResponse($0) }
        return try ManagementController.json(PageResponse(items: users, nextCursor: nil), context: context).response
    }

    @Sendable func revokeUserSessions(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let id = try context.parameters.require("user")
        var found = try await gateway.registry.account(id: id)
        if found == nil { found = try await gateway.registry.account(username: id) }
        guard let account = found else {
            throw DomainError.notFound("no user \(id)")
        }
        try Self.checkMayManage(account.role, by: try Self.principal(context), "end the sessions of")
        let count = try await gateway.recorded("user.sessions.revoke", target: account.username, context: context.audit) {
            try await gateway.registry.revokeSessions(accountID: account.id, at: Date())
        }
        return try ManagementController.json(["revoked": count], context: context).response
    }

    /// Ends an account's lockout and resets its failure count before the lock runs out.
    @Sendable func unlockUser(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let id = try context.parameters.require("user")
        var found = try await gateway.registry.account(id: id)
        if found == nil { found = try await gateway.registry.account(username: id) }
        guard let account = found else { throw DomainError.notFound("no user \(id)") }
        try Self.checkMayManage(account.role, by: try Self.principal(context), "unlock")
        let unlocked = try await gateway.recorded("user.unlock", target: account.username, context: context.audit) {
            try await sessions.unlock(username: account.username)
        }
        return try ManagementController.json(userResponse(unlocked), context: context).response
    }

    /// The account a path names (id or username), which the caller may manage and is not.
    func managedAccount(_ context: CMKRequestContext, _ what: String) async throws -> Account {
        let id = try context.parameters.require("user")
        var found = try await gateway.registry.account(id: id)
        if found == nil { found = try await gateway.registry.account(username: id) }
        guard let account = found else { throw DomainError.notFound("no user \(id)") }
        let principal = try Self.principal(context)
        try Self.checkMayManage(account.role, by: principal, what)
        guard account.username != principal.name else {
            throw DomainError(.conflict, "an administrator cannot \(what) their own account; ask another")
        }
        return account
    }

    @Sendable func disableUser(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let account = try await managedAccount(context, "disable")
        let disabled = try await gateway.recorded("user.disable", target: account.username, context: context.audit) {
            try await gateway.registry.setAccountDisabled(id: account.id, true)
        }
        return try ManagementController.json(userResponse(disabled), context: context).response
    }

    @Sendable func enableUser(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let account = try await managedAccount(context, "enable")
        let enabled = try await gateway.recorded("user.enable", target: account.username, context: context.audit) {
            try await gateway.registry.setAccountDisabled(id: account.id, false)
        }
        return try ManagementController.json(userResponse(enabled), context: context).response
    }

    @Sendable func deleteUser(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let account = try await managedAccount(context, "remove")
        try await gateway.recorded("user.delete", target: account.username, context: context.audit) {
            try await gateway.registry.deleteAccount(id: account.id)
        }
        return Response(status: .noContent)
    }

    func tokenResponse(_ token: AutomationToken, secret: String? = nil) -> TokenResponse {
        TokenResponse(id: token.id, name: token.name, role: token.role, tenants: token.tenants, createdAt: token.createdAt,
                      createdBy: token.createdBy, expiresAt: token.expiresAt, revokedAt: token.revokedAt, lastUsedAt: token.lastUsedAt,
                      token: secret)
    }

    @Sendable func createToken(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let principal = try Self.principal(context)
        let input = try await body(CreateTokenRequest.self, request, context)
        try Self.checkMayManage(input.role, by: principal, "issue a token for")
        var ttl = TimeInterval(input.ttlSeconds ?? 86_400)
        if case .token(let id) = principal.kind {
            // A token never makes one that outlives or outranks it: same tenants or fewer, an
            // expiry no later than its own (a default lifetime is cut to fit).
            guard let own = try await gateway.registry.automationTokens().first(where: { $0.id == id }) else { throw AdminAuthenticationMiddleware.unauthenticated }
            let remaining = own.expiresAt.timeIntervalSince(sessions.now())
            if input.ttlSeconds == nil { ttl = min(ttl, remaining.rounded(.down)) }
            guard ttl <= remaining else {
                throw DomainError(.forbidden, "a token cannot issue a token that outlives it (this one expires at \(RFC3339.format(own.expiresAt)))")
            }
            if let ownTenants = own.tenants {
                guard let tenants = input.tenants, Set(tenants).isSubset(of: ownTenants) else {
                    throw DomainError(.forbidden, "a token cannot issue a token for tenants beyond its own")
                }
            }
        }
        let created = try await gateway.recorded("token.create", target: input.name, context: context.audit) {
            try await sessions.createToken(name: input.name, role: input.role, tenants: input.tenants,
                                           ttl: ttl, createdBy: principal.name)
        }
        return try ManagementController.json(tokenResponse(created.token, secret: created.secret), status: .created, context: context).response
    }

    @Sendable func listTokens(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let tokens = try await gateway.registry.automationTokens().map { tokenResponse($0) }
        return try ManagementController.json(PageResponse(items: tokens, nextCursor: nil), context: context).response
    }

    @Sendable func revokeToken(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let id = try context.parameters.require("token")
        if let token = try await gateway.registry.automationTokens().first(where: { $0.id == id }) {
            try Self.checkMayManage(token.role, by: try Self.principal(context), "revoke")
        }
        try await gateway.recorded("token.revoke", target: id, context: context.audit) {
            do {
                try await gateway.registry.revokeAutomationToken(id: id, at: Date())
            } catch let error as RegistryError where error.code == .notFound {
                throw DomainError.notFound("no automation token \(id)")
            }
        }
        return Response(status: .noContent)
    }
}
