import Audit
import AuditFormat
@testable import CMKServer
import ControlPlane
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOConcurrencyHelpers
import Registry
import TestSupport
import Testing

@Suite struct TOTPTests {
    /// RFC 6238 Appendix B (eight digits; the SHA-256 and SHA-512 seeds are 32 and 64 bytes).
    @Test(arguments: [
        (59, "94287082", "46119246", "90693936"), (1_111_111_109, "07081804", "68084774", "25091201"),
        (1_111_111_111, "14050471", "67062674", "99943326"), (1_234_567_890, "89005924", "91819424", "93441116"),
        (2_000_000_000, "69279037", "90698825", "38618901"), (20_000_000_000, "65353130", "77737706", "47863826"),
    ])
    func rfc6238Vectors(time: Int64, sha1: String, sha256: String, sha512: String) {
        let seed1 = Array("12345678901234567890".utf8)
        let seed32 = Array("12345678901234567890123456789012".utf8)
        let seed64 = Array("1234567890123456789012345678901234567890123456789012345678901234".utf8)
        let date = Date(timeIntervalSince1970: TimeInterval(time))
        for (algorithm, seed, expected) in [(TOTP.Algorithm.sha1, seed1, sha1), (.sha256, seed32, sha256), (.sha512, seed64, sha512)] {
            let totp = TOTP(algorithm: algorithm, digits: 8)
            #expect(totp.code(secret: seed, step: totp.step(at: date)) == expected)
        }
    }

    @Test func aCodeMatchesWithinOneStepOfSkewOnly() {
        let totp = TOTP(), secret = Array("12345678901234567890".utf8)
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let step = totp.step(at: now)
        #expect(totp.match(totp.code(secret: secret, step: step), secret: secret, at: now) == step)
        #expect(totp.match(totp.code(secret: secret, step: step - 1), secret: secret, at: now) == step - 1)
        #expect(totp.match(totp.code(secret: secret, step: step + 1), secret: secret, at: now) == step + 1)
        #expect(totp.match(totp.code(secret: secret, step: step - 2), secret: secret, at: now) == nil)
        #expect(totp.match("12345", secret: secret, at: now) == nil)
        #expect(totp.match("abcdef", secret: secret, at: now) == nil)
    }

    @Test func base32RoundTripsAndTheURIIsWhatAuthenticatorsRead() {
        #expect(Base32.encode(Array("foobar".utf8)) == "MZXW6YTBOI")
        #expect(Base32.decode("MZXW6YTBOI") == Array("foobar".utf8))
        let uri = TOTP.provisioningURI(secret: Array("foobar".utf8), issuer: "OpenKCM", account: "ana@example.com")
        #expect(uri == "otpauth://totp/OpenKCM:ana%40example.com?secret=MZXW6YTBOI&issuer=OpenKCM&algorithm=SHA1&digits=6&period=30")
    }
}

/// A person with an account: logs in with password and the current TOTP code.
struct TestUser {
    let username: String
    let password: String
    let secret: [UInt8]
    var cookie = ""
    var csrf = ""

    /// The code for `offset` steps from now (−1, 0, +1 all match; each can be used once).
    func code(_ offset: Int64 = 0) -> String {
        let totp = TOTP()
        return totp.code(secret: secret, step: totp.step(at: Date()) + offset)
    }

    var headers: HTTPFields {
        [.cookie: "\(SessionManager.cookieName)=\(cookie)", .init(SessionManager.csrfHeader)!: csrf, .contentType: "application/json"]
    }

    static func make(_ gateway: Gateway, _ username: String, role: AdminRole, tenants: [String]? = nil) async throws -> TestUser {
        let manager = SessionManager(registry: gateway.registry, platform: gateway.platform, audit: nil,
                                     settings: ServerHarness.sessionSettings, logger: Logger(label: "test"))
        let password = "correct horse battery \(username)"
        let created = try await manager.createAccount(username: username, password: password, role: role, tenants: tenants, createdBy: "test")
        return TestUser(username: username, password: password, secret: try #require(Base32.decode(created.totpSecret)))
    }

    func loginBody(password: String? = nil, code: String? = nil) -> String {
        #"{"username":"\#(username)","password":"\#(password ?? self.password)","totp":"\#(code ?? self.code())"}"#
    }

    mutating func logIn(_ client: any TestClientProtocol, offset: Int64 = 0) async throws {
        let response = try await client.execute(uri: "/api/v1/session", method: .post, headers: [.contentType: "application/json"],
                                                body: ServerHarness.body(loginBody(code: code(offset))))
        try #require(response.status == .created, "login: \(response.text)")
        let setCookie = try #require(response.headers[.setCookie])
        cookie = String(setCookie.split(separator: ";")[0].split(separator: "=", maxSplits: 1)[1])
        csrf = try #require(try response.json()["csrfToken"] as? String)
    }
}

@Suite(.serialized) struct SessionTests {
    func json(_ text: String) -> ByteBuffer { ServerHarness.body(text) }

    @Test func loginNeedsPasswordAndAFreshTOTPAndGivesAStrictCookie() async throws {
        try await ServerHarness().test { client, gateway in
            var ana = try await TestUser.make(gateway, "ana", role: .securityAdmin)
            let plain: HTTPFields = [.contentType: "application/json"]
            // Wrong password, wrong code, no code: refused alike.
            for body in [ana.loginBody(password: "wrong password!!"), ana.loginBody(code: "000000"), ana.loginBody(code: "")] {
                let refused = try await client.execute(uri: "/api/v1/session", method: .post, headers: plain, body: json(body))
                #expect(refused.status == .unauthorized && refused.headers[.setCookie] == nil)
            }
            let first = try await client.execute(uri: "/api/v1/session", method: .post, headers: plain, body: json(ana.loginBody()))
            #expect(first.status == .created)
            let cookie = try #require(first.headers[.setCookie])
            for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] { #expect(cookie.contains(attribute), "\(attribute)") }
            // The same code again: a replay.
            let replayed = try await client.execute(uri: "/api/v1/session", method: .post, headers: plain, body: json(ana.loginBody()))
            #expect(replayed.status == .unauthorized)
            try await ana.logIn(client, offset: 1)
            let me = try await client.execute(uri: "/api/v1/session", method: .get, headers: ana.headers)
            let username = try me.json()["username"] as? String
            #expect(me.status == .ok && username == "ana")
            // No credential at all.
            #expect(try await client.execute(uri: "/api/v1/tenants", method: .get).status == .unauthorized)
        }
    }

    @Test func stateChangesWithACookieNeedTheCSRFHeader() async throws {
        try await ServerHarness().test { client, gateway in
            var ana = try await TestUser.make(gateway, "ana", role: .securityAdmin)
            try await ana.logIn(client)
            var noCSRF = ana.headers
            noCSRF[.init(SessionManager.csrfHeader)!] = nil
            let refused = try await client.execute(uri: "/api/v1/tenants", method: .post, headers: noCSRF, body: json(#"{"id":"t1","name":"T"}"#))
            #expect(refused.status == .forbidden && refused.text.contains("csrf_failed"))
            var wrong = ana.headers
            wrong[.init(SessionManager.csrfHeader)!] = "not-the-token"
            #expect(try await client.execute(uri: "/api/v1/tenants", method: .post, headers: wrong, body: json(#"{"id":"t1","name":"T"}"#)).status == .forbidden)
            #expect(try await client.execute(uri: "/api/v1/tenants", method: .get, headers: noCSRF).status == .ok, "reads need no CSRF token")
            #expect(try await client.execute(uri: "/api/v1/tenants", method: .post, headers: ana.headers, body: json(#"{"id":"t1","name":"T"}"#)).status == .created)
            #expect(try await gateway.registry.tenant("t1").name == "T")
        }
    }

    @Test func logoutAndServerSideRevocationEndSessions() async throws {
        try await ServerHarness().test { client, gateway in
            var ana = try await TestUser.make(gateway, "ana", role: .securityAdmin)
            var bob = try await TestUser.make(gateway, "bob", role: .auditor)
            try await ana.logIn(client)
            try await bob.logIn(client)
            #expect(try await client.execute(uri: "/api/v1/session", method: .delete, headers: bob.headers).status == .noContent)
            #expect(try await client.execute(uri: "/api/v1/session", method: .get, headers: bob.headers).status == .unauthorized)
            try await bob.logIn(client, offset: 1)
            let account = try #require(try await gateway.registry.account(username: "bob"))
            let revoked = try await client.execute(uri: "/api/v1/users/\(account.id)/sessions", method: .delete, headers: ana.headers)
            let count = try revoked.json()["revoked"] as? Int
            #expect(revoked.status == .ok && count == 1)
            #expect(try await client.execute(uri: "/api/v1/tenants", method: .get, headers: bob.headers).status == .unauthorized)
            // An auditor cannot revoke anyone's sessions.
            var dave = try await TestUser.make(gateway, "dave", role: .auditor)
            try await dave.logIn(client)
            #expect(try await client.execute(uri: "/api/v1/users/\(account.id)/sessions", method: .delete, headers: dave.headers).status == .forbidden)
        }
    }

    @Test func idleAndOldSessionsAndRevokedOrExpiredTokensAreRefused() async throws {
        try await ServerHarness().test { client, gateway in
            var ana = try await TestUser.make(gateway, "ana", role: .securityAdmin)
            try await ana.logIn(client)
            let session = try #require(try await gateway.registry.session(tokenHash: SessionManager.hash(ana.cookie)))
            // Unused for longer than the idle limit (15 minutes).
            try await gateway.registry.touchSession(id: session.id, at: Date().addingTimeInterval(-16 * 60))
            let idle = try await client.execute(uri: "/api/v1/session", method: .get, headers: ana.headers)
            #expect(idle.status == .unauthorized && idle.text.contains("session_expired"))
            // Past its absolute end, however recently used.
            var bob = try await TestUser.make(gateway, "bob", role: .auditor)
            try await bob.logIn(client)
            let account = try #require(try await gateway.registry.account(username: "bob"))
            _ = try await gateway.registry.createSession(tokenHash: SessionManager.hash("okas_old"), csrfHash: SessionManager.hash("csrf"),
                                                         accountID: account.id, authMethod: "password+totp",
                                                         expiresAt: Date().addingTimeInterval(-1), clientAddress: nil)
            #expect(try await client.execute(uri: "/api/v1/session", method: .get,
                                             headers: [.cookie: "\(SessionManager.cookieName)=okas_old"]).status == .unauthorized)
            // A token works until revoked; an expired one never.
            let issued = try await client.execute(uri: "/api/v1/tokens", method: .post, headers: bob.headers,
                                                  body: json(#"{"name":"x","role":"auditor"}"#))
            #expect(issued.status == .forbidden, "an auditor cannot issue tokens")
            try await ana.logIn(client, offset: 1)
            let created = try await client.execute(uri: "/api/v1/tokens", method: .post, headers: ana.headers,
                                                   body: json(#"{"name":"ci","role":"auditor","ttlSeconds":600}"#))
            let token = try #require(try created.json()["token"] as? String), id = try #require(try created.json()["id"] as? String)
            let bearer: HTTPFields = [.authorization: "Bearer \(token)"]
            #expect(try await client.execute(uri: "/api/v1/tenants", method: .get, headers: bearer).status == .ok)
            #expect(try await client.execute(uri: "/api/v1/tokens/\(id)", method: .delete, headers: ana.headers).status == .noContent)
            #expect(try await client.execute(uri: "/api/v1/tenants", method: .get, headers: bearer).status == .unauthorized)
            _ = try await gateway.registry.createAutomationToken(tokenHash: SessionManager.hash("okat_expired"), name: "old", role: .auditor,
                                                                 tenants: nil, expiresAt: Date().addingTimeInterval(-1), createdBy: "test")
            #expect(try await client.execute(uri: "/api/v1/tenants", method: .get, headers: [.authorization: "Bearer okat_expired"]).status == .unauthorized)
            // Listings never show a token or a secret.
            let listed = try await client.execute(uri: "/api/v1/tokens", method: .get, headers: ana.headers).text
            #expect(!listed.contains(token) && listed.contains("\"revokedAt\""))
        }
    }

    @Test func repeatedFailuresLockTheAccountAndAreAudited() async throws {
        try await ServerHarness().test { client, gateway in
            let ana = try await TestUser.make(gateway, "ana", role: .securityAdmin)
            for _ in 0..<5 {
                let response = try await client.execute(uri: "/api/v1/session", method: .post, headers: [.contentType: "application/json"],
                                                        body: json(ana.loginBody(password: "not the password")))
                #expect(response.status == .unauthorized)
            }
            // Locked: even the right password and code are refused now.
            let locked = try await client.execute(uri: "/api/v1/session", method: .post, headers: [.contentType: "application/json"],
                                                  body: json(ana.loginBody()))
            #expect(locked.status == .tooManyRequests && locked.text.contains("locked"))
            let records = try gateway.audit.store.records(AuditQuery(operation: "auth.lockout")).records
            #expect(records.count >= 1 && records.allSatisfy { $0.actor.id == "ana" && $0.outcome == .denied })
            #expect(try gateway.audit.store.records(AuditQuery(operation: "auth.login")).records.filter { $0.outcome == .denied }.count >= 5)
        }
    }

    @Test func revokeNeedsAFreshTOTPAndTokensCannotRevoke() async throws {
        try await ServerHarness().test { client, gateway in
            var ana = try await TestUser.make(gateway, "ana", role: .securityAdmin)
            try await ana.logIn(client)
            #expect(try await client.execute(uri: "/api/v1/tenants", method: .post, headers: ana.headers, body: json(#"{"id":"acme","name":"A"}"#)).status == .created)
            let linked = try await client.execute(uri: "/api/v1/tenants/acme/l1-links", method: .post, headers: ana.headers,
                                                  body: json(#"{"provider":"pkcs11","keystore":"hsm","key":"pkcs11:object=l1"}"#))
            let link = try #require(try linked.json()["id"] as? String)
            // A session whose last TOTP is older than five minutes must step up first.
            let account = try #require(try await gateway.registry.account(username: "ana"))
            _ = account
            let session = try #require(try await gateway.registry.session(tokenHash: SessionManager.hash(ana.cookie)))
            try await gateway.registry.stepUpSession(id: session.id, at: Date().addingTimeInterval(-301))
            let stale = try await client.execute(uri: "/api/v1/tenants/acme/l1-links/\(link)/revoke", method: .post, headers: ana.headers)
            #expect(stale.status == .forbidden && stale.text.contains("step_up_required"))
            // An automation token, even a security administrator's, cannot revoke.
            let issued = try await client.execute(uri: "/api/v1/tokens", method: .post, headers: ana.headers,
                                                  body: json(#"{"name":"ci","role":"security_admin","ttlSeconds":3600}"#))
            let token = try #require(try issued.json()["token"] as? String)
            let byToken = try await client.execute(uri: "/api/v1/tenants/acme/l1-links/\(link)/revoke", method: .post,
                                                   headers: [.authorization: "Bearer \(token)"])
            #expect(byToken.status == .forbidden && byToken.text.contains("step_up_required"))
            #expect(try await client.execute(uri: "/api/v1/session/step-up", method: .post, headers: ana.headers,
                                             body: json(#"{"totp":"\#(ana.code(1))"}"#)).status == .noContent)
            #expect(try await client.execute(uri: "/api/v1/tenants/acme/l1-links/\(link)/revoke", method: .post, headers: ana.headers).status == .ok)
            // Restoring (a new link for a tenant with a revoked one) needs it too.
            try await gateway.registry.stepUpSession(id: session.id, at: Date().addingTimeInterval(-301))
            let restore = try await client.execute(uri: "/api/v1/tenants/acme/l1-links", method: .post, headers: ana.headers,
                                                   body: json(#"{"provider":"pkcs11","keystore":"hsm","key":"pkcs11:object=l1"}"#))
            #expect(restore.status == .forbidden && restore.text.contains("step_up_required"))
            // The revocation's audit record names the person, the session and the method.
            let record = try #require(try gateway.audit.store.records(AuditQuery(operation: "link.revoke")).records.last)
            #expect(record.actor == AuditActor(kind: .user, id: "ana", session: session.id, authMethod: "password+totp"))
            // Every use of the token is on the record.
            #expect(try gateway.audit.store.records(AuditQuery(operation: "auth.token_use")).records.contains { $0.actor.id == "ci" })
        }
    }

    /// Every route × every kind of caller, expected statuses computed from `AccessPolicy`.
    @Test func theAuthorizationMatrixFollowsThePolicyTable() async throws {
        try await ServerHarness().test { client, gateway in
            _ = try await gateway.registry.createTenant(id: "acme", name: "A")
            _ = try await gateway.registry.createTenant(id: "globex", name: "G")
            var admin = try await TestUser.make(gateway, "admin", role: .securityAdmin)
            var auditor = try await TestUser.make(gateway, "auditor", role: .auditor)
            var scoped = try await TestUser.make(gateway, "scoped", role: .securityAdmin, tenants: ["globex"])
            var operator_ = try await TestUser.make(gateway, "operator", role: .platformOperator)
            try await admin.logIn(client)
            try await auditor.logIn(client)
            try await scoped.logIn(client)
            try await operator_.logIn(client)
            let manager = SessionManager(registry: gateway.registry, platform: gateway.platform, audit: nil,
                                         settings: ServerHarness.sessionSettings, logger: Logger(label: "test"))
            let adminToken = try await manager.createToken(name: "ci-admin", role: .securityAdmin, tenants: nil, ttl: 3600, createdBy: "test").secret
            let auditorToken = try await manager.createToken(name: "ci-audit", role: .auditor, tenants: nil, ttl: 3600, createdBy: "test").secret
            let operatorToken = try await manager.createToken(name: "ci-ops", role: .platformOperator, tenants: nil, ttl: 3600, createdBy: "test").secret
            struct Caller { var name: String; var headers: HTTPFields; var role: AdminRole?; var tenants: [String]?; var person: Bool }
            let callers = [
                Caller(name: "admin", headers: admin.headers, role: .securityAdmin, tenants: nil, person: true),
                Caller(name: "auditor", headers: auditor.headers, role: .auditor, tenants: nil, person: true),
                Caller(name: "scoped", headers: scoped.headers, role: .securityAdmin, tenants: ["globex"], person: true),
                Caller(name: "operator", headers: operator_.headers, role: .platformOperator, tenants: nil, person: true),
                Caller(name: "operator token", headers: [.authorization: "Bearer \(operatorToken)", .contentType: "application/json"],
                       role: .platformOperator, tenants: nil, person: false),
                Caller(name: "admin token", headers: [.authorization: "Bearer \(adminToken)", .contentType: "application/json"],
                       role: .securityAdmin, tenants: nil, person: false),
                Caller(name: "auditor token", headers: [.authorization: "Bearer \(auditorToken)", .contentType: "application/json"],
                       role: .auditor, tenants: nil, person: false),
                Caller(name: "nobody", headers: [.contentType: "application/json"], role: nil, tenants: nil, person: false),
                Caller(name: "expired", headers: [.cookie: "\(SessionManager.cookieName)=okas_expired", .contentType: "application/json"],
                       role: nil, tenants: nil, person: false),
            ]
            // Logout would end the caller's session; the event stream never ends (tested live in PortalTests).
            for rule in AccessPolicy.rules where !(rule.method == "DELETE" && rule.path == "/api/v1/session") && rule.path != "/api/v1/events/stream" {
                // Parameters: the tenant acme (outside the scoped caller's tenants), bogus ids otherwise.
                let uri = rule.path.replacingOccurrences(of: "{tenant}", with: "acme")
                    .replacingOccurrences(of: #"\{[a-z]+\}"#, with: "0", options: .regularExpression)
                for caller in callers {
                    let response = try await client.execute(uri: uri, method: HTTPRequest.Method(rawValue: rule.method)!, headers: caller.headers,
                                                            body: rule.method == "POST" ? json("{}") : nil)
                    let label = "\(rule.method) \(rule.path) as \(caller.name): \(response.status.code) \(response.text.prefix(160))"
                    guard let role = caller.role else {
                        #expect(response.status == .unauthorized, "\(label)")
                        continue
                    }
                    if !rule.roles.contains(role) {
                        #expect(response.status == .forbidden, "\(label)")
                    } else if rule.scope == .allTenants && caller.tenants != nil {
                        #expect(response.status == .forbidden, "\(label)")
                    } else if rule.scope == .tenant && caller.tenants != nil {
                        #expect(response.status == .notFound && response.text.contains("no tenant acme"), "\(label)")
                    } else if rule.sessionOnly && !caller.person {
                        #expect(response.status == .forbidden, "\(label)")
                    } else if rule.stepUp == .always && !caller.person {
                        #expect(response.status == .forbidden && response.text.contains("step_up_required"), "\(label)")
                    } else {
                        #expect(response.status != .unauthorized && response.status != .forbidden, "\(label)")
                    }
                }
            }
            // A scoped caller lists only its tenants.
            let listed = try await client.execute(uri: "/api/v1/tenants", method: .get, headers: scoped.headers)
            #expect((try listed.json()["items"] as? [[String: Any]])?.compactMap { $0["id"] as? String } == ["globex"])
            // Nodes' routes take no administrator credential.
            for (method, path) in AccessPolicy.nodeRoutes {
                let response = try await client.execute(uri: path, method: HTTPRequest.Method(rawValue: method)!, headers: admin.headers,
                                                        body: method == "POST" ? json("{}") : nil)
                #expect(response.status == .unauthorized, "\(method) \(path) as an administrator")
            }
        }
    }

    /// Passwords, TOTP secrets, codes and tokens appear in no response but the one that shows
    /// them once, in no audit record and not in the registry file.
    @Test func noSecretLeaksIntoResponsesTheAuditLogOrTheRegistry() async throws {
        let harness = try ServerHarness()
        let collected = NIOLockedValueBox((seen: "", secrets: [String]()))
        try await harness.test { client, gateway in
            var seen = ""
            var ana = try await TestUser.make(gateway, "ana", role: .securityAdmin)
            try await ana.logIn(client)
            let created = try await client.execute(uri: "/api/v1/users", method: .post, headers: ana.headers,
                                                   body: json(#"{"username":"carol","password":"a long secret passphrase","role":"auditor"}"#))
            #expect(created.status == .created)
            let totpSecret = try #require(try created.json()["totpSecret"] as? String)
            let issued = try await client.execute(uri: "/api/v1/tokens", method: .post, headers: ana.headers,
                                                  body: json(#"{"name":"ci","role":"auditor","ttlSeconds":600}"#))
            let token = try #require(try issued.json()["token"] as? String)
            for uri in ["/api/v1/users", "/api/v1/tokens", "/api/v1/session", "/api/v1/audit?limit=500"] {
                seen += try await client.execute(uri: uri, method: .get, headers: ana.headers).text
            }
            seen += try await client.execute(uri: "/api/v1/audit/export", method: .get, headers: ana.headers).text
            let secrets = [ana.password, Base32.encode(ana.secret), "a long secret passphrase", totpSecret, token, ana.cookie, ana.csrf]
            collected.withLockedValue { $0 = (seen, secrets) }
        }
        let (seen, secrets) = collected.withLockedValue { $0 }
        let files = try FileManager.default.contentsOfDirectory(atPath: harness.directory).filter { $0.contains(".sqlite") }
            .compactMap { FileManager.default.contents(atPath: "\(harness.directory)/\($0)") }
        for secret in secrets {
            #expect(!seen.contains(secret), "a secret in a listing or the audit log")
            for file in files { #expect(file.range(of: Data(secret.utf8)) == nil, "a secret in a database file") }
        }
    }
}
