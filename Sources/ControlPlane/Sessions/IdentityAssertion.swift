import CMKCore
package import Foundation
package import JWTKit
import Registry

/// Gateway mode (`sessions.identityAssertion`): behind Envoy (or another gateway) that has
/// already authenticated the person with MFA, the request carries a JWT that the gateway
/// forwarded; it is verified again here against the configured JWKS, issuer and audience,
/// and must show multi-factor authentication in `amr` (RFC 8176).
public struct IdentityAssertionSettings: Codable, Sendable, Equatable {
    /// A JWKS file (the gateway's identity provider's public keys).
    public var jwksFile: String
    public var issuer: String
    public var audience: String
    /// `amr` values that prove more than one factor; at least one must be present.
    public var mfaMethods: [String] = ["mfa", "otp", "hwk", "swk", "sms", "face", "fpt"]
    /// When true, `POST /api/v1/session` (password + TOTP) is refused: people come through the gateway.
    public var disablePasswordLogin: Bool = false

    public init(jwksFile: String, issuer: String, audience: String) {
        self.jwksFile = jwksFile
        self.issuer = issuer
        self.audience = audience
    }

    package enum CodingKeys: String, CodingKey { case jwksFile, issuer, audience, mfaMethods, disablePasswordLogin }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        jwksFile = try c.decode(String.self, forKey: .jwksFile)
        issuer = try c.decode(String.self, forKey: .issuer)
        audience = try c.decode(String.self, forKey: .audience)
        mfaMethods = try c.decodeIfPresent([String].self, forKey: .mfaMethods) ?? ["mfa", "otp", "hwk", "swk", "sms", "face", "fpt"]
        disablePasswordLogin = try c.decodeIfPresent(Bool.self, forKey: .disablePasswordLogin) ?? false
    }
}

/// The claims read from an assertion. `cmk_role` (`security_admin` or `auditor`) and
/// `cmk_tenants` (optional list) carry the authorization; `preferred_username` (else `sub`)
/// names the person; `auth_time` within five minutes counts as a fresh second factor.
package struct AssertionClaims: JWTPayload {
    package var iss: IssuerClaim
    package var sub: SubjectClaim
    package var aud: AudienceClaim
    package var exp: ExpirationClaim
    package var nbf: NotBeforeClaim?
    package var jti: IDClaim?
    package var amr: [String]?
    package var auth_time: Int64?
    package var preferred_username: String?
    package var cmk_role: String?
    package var cmk_tenants: [String]?

    package func verify(using algorithm: some JWTAlgorithm) async throws {
        try exp.verifyNotExpired()
        try nbf?.verifyNotBefore()
    }
}

/// Verifies assertions with the configured keys.
public final class IdentityAssertionVerifier: Sendable {
    package let settings: IdentityAssertionSettings
    private let keys: JWTKeyCollection

    public init(_ settings: IdentityAssertionSettings) async throws {
        guard let json = try? String(contentsOfFile: settings.jwksFile, encoding: .utf8) else {
            throw ConfigurationError("cannot read the JWKS file \(settings.jwksFile)")
        }
        let keys = JWTKeyCollection()
        do {
            try await keys.add(jwksJSON: json)
        } catch {
            throw ConfigurationError("\(settings.jwksFile) is not a JWKS the gateway can use: \(error)")
        }
        self.settings = settings
        self.keys = keys
    }

    package static func looksLikeJWT(_ text: String) -> Bool { text.split(separator: ".", omittingEmptySubsequences: false).count == 3 && text.hasPrefix("ey") }

    package func principal(_ token: String, now: Date) async throws -> Principal {
        let claims: AssertionClaims
        do {
            claims = try await keys.verify(token, as: AssertionClaims.self)
        } catch {
            throw DomainError(.sessionExpired, "the identity assertion does not verify (signature, expiry)")
        }
        guard claims.iss.value == settings.issuer else {
            throw DomainError(.sessionExpired, "the identity assertion is from another issuer")
        }
        guard claims.aud.value.contains(settings.audience) else {
            throw DomainError(.sessionExpired, "the identity assertion is for another audience")
        }
        guard let amr = claims.amr, !Set(amr).isDisjoint(with: settings.mfaMethods) else {
            throw DomainError(.sessionExpired, "the identity assertion does not show multi-factor authentication (amr)")
        }
        guard let role = claims.cmk_role.flatMap(AdminRole.init(rawValue:)) else {
            throw DomainError(.sessionExpired, "the identity assertion carries no cmk_role")
        }
        let authTime = claims.auth_time.map { Date(timeIntervalSince1970: TimeInterval($0)) }
        return Principal(kind: .assertion(id: claims.jti?.value ?? "", authTime: authTime), name: claims.preferred_username ?? claims.sub.value,
                         role: role, tenants: claims.cmk_tenants, authMethod: "gateway-jwt+" + amr.sorted().joined(separator: "+"))
    }
}
