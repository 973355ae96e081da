@testable import CMKServer
import ControlPlane
import Foundation
import Hummingbird
import HummingbirdTesting
import KSI
import Logging
import NIOFoundationEssentialsCompat
import Registry
import TestSupport

/// A gateway on the fixture's SoftHSM: keystore `hsm` on token `server` (which is also the
/// platform token, so L2 is made inside it), keystore `other` on token `server-b`, a registry
/// in a fresh directory, and a security administrator logged in (`auth`: its session cookie
/// and CSRF header, with a fresh second factor).
struct ServerHarness {
    static let sessionToken = "okas_test-harness-session-0123456789abcdef"
    static let csrfToken = "test-harness-csrf-0123456789abcdef"
    static let adminName = "harness-admin"
    static let operatorSessionToken = "okas_test-harness-operator-0123456789abcdef"
    static let operatorCSRF = "test-harness-operator-csrf-0123456789"
    static let operatorName = "harness-operator"
    let fixture = SoftHSMFixture.shared
    let directory: String
    var configuration: ServerConfiguration

    init() throws {
        directory = NSTemporaryDirectory() + "cmk-server-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        for token in ["server", "server-b"] {
            try encoder.encode(fixture.profile(token)).write(to: URL(fileURLWithPath: "\(directory)/\(token).json"))
        }
        configuration = ServerConfiguration(
            database: "\(directory)/cmk.sqlite",
            keystores: [.init(id: "hsm", profile: "\(directory)/server.json"), .init(id: "other", profile: "\(directory)/server-b.json")],
            platform: .init(profile: "\(directory)/server.json"),
            probeIntervalSeconds: 0,
            audit: .init(database: "\(directory)/audit.sqlite", signingKey: "\(directory)/audit-signing.key", checkpointEvery: 50))
    }

    /// Runs `body` against the router in process.
    func test(_ body: @escaping @Sendable (any TestClientProtocol, Gateway) async throws -> Void) async throws {
        let pkcs11 = PKCS11Keystore()
        let audit = try await openAuditLog(configuration.audit, pkcs11: pkcs11, logger: Logger(label: "test"))
        let gateway = try await Gateway.start(configuration, audit: audit, pkcs11: pkcs11, logger: Logger(label: "test"))
        let openAPI = FileManager.default.contents(atPath: SoftHSMFixture.repositoryRoot + "/Docs/openapi.yaml").map { ByteBuffer(data: $0) }
        var assertions: IdentityAssertionVerifier?
        if let settings = configuration.sessions.identityAssertion { assertions = try await IdentityAssertionVerifier(settings) }
        var settings = Self.sessionSettings
        settings.identityAssertion = configuration.sessions.identityAssertion
        try await Self.provisionAdmin(gateway)
        let router = buildRouter(gateway: gateway, openAPI: openAPI, sessions: settings,
                                 assertions: assertions)
        let app = Application(router: router)
        do {
            try await app.test(.router) { client in try await body(client, gateway) }
        } catch {
            await gateway.shutdown(finalizingModules: false)
            throw error
        }
        await gateway.shutdown(finalizingModules: false)
    }

    /// As `test`, over a real loopback connection (for streaming responses); `body` gets the port.
    func testLive(_ body: @escaping @Sendable (any TestClientProtocol, Gateway, Int) async throws -> Void) async throws {
        let pkcs11 = PKCS11Keystore()
        let audit = try await openAuditLog(configuration.audit, pkcs11: pkcs11, logger: Logger(label: "test"))
        let gateway = try await Gateway.start(configuration, audit: audit, pkcs11: pkcs11, logger: Logger(label: "test"))
        try await Self.provisionAdmin(gateway)
        let router = buildRouter(gateway: gateway, openAPI: nil, sessions: Self.sessionSettings)
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        do {
            try await app.test(.live) { client in try await body(client, gateway, client.port!) }
        } catch {
            await gateway.shutdown(finalizingModules: false)
            throw error
        }
        await gateway.shutdown(finalizingModules: false)
    }

    /// The cheapest bcrypt cost, so that tests do not wait on it; lockout after 5 failures.
    static var sessionSettings: SessionSettings {
        var settings = SessionSettings()
        settings.bcryptCost = 4
        return settings
    }

    static var auth: HTTPFields {
        [.cookie: "\(SessionManager.cookieName)=\(sessionToken)", .init(SessionManager.csrfHeader)!: csrfToken, .contentType: "application/json"]
    }

    /// The harness's platform operator (node enrolment, IVK rotation), with a fresh second factor.
    static var operatorAuth: HTTPFields {
        [.cookie: "\(SessionManager.cookieName)=\(operatorSessionToken)", .init(SessionManager.csrfHeader)!: operatorCSRF,
         .contentType: "application/json"]
    }

    /// The harness's administrator and a session as a login makes it (fresh second factor).
    static func provisionAdmin(_ gateway: Gateway) async throws {
        let manager = SessionManager(registry: gateway.registry, platform: gateway.platform, audit: nil, settings: sessionSettings,
                                     logger: Logger(label: "test"))
        let created = try await manager.createAccount(username: adminName, password: "harness password 0123", role: .securityAdmin,
                                                      tenants: nil, createdBy: "test")
        _ = try await gateway.registry.createSession(tokenHash: SessionManager.hash(sessionToken), csrfHash: SessionManager.hash(csrfToken),
                                                     accountID: created.account.id, authMethod: "password+totp",
                                                     expiresAt: Date().addingTimeInterval(8 * 3600), clientAddress: nil)
        let operator_ = try await manager.createAccount(username: operatorName, password: "harness password 0123", role: .platformOperator,
                                                        tenants: nil, createdBy: "test")
        _ = try await gateway.registry.createSession(tokenHash: SessionManager.hash(operatorSessionToken), csrfHash: SessionManager.hash(operatorCSRF),
                                                     accountID: operator_.account.id, authMethod: "password+totp",
                                                     expiresAt: Date().addingTimeInterval(8 * 3600), clientAddress: nil)
    }

    static func body(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }
}

extension TestResponse {
    var text: String { String(buffer: body) }

    func json() throws -> [String: Any] {
        guard let object = try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any] else {
            throw SoftHSMFixture.FixtureError(message: "not a JSON object: \(text)")
        }
        return object
    }

    var errorCode: String? { ((try? json())?["error"] as? [String: Any])?["code"] as? String }
}
