import Audit
import AuditFormat
import CMKCore
@testable import CMKServer
import ControlPlane
import Foundation
import Hummingbird
import KSI
import Registry
import TestSupport
import Testing

/// The one error model (Decisions D92): codes from one list, kinds mapped to HTTP in one place,
/// lower layers translated once.
@Suite struct ErrorModelTests {
    @Test func everyCodeTheAPIDocumentsIsOneOfTheGatewaysCodes() throws {
        let document = try String(contentsOfFile: SoftHSMFixture.repositoryRoot + "/Docs/openapi.yaml", encoding: .utf8)
        let schema = try #require(document.range(of: "    ErrorCode:").map { document[$0.upperBound...] })
        let list = try #require(schema.range(of: "enum: [").map { schema[$0.upperBound...] })
        let end = try #require(list.firstIndex(of: "]"))
        let documented = list[..<end]
            .split(separator: ",").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        #expect(documented.count > 40)
        for code in documented { #expect(ErrorCode(rawValue: code) != nil, "\(code) is documented but the gateway has no such code") }
    }

    @Test func eachKindHasOneHTTPStatusAndAnErrorMayNameAnotherKind() {
        #expect(APIError(DomainError(.keyRevoked, "")).status.code == 409)
        #expect(APIError(DomainError(.keyShredded, "")).status.code == 410)
        #expect(APIError(DomainError(.stepUpRequired, "")).status.code == 403)
        #expect(APIError(DomainError(.locked, "")).status.code == 429)
        #expect(APIError(DomainError(.keystoreUnavailable, "")).status.code == 503)
        #expect(APIError(DomainError(.rekeyRefused, "")).status.code == 409)
        #expect(APIError(DomainError(.rekeyRefused, "", kind: .unprocessable)).status.code == 422)
        #expect(APIError(DomainError(.invalidAck, "", kind: .unauthenticated)).status.code == 401)
        #expect(APIError(DomainError(.invalidAck, "")).code == "invalid_ack")
    }

    @Test func lowerLayersAreTranslatedOnce() {
        #expect(DomainError.from(RegistryError(.notFound, "no tenant x")) == DomainError(.notFound, ""))
        #expect(DomainError.from(RegistryError(.preconditionFailed, "stale")) == DomainError(.preconditionFailed, ""))
        #expect(DomainError.from(KeystoreError(.notFound, "no key")) == DomainError(.keystoreNotFound, ""))
        #expect(DomainError.from(KeystoreError(.permissionDenied, "refused")) == DomainError(.keystoreRefused, ""))
        #expect(DomainError.from(KeystoreError(.unavailable, "down")) == DomainError(.keystoreUnavailable, ""))
        #expect(DomainError.from(KeystoreError(.internal, "bug")) == nil, "unexpected errors stay opaque")
        #expect(DomainError.from(AuditError(.unavailable, "disk full")) == DomainError(.auditUnavailable, ""))
        #expect(DomainError.from(CocoaError(.fileNoSuchFile)) == nil)
        #expect(DomainError(.conflict, "a") != DomainError(.conflict, "a", kind: .unprocessable), "the kind is part of the error")
    }
}
