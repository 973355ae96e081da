@testable import CMKServer
import ControlPlane
import Crypto
import Foundation
import Hummingbird
import HummingbirdTesting
import JWTKit
import Registry
import Testing

/// Gateway mode against a test JWKS: what Envoy's jwt_authn filter forwards.
@Suite(.serialized) struct IdentityAssertionTests {
    struct Claims: JWTPayload {
        var iss: IssuerClaim
        var sub: SubjectClaim
        var aud: AudienceClaim
        var exp: ExpirationClaim
        var amr: [String]?
        var auth_time: Int64?
        var cmk_role: String?
        var cmk_tenants: [String]?
        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    /// A key pair: the JWKS file the gateway trusts, and a signer for tokens.
    static func identityProvider(in directory: String) async throws -> (jwks: String, signer: JWTKeyCollection, stranger: JWTKeyCollection) {
        let key = ES256PrivateKey(), other = ES256PrivateKey()
        let parameters = try #require(key.publicKey.parameters)
        let jwks = #"{"keys":[{"kty":"EC","crv":"P-256","alg":"ES256","use":"sig","kid":"idp-1","x":"\#(parameters.x)","y":"\#(parameters.y)"}]}"#
        let path = "\(directory)/jwks.json"
        try Data(jwks.utf8).write(to: URL(fileURLWithPath: path))
        let signer = JWTKeyCollection(), stranger = JWTKeyCollection()
        await signer.add(ecdsa: key, kid: "idp-1")
        await stranger.add(ecdsa: other, kid: "idp-1")
        return (path, signer, stranger)
    }

    func claims(issuer: String = "https://idp.example", audience: String = "openkcm", expires: Date = Date().addingTimeInterval(300),
                amr: [String]? = ["pwd", "otp"], role: String? = "security_admin", tenants: [String]? = nil,
                authTime: Date? = Date()) -> Claims {
        Claims(iss: .init(value: issuer), sub: .init(value: "ana@example.com"), aud: .init(value: [audience]), exp: .init(value: expires),
               amr: amr, auth_time: authTime.map { Int64($0.timeIntervalSince1970) }, cmk_role: role, cmk_tenants: tenants)
    }

    @Test func onlyAValidAssertionWithMFAIsAccepted() async throws {
        var harness = try ServerHarness()
        let idp = try await Self.identityProvider(in: harness.directory)
        var settings = IdentityAssertionSettings(jwksFile: idp.jwks, issuer: "https://idp.example", audience: "openkcm")
        settings.disablePasswordLogin = true
        harness.configuration.sessions.identityAssertion = settings
        let good = try await idp.signer.sign(claims())
        let cases: [(String, String)] = [
            ("wrong issuer", try await idp.signer.sign(claims(issuer: "https://evil.example"))),
            ("wrong audience", try await idp.signer.sign(claims(audience: "someone-else"))),
            ("expired", try await idp.signer.sign(claims(expires: Date().addingTimeInterval(-60)))),
            ("bad signature", try await idp.stranger.sign(claims())),
            ("no MFA in amr", try await idp.signer.sign(claims(amr: ["pwd"]))),
            ("no amr", try await idp.signer.sign(claims(amr: nil))),
            ("no role", try await idp.signer.sign(claims(role: nil))),
            ("tampered", String(good.dropLast(3)) + (good.hasSuffix("AAA") ? "BBB" : "AAA")),
        ]
        try await harness.test { client, gateway in
            let me = try await client.execute(uri: "/api/v1/session", method: .get, headers: [.authorization: "Bearer \(good)"])
            #expect(me.status == .ok, "\(me.text)")
            let body = try me.json()
            #expect(body["username"] as? String == "ana@example.com" && body["role"] as? String == "security_admin")
            #expect((body["authMethod"] as? String)?.hasPrefix("gateway-jwt") == true)
            for (name, token) in cases {
                let refused = try await client.execute(uri: "/api/v1/tenants", method: .get, headers: [.authorization: "Bearer \(token)"])
                #expect(refused.status == .unauthorized, "\(name): \(refused.status)")
            }
            // Password login is switched off in this mode.
            let login = try await client.execute(uri: "/api/v1/session", method: .post, headers: [.contentType: "application/json"],
                                                 body: ServerHarness.body(#"{"username":"x","password":"y","totp":"1"}"#))
            #expect(login.status == .forbidden)
            // Revocation needs a recent auth_time; an older one is a step-up refusal.
            _ = try await gateway.registry.createTenant(id: "acme", name: "A")
            let stale = try await idp.signer.sign(claims(authTime: Date().addingTimeInterval(-600)))
            let refused = try await client.execute(uri: "/api/v1/tenants/acme/l1-links/x/revoke", method: .post, headers: [.authorization: "Bearer \(stale)"])
            #expect(refused.status == .forbidden && refused.text.contains("step_up_required"))
            let fresh = try await client.execute(uri: "/api/v1/tenants/acme/l1-links/x/revoke", method: .post, headers: [.authorization: "Bearer \(good)"])
            #expect(fresh.status == .notFound, "authorized, then no such link: \(fresh.text)")
            // A scoped assertion sees only its tenants.
            let scoped = try await idp.signer.sign(claims(tenants: ["globex"]))
            #expect(try await client.execute(uri: "/api/v1/tenants/acme", method: .get, headers: [.authorization: "Bearer \(scoped)"]).status == .notFound)
        }
    }
}
