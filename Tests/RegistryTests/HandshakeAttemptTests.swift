import Foundation
import Testing
@testable import Registry

@Suite struct HandshakeAttemptTests {
    func attempt(_ tenant: String, at seconds: TimeInterval, passed: Bool = false) -> HandshakeAttempt {
        HandshakeAttempt(tenantID: tenant, provider: "pkcs11", keystoreID: "softhsm", keyReference: Fixture.keyReference,
                         passed: passed, failureCode: passed ? nil : "permission_denied",
                         failureReason: passed ? nil : "wrong PIN", at: Fixture.probedAt.addingTimeInterval(seconds))
    }

    @Test func attemptsComeBackNewestFirstWithinTheTenant() async throws {
        let registry = try await makeRegistry()
        _ = try await registry.createTenant(id: "acme", name: "Acme")
        _ = try await registry.createTenant(id: "other", name: "Other")
        let attempts = [attempt("acme", at: 0), attempt("acme", at: 20, passed: true), attempt("acme", at: 10)]
        for attempt in attempts { try await registry.recordAttempt(attempt) }
        try await registry.recordAttempt(attempt("other", at: 30))

        #expect(try await registry.attempts(tenantID: "acme", limit: 10) == [attempts[1], attempts[2], attempts[0]])
        #expect(try await registry.attempts(tenantID: "acme", limit: 1) == [attempts[1]])
        #expect(try await registry.attempts(tenantID: "other", limit: 10).count == 1)
    }

    @Test func attemptsInTheSameMillisecondKeepInsertionOrder() async throws {
        let registry = try await makeRegistry()
        _ = try await registry.createTenant(id: "acme", name: "Acme")
        let first = attempt("acme", at: 0)
        let second = attempt("acme", at: 0)
        try await registry.recordAttempt(first)
        try await registry.recordAttempt(second)
        #expect(try await registry.attempts(tenantID: "acme", limit: 10).map(\.id) == [second.id, first.id])
    }

    @Test func attemptForAMissingTenantIsNotFoundAndDuplicateIsAConflict() async throws {
        let registry = try await makeRegistry()
        await #expect(throws: RegistryError(.notFound, "")) { try await registry.recordAttempt(attempt("ghost", at: 0)) }
        _ = try await registry.createTenant(id: "acme", name: "Acme")
        let once = attempt("acme", at: 0)
        try await registry.recordAttempt(once)
        await #expect(throws: RegistryError(.conflict, "")) { try await registry.recordAttempt(once) }
        await #expect(throws: RegistryError(.notFound, "")) { try await registry.attempts(tenantID: "ghost", limit: 5) }
    }
}
