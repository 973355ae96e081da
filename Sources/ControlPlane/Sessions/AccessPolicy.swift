public import Registry

/// Who may call what: one table, read by the authorization middleware, by the tests (which
/// generate the whole route × role matrix from it) and by Docs/Authorization.md (checked
/// against it by a test).
public enum AccessPolicy {
    /// Which tenants a rule concerns.
    public enum Scope: String, Sendable {
        /// The path names a tenant (`{tenant}`): a caller limited to other tenants gets 404.
        case tenant
        /// Not about one tenant; open to any caller with the role (lists are filtered).
        case global
        /// Concerns every tenant (users, tokens, nodes, the whole audit log): callers limited
        /// to some tenants are refused (403).
        case allTenants = "all-tenants"
    }

    /// When a fresh TOTP (within `stepUpWindow`) is required.
    public enum StepUp: String, Sendable {
        case none
        case always
        /// Only when the tenant has a revocation in its history (its links are all shredded, or
        /// a new link would come after a revoked one).
        case onRestore = "on-restore"
    }

    public struct Rule: Sendable, Equatable {
        public var method: String
        /// As the router reports it (`context.endpointPath`), with `{name}` parameters.
        public var path: String
        public var roles: Set<AdminRole>
        public var scope: Scope
        public var stepUp: StepUp
        /// Only a person's session (logout, step-up), not an automation token.
        public var sessionOnly: Bool = false
    }

    /// A fresh TOTP counts for five minutes.
    public static let stepUpWindow: Double = 300

    package static func rule(_ method: String, _ path: String, _ roles: Set<AdminRole>, _ scope: Scope, _ stepUp: StepUp = .none,
                     sessionOnly: Bool = false) -> Rule {
        Rule(method: method, path: "/api/v1/" + path, roles: roles, scope: scope, stepUp: stepUp, sessionOnly: sessionOnly)
    }

    package static let both: Set<AdminRole> = [.securityAdmin, .auditor]
    package static let admin: Set<AdminRole> = [.securityAdmin]
    package static let operator_: Set<AdminRole> = [.platformOperator]
    package static let everyone: Set<AdminRole> = [.securityAdmin, .auditor, .platformOperator]
    /// The two roles that make changes, each on its own side of the separation of duties.
    package static let deciders: Set<AdminRole> = [.securityAdmin, .platformOperator]

    /// Every authenticated administrative route. Anything under `/api/v1` that is not here
    /// (and not the login itself) is refused.
    public static let rules: [Rule] = [
        rule("GET", "tenants", both, .global),
        rule("POST", "tenants", admin, .allTenants),
        rule("GET", "tenants/{tenant}", both, .tenant),
        rule("PATCH", "tenants/{tenant}", admin, .tenant),
        rule("DELETE", "tenants/{tenant}", admin, .tenant),
        rule("GET", "keystores", both, .global),
        rule("GET", "keystores/{keystore}", both, .global),
        rule("GET", "keystores/{keystore}/keys", both, .global),
        // The platform's HSM credentials are the operator's; a PIN attempt moves the token's
        // retry counter, so a person confirms it with a fresh second factor.
        rule("POST", "keystores/{keystore}/login", operator_, .allTenants, .always),
        rule("GET", "tenants/{tenant}/l1-links", both, .tenant),
        rule("POST", "tenants/{tenant}/l1-links", admin, .tenant, .onRestore),
        rule("POST", "tenants/{tenant}/l1-probes", admin, .tenant),
        rule("GET", "tenants/{tenant}/l1-links/{link}", both, .tenant),
        rule("POST", "tenants/{tenant}/l1-links/{link}/probe", admin, .tenant),
        rule("POST", "tenants/{tenant}/l1-links/{link}/revoke", admin, .tenant, .always),
        rule("GET", "tenants/{tenant}/l1-links/{link}/revocation", both, .tenant),
        rule("POST", "tenants/{tenant}/l1-links/{link}/restore", admin, .tenant, .always),
        rule("POST", "tenants/{tenant}/l1-links/{link}/shred", admin, .tenant, .always),
        rule("DELETE", "tenants/{tenant}/l1-links/{link}/shred", admin, .tenant, .always),
        rule("POST", "tenants/{tenant}/l1-links/{link}/rotate", admin, .tenant),
        rule("GET", "approvals", everyone, .global),
        rule("POST", "approvals", deciders, .global, .always),
        rule("GET", "approvals/{approval}", everyone, .global),
        rule("POST", "approvals/{approval}/approve", deciders, .global, .always),
        rule("POST", "approvals/{approval}/reject", deciders, .global, .always),
        rule("DELETE", "approvals/{approval}", deciders, .global, sessionOnly: true),
        rule("POST", "l1-rotations", admin, .allTenants),
        rule("POST", "ivk-rotations", operator_, .allTenants, .always),
        rule("GET", "rotations", everyone, .allTenants),
        rule("GET", "rotations/{rotation}", everyone, .allTenants),
        rule("POST", "nodes/enrolments", operator_, .allTenants),
        rule("GET", "nodes", everyone, .global),
        rule("POST", "app-credentials", admin, .global, .always),
        rule("GET", "app-credentials", both, .global),
        rule("DELETE", "app-credentials/{credential}", admin, .global),
        rule("POST", "nodes/{node}/disable", operator_, .allTenants),
        rule("POST", "nodes/{node}/enable", operator_, .allTenants, .always),
        rule("DELETE", "nodes/{node}", operator_, .allTenants, .always),
        rule("GET", "audit", both, .allTenants),
        rule("GET", "audit/records/{seq}", both, .allTenants),
        rule("GET", "audit/checkpoint", both, .allTenants),
        rule("GET", "audit/consistency", both, .allTenants),
        rule("GET", "audit/export", both, .allTenants),
        rule("GET", "events/stream", everyone, .global),
        rule("GET", "session", everyone, .global),
        rule("DELETE", "session", everyone, .global, sessionOnly: true),
        rule("POST", "session/step-up", everyone, .global, sessionOnly: true),
        rule("GET", "users", deciders, .allTenants),
        rule("POST", "users", deciders, .allTenants, sessionOnly: true),
        rule("DELETE", "users/{user}/sessions", deciders, .allTenants),
        rule("POST", "users/{user}/unlock", deciders, .allTenants),
        rule("POST", "users/{user}/disable", deciders, .allTenants, .always),
        rule("POST", "users/{user}/enable", deciders, .allTenants, .always),
        rule("DELETE", "users/{user}", deciders, .allTenants, .always),
        rule("GET", "tokens", deciders, .allTenants),
        rule("POST", "tokens", deciders, .allTenants),
        rule("DELETE", "tokens/{token}", deciders, .allTenants),
    ]

    /// Node routes: a node's signature only; no administrator credential works there.
    public static let nodeRoutes: [(method: String, path: String)] = [
        ("POST", "/node/v1/unseal"), ("GET", "/node/v1/events"), ("GET", "/node/v1/stream"), ("POST", "/node/v1/heartbeat"),
        ("POST", "/node/v1/rekey"), ("GET", "/node/v1/app-credentials"),
    ]

    /// A gRPC Management API method and the route whose rule it answers to: the same roles,
    /// scope, step-up and session rules, one table for both transports.
    public struct GRPCMethod: Sendable, Equatable {
        /// `openkcm.cmk.v1.TenantService/CreateTenant`.
        public var name: String
        public var method: String
        public var path: String
    }

    package static func grpc(_ service: String, _ methods: [(String, String, String)]) -> [GRPCMethod] {
        methods.map { GRPCMethod(name: "openkcm.cmk.v1.\(service)/\($0.0)", method: $0.1, path: "/api/v1/" + $0.2) }
    }

    /// Every method of the gRPC Management API (Protos/openkcm/cmk/v1). The standard health
    /// and reflection services are open, as their clients expect; nothing else is.
    public static let grpcMethods: [GRPCMethod] =
        grpc("TenantService", [
            ("ListTenants", "GET", "tenants"), ("GetTenant", "GET", "tenants/{tenant}"), ("CreateTenant", "POST", "tenants"),
            ("UpdateTenant", "PATCH", "tenants/{tenant}"), ("DeleteTenant", "DELETE", "tenants/{tenant}"),
        ]) + grpc("KeystoreService", [
            ("ListKeystores", "GET", "keystores"), ("GetKeystore", "GET", "keystores/{keystore}"),
            ("ListKeys", "GET", "keystores/{keystore}/keys"),
        ]) + grpc("L1LinkService", [
            ("ListL1Links", "GET", "tenants/{tenant}/l1-links"), ("GetL1Link", "GET", "tenants/{tenant}/l1-links/{link}"),
            ("CreateL1Link", "POST", "tenants/{tenant}/l1-links"), ("ValidateL1Link", "POST", "tenants/{tenant}/l1-probes"),
            ("ProbeL1Link", "POST", "tenants/{tenant}/l1-links/{link}/probe"),
            ("RevokeL1Link", "POST", "tenants/{tenant}/l1-links/{link}/revoke"),
            ("RestoreL1Link", "POST", "tenants/{tenant}/l1-links/{link}/restore"),
            ("GetRevocation", "GET", "tenants/{tenant}/l1-links/{link}/revocation"),
            ("WatchRevocation", "GET", "tenants/{tenant}/l1-links/{link}/revocation"),
        ]) + grpc("ApprovalService", [
            ("ListApprovals", "GET", "approvals"), ("GetApproval", "GET", "approvals/{approval}"), ("CreateApproval", "POST", "approvals"),
            ("ApproveApproval", "POST", "approvals/{approval}/approve"), ("RejectApproval", "POST", "approvals/{approval}/reject"),
            ("CancelApproval", "DELETE", "approvals/{approval}"),
        ]) + grpc("NodeService", [
            ("ListNodes", "GET", "nodes"), ("CreateEnrolment", "POST", "nodes/enrolments"), ("DisableNode", "POST", "nodes/{node}/disable"),
            ("EnableNode", "POST", "nodes/{node}/enable"), ("DeleteNode", "DELETE", "nodes/{node}"),
        ]) + grpc("AuditService", [
            ("ListAuditRecords", "GET", "audit"), ("GetAuditRecord", "GET", "audit/records/{seq}"),
            ("GetCheckpoint", "GET", "audit/checkpoint"), ("GetConsistencyProof", "GET", "audit/consistency"),
            ("ExportAuditLog", "GET", "audit/export"),
        ])

    private static let byGRPCMethod: [String: GRPCMethod] = Dictionary(uniqueKeysWithValues: grpcMethods.map { ($0.name, $0) })

    /// The route a gRPC method (`openkcm.cmk.v1.TenantService/CreateTenant`) answers to.
    public static func grpcMethod(_ fullName: String) -> GRPCMethod? { byGRPCMethod[fullName] }

    private static let byRoute: [String: Rule] = Dictionary(uniqueKeysWithValues: rules.map { ("\($0.method) \($0.path)", $0) })

    public static func rule(method: String, path: String) -> Rule? { byRoute["\(method) \(path)"] }

    /// The table as Markdown (Docs/Authorization.md embeds it; a test compares).
    public static var markdown: String {
        var lines = ["| method | path | security admin | auditor | platform operator | tenant scope | fresh TOTP | tokens | gRPC |",
                     "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for rule in rules {
            let grpc = grpcMethods.filter { $0.method == rule.method && $0.path == rule.path }
                .map { "`" + $0.name.dropFirst("openkcm.cmk.v1.".count) + "`" }
            let grpcColumn = grpc.isEmpty ? "—" : grpc.joined(separator: ", ")
            let tokens = rule.sessionOnly || rule.stepUp == .always ? "no" : rule.stepUp == .onRestore ? "not to restore" : "yes"
            func mark(_ role: AdminRole) -> String { rule.roles.contains(role) ? "yes" : "—" }
            lines.append("| \(rule.method) | `\(rule.path)` | \(mark(.securityAdmin)) | \(mark(.auditor)) | \(mark(.platformOperator)) | "
                         + "\(rule.scope.rawValue) | \(rule.stepUp.rawValue) | \(tokens) | \(grpcColumn) |")
        }
        return lines.joined(separator: "\n")
    }
}
