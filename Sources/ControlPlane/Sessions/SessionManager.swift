public import Audit
public import AuditFormat
package import CMKCore
import Crypto
public import Foundation
import HummingbirdBcrypt
public import KSI
public import Logging
import NIOConcurrencyHelpers
import NIOPosix
public import Registry

/// Session settings (`sessions` in the configuration).
public struct SessionSettings: Codable, Sendable, Equatable {
    /// A session unused this long ends.
    public var idleMinutes: Int = 15
    /// A session ends this long after login, used or not.
    public var absoluteHours: Int = 8
    /// bcrypt cost (2^cost rounds); 12 by default.
    public var bcryptCost: Int = 12
    /// Failed logins before an account (or a client address) is locked, and for how long.
    public var lockoutThreshold: Int = 5
    public var lockoutMinutes: Int = 15
    /// Gateway mode: accept the identity assertion of a gateway in front (Docs/Authorization.md).
    public var identityAssertion: IdentityAssertionSettings?

    public init() {}

    package enum CodingKeys: String, CodingKey { case idleMinutes, absoluteHours, bcryptCost, lockoutThreshold, lockoutMinutes, identityAssertion }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        idleMinutes = try c.decodeIfPresent(Int.self, forKey: .idleMinutes) ?? 15
        absoluteHours = try c.decodeIfPresent(Int.self, forKey: .absoluteHours) ?? 8
        bcryptCost = try c.decodeIfPresent(Int.self, forKey: .bcryptCost) ?? 12
        lockoutThreshold = try c.decodeIfPresent(Int.self, forKey: .lockoutThreshold) ?? 5
        lockoutMinutes = try c.decodeIfPresent(Int.self, forKey: .lockoutMinutes) ?? 15
        identityAssertion = try c.decodeIfPresent(IdentityAssertionSettings.self, forKey: .identityAssertion)
    }
}

/// Who is calling `/api/v1`, once authenticated.
public struct Principal: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case session(id: String, stepUpAt: Date?)
        case token(id: String)
        /// A JWT from the gateway in front (gateway mode); `authTime` is when the person last
        /// proved their factors.
        case assertion(id: String, authTime: Date?)
    }

    public var kind: Kind
    /// The username or the token's name.
    public var name: String
    public var role: AdminRole
    /// Nil: every tenant.
    public var tenants: [String]?
    public var authMethod: String

    public func mayAccess(tenant: String) -> Bool { tenants.map { $0.contains(tenant) } ?? true }

    public var auditActor: AuditActor {
        switch kind {
        case .session(let id, _): AuditActor(kind: .user, id: name, session: id, authMethod: authMethod)
        case .token(let id): AuditActor(kind: .token, id: name, session: id, authMethod: authMethod)
        case .assertion(let id, _): AuditActor(kind: .user, id: name, session: id.isEmpty ? nil : id, authMethod: authMethod)
        }
    }

    /// Whether a TOTP was entered within the step-up window.
    public func hasFreshTOTP(now: Date = Date()) -> Bool {
        switch kind {
        case .session(_, let stepUpAt?), .assertion(_, let stepUpAt?): now.timeIntervalSince(stepUpAt) <= AccessPolicy.stepUpWindow
        default: false
        }
    }

    /// A person (a session or a gateway assertion), not a token.
    public var isPerson: Bool {
        switch kind {
        case .session, .assertion: true
        case .token: false
        }
    }
}

/// Which refused login attempts get an audit record: per key (a locked address or account) at
/// most one a minute, and overall at most `perSecond`; the rest are counted and the count goes
/// into the next record made.
package struct FailureRecords {
    package init() {}

    package static let perSecond = 20
    package static let perKeyInterval: TimeInterval = 60
    package var lastByKey: [String: Date] = [:]
    package var windowStart = Date.distantPast
    package var inWindow = 0
    package var suppressed = 0

    /// The number of records suppressed before this one, or nil if this one is suppressed too.
    package mutating func admit(key: String?, at now: Date) -> Int? {
        if let key, let last = lastByKey[key], now.timeIntervalSince(last) < Self.perKeyInterval {
            suppressed += 1
            return nil
        }
        if now.timeIntervalSince(windowStart) >= 1 { (windowStart, inWindow) = (now, 0) }
        guard inWindow < Self.perSecond else {
            suppressed += 1
            return nil
        }
        inWindow += 1
        if let key {
            if lastByKey.count >= 10_000 { lastByKey = lastByKey.filter { now.timeIntervalSince($0.value) < Self.perKeyInterval } }
            lastByKey[key] = now
        }
        defer { suppressed = 0 }
        return suppressed
    }
}

/// Accounts, logins with password and TOTP, sessions, step-up, lockout and automation
/// tokens. Secrets are never stored or logged: bcrypt hashes, TOTP secrets sealed by the
/// platform token under the IVK, token and cookie values as SHA-256 hashes.
public final class SessionManager: Sendable {
    package static let totp = TOTP()
    public static let cookieName = "cmk_session"
    public static let csrfHeader = "X-CSRF-Token"

    public let registry: Registry
    package let platform: PKCS11Token
    /// Nil in the command line, which must not write the server's audit log.
    package let audit: AuditLog?
    package let settings: SessionSettings
    package let logger: Logger
    package let now: @Sendable () -> Date
    /// Login (and step-up) attempts in flight, by `account:ID` and `address:A`, in this
    /// replica (failures themselves are counted in the registry, by account and by address,
    /// for every replica: D99).
    private let inFlight = NIOLockedValueBox<[String: Int]>([:])
    /// Which refused attempts get an audit record.
    private let failureRecords = NIOLockedValueBox(FailureRecords())
    /// A bcrypt hash to verify against when the user does not exist, so both cost the same.
    private let decoyHash: String

    public init(registry: Registry, platform: PKCS11Token, audit: AuditLog?, settings: SessionSettings, logger: Logger,
         now: @escaping @Sendable () -> Date = { Date() }) {
        self.registry = registry
        self.platform = platform
        self.audit = audit
        self.settings = settings
        self.logger = logger
        self.now = now
        decoyHash = Bcrypt.hash("decoy-\(UUID().uuidString)", cost: UInt8(clamping: settings.bcryptCost))
    }

    package static func hash(_ text: String) -> Data { SecretToken.hash(text) }

    private func bcrypt<T: Sendable>(_ body: @escaping @Sendable () -> T) async throws -> T {
        // Deliberately slow: off Swift's cooperative threads.
        try await NIOThreadPool.singleton.runIfActive(body)
    }

    private func totpKey() async throws -> (KeyReference, Int) {
        guard let ivk = try await registry.ivkVersions().max(by: { $0.version < $1.version }) else {
            throw DomainError(.badRequest, "the platform token has no IVK yet")
        }
        return (try KeyReference(parsing: ivk.keyReference), ivk.version)
    }

    package static func totpAAD(_ username: String) -> [UInt8] { Array("openkcm/totp/v1|\(username)".utf8) }

    // MARK: Accounts

    public struct NewAccount: Sendable {
        public var account: Account
        /// Shown once: base32 and as an `otpauth://` URI.
        public var totpSecret: String
        public var totpURI: String
    }

    public func createAccount(username: String, password: String, role: AdminRole, tenants: [String]?, createdBy: String) async throws -> NewAccount {
        guard (3...64).contains(username.count), username.allSatisfy({ $0.isLetter || $0.isNumber || "._-@".contains($0) }) else {
            throw DomainError(.badRequest, "a username is 3-64 letters, digits, '.', '_', '-' or '@'")
        }
        guard password.count >= 12, password.utf8.count <= 72 else {
            throw DomainError(.badRequest, "a password is at least 12 characters (and at most 72 bytes, bcrypt's limit)")
        }
        let cost = UInt8(clamping: settings.bcryptCost)
        let passwordHash = try await bcrypt { Bcrypt.hash(password, cost: cost) }
        var secret = (0..<20).map { _ in UInt8.random(in: 0...255) }
        defer { secret.withUnsafeMutableBytes { _ = memset($0.baseAddress!, 0, $0.count) } }
        let (key, version) = try await totpKey()
        let sealed = try await platform.seal(secret, with: key, aad: Self.totpAAD(username))
        let account: Account
        do {
            account = try await registry.createAccount(username: username, role: role, tenants: tenants, passwordHash: passwordHash,
                                                       totpSealed: Data(sealed), totpIVKVersion: version, createdBy: createdBy)
        } catch let error as RegistryError where error.code == .conflict {
            throw DomainError(.conflict, "user \(username) already exists")
        }
        return NewAccount(account: account, totpSecret: Base32.encode(secret),
                          totpURI: TOTP.provisioningURI(secret: secret, issuer: "OpenKCM", account: username))
    }

    /// The TOTP step `code` matches for `account`, consumed so that it cannot be used again.
    private func checkTOTP(_ code: String, account: Account) async throws -> Bool {
        guard let ivk = try await registry.ivkVersions().first(where: { $0.version == account.totpIVKVersion }) else { return false }
        var secret = try await platform.open(Array(account.totpSealed), with: try KeyReference(parsing: ivk.keyReference),
                                             aad: Self.totpAAD(account.username))
        defer { secret.withUnsafeMutableBytes { _ = memset($0.baseAddress!, 0, $0.count) } }
        guard let step = Self.totp.match(code, secret: secret, at: now()) else { return false }
        return try await registry.consumeTOTPStep(accountID: account.id, step: step)
    }

    // MARK: Login

    public struct Login: Sendable {
        public var sessionToken: String
        public var csrfToken: String
        public var session: AdminSession
        public var account: Account
    }

    /// Password and TOTP, both required. Failures slow down, then lock the account and the
    /// client address for `lockoutMinutes`; attempts are audited, within bounds (below).
    ///
    /// Parallel attempts cannot outrun the lockout: each reserves a place before its password is
    /// checked, and an account or address with `threshold` failures and attempts in flight
    /// together refuses more. A flood cannot fill the audit disk: a username that could not be
    /// an account's is recorded as `(invalid)`, refusals of a locked account or address are
    /// recorded once a minute each, and refused attempts at most `FailureRecords.perSecond`
    /// times a second overall; the next record carries how many were not (`suppressedBefore`).
    public func login(username: String, password: String, totp code: String, clientAddress: String?, requestID: String?) async throws -> Login {
        let address = clientAddress ?? "unknown"
        let started = now()
        let valid = Self.isPossibleUsername(username)
        let recordedName = valid ? username : "(invalid)"
        func record(_ outcome: AuditRecord.Outcome, _ errorCode: String?, operation: String = "auth.login",
                    session: String? = nil, details: [String: String] = [:], limitKey: String? = nil) async throws {
            var details = details
            if outcome != .success {
                guard let carried = failureRecords.withLockedValue({ $0.admit(key: limitKey, at: started) }) else { return }
                if carried > 0 { details["suppressedBefore"] = String(carried) }
            }
            if !valid { details["usernameLength"] = String(username.utf8.count) }
            _ = try await audit?.append(AuditRecord(actor: AuditActor(kind: .user, id: recordedName, session: session, authMethod: "password+totp"),
                                                   operation: operation, outcome: outcome, errorCode: errorCode, requestID: requestID,
                                                   clientAddress: clientAddress, details: details))
        }
        let threshold = settings.lockoutThreshold
        let addressRecord = try await registry.addressFailures(address)
        if let until = addressRecord?.lockedUntil, until > started {
            try await record(.denied, ErrorCode.locked.rawValue, details: ["reason": "client address locked"], limitKey: "address:\(address)")
            throw DomainError(.locked, "too many failed logins from this address; try again later")
        }
        var account = valid ? try await registry.account(username: username) : nil
        if account?.disabledAt != nil {
            // Answered as a wrong password (after the same bcrypt work), recorded as what it is.
            account = nil
            _ = try await bcrypt { [decoyHash] in Bcrypt.verify(password, hash: decoyHash) }
            try await record(.denied, ErrorCode.accountDisabled.rawValue, details: ["reason": "account disabled"], limitKey: "disabled:\(username)")
            throw DomainError(.invalidCredentials, "the username, password or one-time code is wrong")
        }
        if let until = account?.lockedUntil, until > started {
            try await record(.denied, ErrorCode.locked.rawValue, details: ["reason": "account locked"], limitKey: "account:\(username)")
            throw DomainError(.locked, "too many failed logins for this account; try again later")
        }
        // After a lock has run out, the failures that made it no longer hold attempts back (the
        // next failure locks again at once, as it always did).
        let addressFailuresSoFar = addressRecord.map { $0.lockedUntil == nil ? $0.count : 0 } ?? 0
        let (addressKey, accountKey) = ("address:\(address)", account.map { "account:\($0.id)" } ?? "")
        func tooManyAtOnce() async throws -> DomainError {
            try await record(.denied, ErrorCode.locked.rawValue, details: ["reason": "too many attempts at once"], limitKey: addressKey)
            return DomainError(.locked, "too many login attempts at once for this account or address; try again later")
        }
        guard let othersInFlight = reserve([addressKey: addressFailuresSoFar, accountKey: account.map(Self.pendingFailures) ?? 0],
                                           threshold: threshold) else {
            throw try await tooManyAtOnce()
        }
        defer { release([addressKey, accountKey]) }
        // The counts above were read before the reservation: an attempt that failed and left in
        // between is in neither them nor the attempts in flight now. Read again, after reserving,
        // against the attempts that were in flight when this one reserved: an attempt that had
        // left by then had recorded its failure before leaving, so the second read sees it.
        let freshAddress = try await registry.addressFailures(address).map { $0.lockedUntil == nil ? $0.count : 0 } ?? 0
        var freshAccount = 0
        if let account, let current = try await registry.account(username: account.username) { freshAccount = Self.pendingFailures(current) }
        guard freshAddress + othersInFlight[addressKey, default: 0] < threshold,
              accountKey.isEmpty || freshAccount + othersInFlight[accountKey, default: 0] < threshold else {
            throw try await tooManyAtOnce()
        }
        let hash = account?.passwordHash ?? decoyHash
        let passwordOK = try await bcrypt { Bcrypt.verify(password, hash: hash) }
        var totpOK = false
        if let account, passwordOK { totpOK = try await checkTOTP(code, account: account) }
        guard let account, passwordOK, totpOK else {
            try await fail(account: account, address: address, record: record)
            throw DomainError(.invalidCredentials, "the username, password or one-time code is wrong")
        }
        try await registry.resetFailedLogins(accountID: account.id)
        if addressRecord != nil { try await registry.clearAddressFailures(address) }
        let sessionToken = SecretToken.make(prefix: "okas_"), csrfToken = SecretToken.make(prefix: "")
        let session = try await registry.createSession(
            tokenHash: Self.hash(sessionToken), csrfHash: Self.hash(csrfToken), accountID: account.id, authMethod: "password+totp",
            expiresAt: started.addingTimeInterval(Double(settings.absoluteHours) * 3600), clientAddress: clientAddress, at: started)
        try await record(.success, nil, session: session.id)
        return Login(sessionToken: sessionToken, csrfToken: csrfToken, session: session, account: account)
    }

    /// Failures that count against new attempts: none once a lock has run out.
    package static func pendingFailures(_ account: Account) -> Int { account.lockedUntil == nil ? account.failedLogins : 0 }

    /// The rules `createAccount` applies to usernames: anything else cannot be an account.
    package static func isPossibleUsername(_ username: String) -> Bool {
        (3...64).contains(username.count) && username.allSatisfy { $0.isLetter || $0.isNumber || "._-@".contains($0) }
    }

    /// Reserves one attempt under each key, if every key's failures plus attempts in flight stay
    /// under `threshold`; all or none. Keys that are empty are ignored. The attempts that were
    /// in flight beside this one, by key; nil when refused.
    private func reserve(_ counts: [String: Int], threshold: Int) -> [String: Int]? {
        inFlight.withLockedValue { inFlight in
            let keys = counts.keys.filter { !$0.isEmpty }
            guard keys.allSatisfy({ counts[$0, default: 0] + inFlight[$0, default: 0] < threshold }) else { return nil }
            var others: [String: Int] = [:]
            for key in keys {
                others[key] = inFlight[key, default: 0]
                inFlight[key, default: 0] += 1
            }
            return others
        }
    }

    private func release(_ keys: [String]) {
        inFlight.withLockedValue { inFlight in
            for key in keys where !key.isEmpty {
                inFlight[key, default: 1] -= 1
                if inFlight[key] == 0 { inFlight[key] = nil }
            }
        }
    }

    private func fail(account: Account?, address: String,
                      record: (AuditRecord.Outcome, String?, String, String?, [String: String], String?) async throws -> Void) async throws {
        let lockFor = Double(settings.lockoutMinutes) * 60, threshold = settings.lockoutThreshold
        let at = now()
        var failures = 0
        var lockedUntil: Date?
        if let account {
            (failures, lockedUntil) = try await registry.recordFailedLogin(accountID: account.id, threshold: threshold,
                                                                           lockUntil: at.addingTimeInterval(lockFor))
        }
        let addressEntry = try await registry.recordAddressFailure(address, threshold: threshold, lockUntil: at.addingTimeInterval(lockFor), at: at)
        failures = max(failures, addressEntry.count)
        let addressLock = addressEntry.lockedUntil
        try await record(.denied, ErrorCode.invalidCredentials.rawValue, "auth.login", nil, ["failures": String(failures)], nil)
        if lockedUntil != nil || addressLock != nil {
            try await record(.denied, ErrorCode.locked.rawValue, "auth.lockout", nil,
                             ["failures": String(failures), "scope": lockedUntil != nil ? "account" : "address",
                              "minutes": String(settings.lockoutMinutes)], "lockout:\(address)")
            logger.warning("login locked out after repeated failures", metadata: ["failures": "\(failures)"])
        } else if failures >= 2 {
            // Slow down before the lock: one more second per failure, up to five.
            try? await Task.sleep(for: .seconds(min(5, failures - 1)))
        }
    }

    /// For the command line (no audit log here): the action waits in the registry until the
    /// server appends it to the audit log, by `system/cli`, naming who ran it on the host.
    public func recordHostAction(_ operation: String, target: String?, details: [String: String] = [:]) async throws {
        guard audit == nil else { return }
        let user = ProcessInfo.processInfo.environment["SUDO_USER"] ?? ProcessInfo.processInfo.environment["USER"] ?? "uid \(getuid())"
        try await registry.queuePendingAudit(operation: operation, actor: "\(user)@\(ProcessInfo.processInfo.hostName)", target: target,
                                             details: details)
    }

    /// Ends an account's lock and its failure count (`POST /users/{user}/unlock`, `cmk admin unlock`).
    public func unlock(username: String) async throws -> Account {
        guard let account = try await registry.account(username: username) else {
            throw DomainError(.badRequest, "no user \(username)")
        }
        try await registry.resetFailedLogins(accountID: account.id)
        return try await registry.account(id: account.id) ?? account
    }

    // MARK: Sessions

    /// The session of a cookie, if live; `csrf` must match for a state-changing request.
    public func authenticateSession(token: String, csrf: String?, stateChanging: Bool) async throws -> Principal {
        guard let session = try await registry.session(tokenHash: Self.hash(token)),
              let account = try await registry.account(id: session.accountID), account.disabledAt == nil else {
            throw DomainError(.sessionExpired, "no such session; log in")
        }
        let at = now()
        guard session.revokedAt == nil, session.expiresAt > at,
              at.timeIntervalSince(session.lastUsedAt) <= Double(settings.idleMinutes) * 60 else {
            throw DomainError(.sessionExpired, "the session has ended; log in again")
        }
        if stateChanging {
            guard let csrf, Self.constantTimeEqual(Self.hash(csrf), session.csrfHash) else {
                throw DomainError(.csrfFailed, "a state-changing request with a session cookie needs the X-CSRF-Token header")
            }
        }
        if at.timeIntervalSince(session.lastUsedAt) > 5 { try await registry.touchSession(id: session.id, at: at) }
        return Principal(kind: .session(id: session.id, stepUpAt: session.stepUpAt), name: account.username, role: account.role,
                         tenants: account.tenants, authMethod: session.authMethod)
    }

    public func logout(sessionID: String) async throws {
        try await registry.revokeSession(id: sessionID, at: now())
    }

    /// Whether a refused step-up gets an audit record, and how many were not recorded before it.
    /// The same bounds as refused logins: a locked account's refusals once a minute, refusals at
    /// most `FailureRecords.perSecond` a second in all, so a session holder hammering the
    /// step-up cannot fill the audit disk.
    package func admitStepUpFailureRecord(username: String, _ code: ErrorCode) -> Int? {
        failureRecords.withLockedValue { $0.admit(key: code == .locked ? "step-up-locked:\(username)" : nil, at: now()) }
    }

    /// A fresh TOTP for the session: revocations and restores need one within five minutes.
    ///
    /// Wrong codes count as failed logins of the account, so guessing codes at the step-up locks
    /// the account (and refuses further step-ups) as guessing at the login does; parallel
    /// attempts reserve a place as logins do.
    public func stepUp(sessionID: String, username: String, totp code: String) async throws {
        guard let account = try await registry.account(username: username), account.disabledAt == nil else {
            throw DomainError(.invalidCredentials, "the one-time code is wrong or was already used")
        }
        if let until = account.lockedUntil, until > now() {
            throw DomainError(.locked, "too many wrong codes for this account; try again later")
        }
        let key = "account:\(account.id)", threshold = settings.lockoutThreshold
        guard let othersInFlight = reserve([key: Self.pendingFailures(account)], threshold: threshold) else {
            throw DomainError(.locked, "too many code attempts at once for this account; try again later")
        }
        defer { release([key]) }
        // As at the login: the failures read again after reserving, against the attempts that
        // were in flight then.
        let fresh = try await registry.account(username: username).map(Self.pendingFailures) ?? 0
        guard fresh + othersInFlight[key, default: 0] < threshold else {
            throw DomainError(.locked, "too many code attempts at once for this account; try again later")
        }
        guard try await checkTOTP(code, account: account) else {
            let (_, lockedUntil) = try await registry.recordFailedLogin(accountID: account.id, threshold: settings.lockoutThreshold,
                                                                        lockUntil: now().addingTimeInterval(Double(settings.lockoutMinutes) * 60))
            if lockedUntil != nil {
                throw DomainError(.locked, "too many wrong codes: the account is locked for \(settings.lockoutMinutes) minutes")
            }
            throw DomainError(.invalidCredentials, "the one-time code is wrong or was already used")
        }
        try await registry.resetFailedLogins(accountID: account.id)
        try await registry.stepUpSession(id: sessionID, at: now())
    }

    // MARK: Automation tokens

    public struct NewToken: Sendable {
        public var token: AutomationToken
        /// Shown once.
        public var secret: String
    }

    public func createToken(name: String, role: AdminRole, tenants: [String]?, ttl: TimeInterval, createdBy: String) async throws -> NewToken {
        guard (1...64).contains(name.count) else { throw DomainError(.badRequest, "a token name is 1-64 characters") }
        guard (60...(366 * 86_400)).contains(ttl) else { throw DomainError(.badRequest, "a token lives 60 s to 366 days") }
        let secret = SecretToken.make(prefix: "okat_")
        let token = try await registry.createAutomationToken(tokenHash: Self.hash(secret), name: name, role: role, tenants: tenants,
                                                             expiresAt: now().addingTimeInterval(ttl), createdBy: createdBy)
        return NewToken(token: token, secret: secret)
    }

    public func authenticateToken(_ secret: String) async throws -> Principal {
        guard secret.hasPrefix("okat_"), let token = try await registry.automationToken(tokenHash: Self.hash(secret)),
              token.revokedAt == nil, token.expiresAt > now() else {
            throw DomainError(.sessionExpired, "the token is unknown, revoked or expired")
        }
        let at = now()
        if token.lastUsedAt.map({ at.timeIntervalSince($0) > 5 }) ?? true { try await registry.touchAutomationToken(id: token.id, at: at) }
        return Principal(kind: .token(id: token.id), name: token.name, role: token.role, tenants: token.tenants, authMethod: "automation-token")
    }

    package static func constantTimeEqual(_ a: Data, _ b: Data) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for (x, y) in zip(a, b) { difference |= x ^ y }
        return difference == 0
    }
}
