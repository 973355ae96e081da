public import Foundation
import Storage

/// An administrative role. Nodes are not accounts: they authenticate by their enrolled keys.
public enum AdminRole: String, Codable, Sendable, CaseIterable {
    /// Tenants, keystores, links, the kill-switch, nodes, users and tokens.
    case securityAdmin = "security_admin"
    /// Read-only, including the audit log, its export and verification.
    case auditor
    /// Runs the platform: enrols regional nodes, rotates the IVK. Cannot touch tenants, links or
    /// the kill-switch; a security administrator cannot enrol nodes (separation of duties).
    case platformOperator = "platform_operator"

    /// The roles an account of this role may create (people and tokens): its own and, for a
    /// security administrator, auditors. Nobody makes accounts of a role that does the other
    /// half of a separated duty.
    public var mayCreate: Set<AdminRole> {
        switch self {
        case .securityAdmin: [.securityAdmin, .auditor]
        case .auditor: []
        case .platformOperator: [.platformOperator]
        }
    }
}

/// An administrator. The password is kept as a bcrypt hash and the TOTP secret sealed by the
/// platform token; neither ever leaves the gateway.
public struct Account: Sendable, Equatable {
    public var id: String
    public var username: String
    public var role: AdminRole
    /// Nil: every tenant.
    public var tenants: [String]?
    public var passwordHash: String
    public var totpSealed: Data
    public var totpIVKVersion: Int
    public var totpLastStep: Int64
    public var failedLogins: Int
    public var lockedUntil: Date?
    public var createdAt: Date
    public var createdBy: String
    /// Disabled: no login, no session, no step-up; enabled again by an administrator.
    public var disabledAt: Date? = nil
}

/// An administrative session, found by the hash of its cookie.
public struct AdminSession: Sendable, Equatable {
    public var id: String
    public var accountID: String
    public var csrfHash: Data
    public var authMethod: String
    public var createdAt: Date
    public var lastUsedAt: Date
    public var expiresAt: Date
    public var stepUpAt: Date?
    public var revokedAt: Date?
}

/// A token for automation (CI/CD): a role and tenant scope, an expiry; kept as a hash.
public struct AutomationToken: Sendable, Equatable {
    public var id: String
    public var name: String
    public var role: AdminRole
    public var tenants: [String]?
    public var createdAt: Date
    public var createdBy: String
    public var expiresAt: Date
    public var revokedAt: Date?
    public var lastUsedAt: Date?
}

extension Account {
    init(row: Row) throws {
        self.init(id: row["id"], username: row["username"], role: AdminRole(rawValue: row["role"]) ?? .auditor,
                  tenants: try Self.decodeTenants(row["tenants"]), passwordHash: row["password_hash"], totpSealed: row["totp_sealed"],
                  totpIVKVersion: row["totp_ivk_version"], totpLastStep: row["totp_last_step"], failedLogins: row["failed_logins"],
                  lockedUntil: (row["locked_until"] as Int64?).map(Date.init(registryMilliseconds:)),
                  createdAt: Date(registryMilliseconds: row["created_at"]), createdBy: row["created_by"],
                  disabledAt: (row["disabled_at"] as Int64?).map(Date.init(registryMilliseconds:)))
    }

    static func decodeTenants(_ text: String?) throws -> [String]? {
        guard let text else { return nil }
        return try JSONDecoder().decode([String].self, from: Data(text.utf8))
    }

    static func encodeTenants(_ tenants: [String]?) throws -> String? {
        try tenants.map { String(decoding: try JSONEncoder().encode($0.sorted()), as: UTF8.self) }
    }
}

extension AdminSession {
    init(row: Row) {
        self.init(id: row["id"], accountID: row["account_id"], csrfHash: row["csrf_hash"], authMethod: row["auth_method"],
                  createdAt: Date(registryMilliseconds: row["created_at"]), lastUsedAt: Date(registryMilliseconds: row["last_used_at"]),
                  expiresAt: Date(registryMilliseconds: row["expires_at"]),
                  stepUpAt: (row["step_up_at"] as Int64?).map(Date.init(registryMilliseconds:)),
                  revokedAt: (row["revoked_at"] as Int64?).map(Date.init(registryMilliseconds:)))
    }
}

extension AutomationToken {
    init(row: Row) throws {
        self.init(id: row["id"], name: row["name"], role: AdminRole(rawValue: row["role"]) ?? .auditor,
                  tenants: try Account.decodeTenants(row["tenants"]), createdAt: Date(registryMilliseconds: row["created_at"]),
                  createdBy: row["created_by"], expiresAt: Date(registryMilliseconds: row["expires_at"]),
                  revokedAt: (row["revoked_at"] as Int64?).map(Date.init(registryMilliseconds:)),
                  lastUsedAt: (row["last_used_at"] as Int64?).map(Date.init(registryMilliseconds:)))
    }
}

extension Registry {
    // MARK: Accounts

    public func createAccount(username: String, role: AdminRole, tenants: [String]?, passwordHash: String, totpSealed: Data,
                              totpIVKVersion: Int, createdBy: String, at: Date = Date()) async throws -> Account {
        let id = Self.newID(), tenantsText = try Account.encodeTenants(tenants)
        let created = at.registryNormalized
        return try await write { db in
            if try Row.fetchOne(db, sql: "SELECT 1 FROM account WHERE username = ?", arguments: [username]) != nil {
                throw RegistryError(.conflict, "user \(username) already exists")
            }
            try db.execute(sql: """
                INSERT INTO account (id, username, role, tenants, password_hash, totp_sealed, totp_ivk_version, created_at, created_by)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [id, username, role.rawValue, tenantsText, passwordHash, totpSealed, totpIVKVersion,
                                 created.registryMilliseconds, createdBy])
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM account WHERE id = ?", arguments: [id]) else {
                throw RegistryError(.notFound, "no user \(id)")
            }
            return try Account(row: row)
        }
    }

    public func account(username: String) async throws -> Account? {
        try await read { db in try Row.fetchOne(db, sql: "SELECT * FROM account WHERE username = ?", arguments: [username]).map(Account.init(row:)) }
    }

    public func account(id: String) async throws -> Account? {
        try await read { db in try Row.fetchOne(db, sql: "SELECT * FROM account WHERE id = ?", arguments: [id]).map(Account.init(row:)) }
    }

    public func accounts() async throws -> [Account] {
        try await read { db in try Row.fetchAll(db, sql: "SELECT * FROM account ORDER BY username").map(Account.init(row:)) }
    }

    /// Accepts a TOTP time step only if it is later than the last one accepted (no replay).
    public func consumeTOTPStep(accountID: String, step: Int64) async throws -> Bool {
        try await write { db in
            try db.execute(sql: "UPDATE account SET totp_last_step = ? WHERE id = ? AND totp_last_step < ?",
                           arguments: [step, accountID, step])
            return db.changesCount == 1
        }
    }

    /// Records a failed login; at `threshold` failures the account is locked until `lockUntil`.
    /// Returns the new count and the lock, if any.
    public func recordFailedLogin(accountID: String, threshold: Int, lockUntil: Date) async throws -> (failures: Int, lockedUntil: Date?) {
        try await write { db in
            try db.execute(sql: "UPDATE account SET failed_logins = failed_logins + 1 WHERE id = ?", arguments: [accountID])
            let failures = try Int.fetchOne(db, sql: "SELECT failed_logins FROM account WHERE id = ?", arguments: [accountID]) ?? 0
            let until = failures >= threshold ? lockUntil.registryNormalized : nil
            if let until {
                try db.execute(sql: "UPDATE account SET locked_until = ? WHERE id = ?", arguments: [until.registryMilliseconds, accountID])
            }
            return (failures, until)
        }
    }

    public func resetFailedLogins(accountID: String) async throws {
        try await write { db in
            try db.execute(sql: "UPDATE account SET failed_logins = 0, locked_until = NULL WHERE id = ?", arguments: [accountID])
        }
    }

    /// Disables (or enables again) an account; disabling ends its sessions. `conflict` if it
    /// would leave no enabled security administrator.
    @discardableResult
    public func setAccountDisabled(id: String, _ disabled: Bool, at: Date = Date()) async throws -> Account {
        try await write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM account WHERE id = ?", arguments: [id]) else {
                throw RegistryError(.notFound, "no user \(id)")
            }
            let account = try Account(row: row)
            if disabled, account.role == .securityAdmin, account.disabledAt == nil { try Self.requireAnotherSecurityAdmin(db, besides: id) }
            try db.execute(sql: "UPDATE account SET disabled_at = ? WHERE id = ?", arguments: [disabled ? at.registryMilliseconds : nil, id])
            if disabled {
                try db.execute(sql: "UPDATE admin_session SET revoked_at = ? WHERE account_id = ? AND revoked_at IS NULL",
                               arguments: [at.registryMilliseconds, id])
            }
            return try Account(row: try Row.fetchOne(db, sql: "SELECT * FROM account WHERE id = ?", arguments: [id])!)
        }
    }

    /// Removes an account and its sessions (audit records keep its name). `conflict` if it is the
    /// last enabled security administrator.
    public func deleteAccount(id: String) async throws {
        try await write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM account WHERE id = ?", arguments: [id]) else {
                throw RegistryError(.notFound, "no user \(id)")
            }
            let account = try Account(row: row)
            if account.role == .securityAdmin, account.disabledAt == nil { try Self.requireAnotherSecurityAdmin(db, besides: id) }
            try db.execute(sql: "DELETE FROM admin_session WHERE account_id = ?", arguments: [id])
            try db.execute(sql: "DELETE FROM account WHERE id = ?", arguments: [id])
        }
    }

    private static func requireAnotherSecurityAdmin(_ db: Database, besides id: String) throws {
        let others = try Int.fetchOne(db, sql: """
            SELECT count(*) FROM account WHERE role = 'security_admin' AND disabled_at IS NULL AND id <> ?
            """, arguments: [id]) ?? 0
        guard others > 0 else {
            throw RegistryError(.conflict, "it is the last enabled security administrator: nobody could lift a lockout or manage keys after it")
        }
    }

    // MARK: Sessions

    public func createSession(tokenHash: Data, csrfHash: Data, accountID: String, authMethod: String, expiresAt: Date,
                              clientAddress: String?, at: Date = Date()) async throws -> AdminSession {
        let id = Self.newID(), now = at.registryMilliseconds
        return try await write { db in
            try db.execute(sql: """
                INSERT INTO admin_session (token_hash, id, account_id, csrf_hash, auth_method, created_at, last_used_at, expires_at,
                                           step_up_at, client_address)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [tokenHash, id, accountID, csrfHash, authMethod, now, now, expiresAt.registryMilliseconds, now, clientAddress])
            return AdminSession(row: try Row.fetchOne(db, sql: "SELECT * FROM admin_session WHERE id = ?", arguments: [id])!)
        }
    }

    public func session(tokenHash: Data) async throws -> AdminSession? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM admin_session WHERE token_hash = ?", arguments: [tokenHash]).map(AdminSession.init(row:))
        }
    }

    public func touchSession(id: String, at: Date) async throws {
        try await write { db in
            try db.execute(sql: "UPDATE admin_session SET last_used_at = ? WHERE id = ?", arguments: [at.registryMilliseconds, id])
        }
    }

    public func stepUpSession(id: String, at: Date) async throws {
        try await write { db in
            try db.execute(sql: "UPDATE admin_session SET step_up_at = ? WHERE id = ?", arguments: [at.registryMilliseconds, id])
        }
    }

    public func revokeSession(id: String, at: Date) async throws {
        try await write { db in
            try db.execute(sql: "UPDATE admin_session SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?",
                           arguments: [at.registryMilliseconds, id])
        }
    }

    /// Ends every live session of an account; returns how many.
    @discardableResult
    public func revokeSessions(accountID: String, at: Date) async throws -> Int {
        try await write { db in
            try db.execute(sql: "UPDATE admin_session SET revoked_at = ? WHERE account_id = ? AND revoked_at IS NULL",
                           arguments: [at.registryMilliseconds, accountID])
            return db.changesCount
        }
    }

    // MARK: Automation tokens

    public func createAutomationToken(tokenHash: Data, name: String, role: AdminRole, tenants: [String]?, expiresAt: Date,
                                      createdBy: String, at: Date = Date()) async throws -> AutomationToken {
        let id = Self.newID(), tenantsText = try Account.encodeTenants(tenants)
        return try await write { db in
            try db.execute(sql: """
                INSERT INTO automation_token (id, token_hash, name, role, tenants, created_at, created_by, expires_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [id, tokenHash, name, role.rawValue, tenantsText, at.registryMilliseconds, createdBy,
                                 expiresAt.registryMilliseconds])
            return try AutomationToken(row: try Row.fetchOne(db, sql: "SELECT * FROM automation_token WHERE id = ?", arguments: [id])!)
        }
    }

    public func automationToken(tokenHash: Data) async throws -> AutomationToken? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM automation_token WHERE token_hash = ?", arguments: [tokenHash]).map(AutomationToken.init(row:))
        }
    }

    public func automationTokens() async throws -> [AutomationToken] {
        try await read { db in try Row.fetchAll(db, sql: "SELECT * FROM automation_token ORDER BY created_at, id").map(AutomationToken.init(row:)) }
    }

    public func revokeAutomationToken(id: String, at: Date) async throws {
        try await write { db in
            try db.execute(sql: "UPDATE automation_token SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?",
                           arguments: [at.registryMilliseconds, id])
            if db.changesCount == 0 { throw RegistryError(.notFound, "no automation token \(id)") }
        }
    }

    public func touchAutomationToken(id: String, at: Date) async throws {
        try await write { db in
            try db.execute(sql: "UPDATE automation_token SET last_used_at = ? WHERE id = ?", arguments: [at.registryMilliseconds, id])
        }
    }
}
