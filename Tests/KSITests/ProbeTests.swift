import Foundation
import Testing
@testable import KSI
import PKCS11
import TestSupport

/// The noop handshake probe against the `probe` token. After every probe, passed or failed,
/// the token holds exactly the objects it held before.
@Suite(.serialized) struct ProbeTests {
    let fixture = SoftHSMFixture.shared
    let keystore = PKCS11Keystore()

    /// An AES key on the `probe` token that may encrypt but not wrap, made with the project's
    /// own PKCS#11 layer (pkcs11-tool cannot make a secret key without CKA_WRAP).
    func ensureNoWrapKey() async throws {
        let pool = try fixture.pool("probe", maxSessions: 1)
        try await pool.withSession { session in
            if try session.findObjects([.label("nowrap")]).isEmpty {
                _ = try session.generateAESKey(bits: 256, token: true, label: "nowrap", id: [0x02],
                                               usages: [.encrypt(true), .decrypt(true), .wrap(false), .unwrap(false)])
            }
            if try session.findObjects([.label("rsa-root")]).isEmpty {
                _ = try session.generateRSAKeyPair(bits: 1024, publicTemplate: [.token(true), .label("rsa-root")],
                                                   privateTemplate: [.token(true), .private(true), .label("rsa-root")])
            }
        }
        await pool.shutdown()
    }

    func probe(_ uri: PKCS11URI) async throws -> ProbeReport {
        let token = try await keystore.token(for: uri)
        return await token.probe(.pkcs11(uri))
    }

    func probeLeavesTokenUnchanged(_ uri: PKCS11URI) async throws -> ProbeReport {
        let before = try await fixture.objectList("probe")
        let report = try await probe(uri)
        let after = try await fixture.objectList("probe")
        #expect(before == after, "the probe left the token's objects unchanged")
        return report
    }

    @Test func probePassesAndNamesEveryCheck() async throws {
        let report = try await probeLeavesTokenUnchanged(fixture.l1URI("probe"))
        #expect(report.passed)
        #expect(report.failure == nil)
        #expect(report.mechanism == "CKM_AES_KEY_WRAP_PAD")
        #expect(report.checks.map(\.name) == ["token", "login", "key_found", "key_type", "key_usage", "mechanism",
                                              "test_key", "wrap", "unwrap", "compare", "cleanup"])
        #expect(report.checks.allSatisfy { $0.passed })
        #expect(report.latencyMilliseconds > 0)
    }

    @Test func keyWithoutWrapFailsWithAnActionableReason() async throws {
        try await ensureNoWrapKey()
        let report = try await probeLeavesTokenUnchanged(fixture.l1URI("probe", key: "nowrap"))
        #expect(!report.passed)
        #expect(report.failure?.code == .permissionDenied)
        #expect(report.checks.last?.name == "key_usage")
        #expect(report.failure?.reason.contains("CKA_WRAP") == true)
    }

    @Test func keyOfTheWrongKindIsExplained() async throws {
        try await ensureNoWrapKey()
        let report = try await probeLeavesTokenUnchanged(fixture.l1URI("probe", key: "rsa-root"))
        #expect(!report.passed)
        #expect(report.failure?.code == .notFound)
        #expect(report.failure?.reason.contains("must be a secret key") == true)
    }

    @Test func missingKeyIsNotFound() async throws {
        let report = try await probeLeavesTokenUnchanged(fixture.l1URI("probe", key: "no-such-key"))
        #expect(!report.passed)
        #expect(report.failure?.code == .notFound)
        #expect(report.checks.last?.name == "key_found")
        #expect(report.failure?.reason.contains("cmk hsm keys probe") == true)
    }

    @Test func missingTokenIsNotFound() async throws {
        var uri = fixture.l1URI("probe")
        uri.token = "no-such-token"
        let report = try await probe(uri)
        #expect(!report.passed)
        #expect(report.failure?.code == .notFound)
        #expect(report.checks.map(\.name) == ["token"])
        #expect(report.failure?.reason.contains("\"probe\"") == true, "names the tokens that do exist")
    }

    @Test func wrongPINFailsAtLoginAndTheRightPINStillWorks() async throws {
        let pinPath = NSTemporaryDirectory() + "probe-wrong-pin-\(getpid())"
        try Data("99999999".utf8).write(to: URL(fileURLWithPath: pinPath))
        defer { try? FileManager.default.removeItem(atPath: pinPath) }
        var uri = fixture.l1URI("probe")
        uri.pinSource = "file:\(pinPath)"
        let report = try await probe(uri)
        #expect(!report.passed)
        #expect(report.failure?.code == .permissionDenied)
        #expect(report.checks.map(\.name) == ["token", "login"])
        #expect(report.failure?.reason.contains("wrong PIN") == true)
        #expect(report.failure?.detail?.contains("CKR_PIN_INCORRECT") == true)

        let good = try await probe(fixture.l1URI("probe"))
        #expect(good.passed, "the token was not locked by the failed attempt")
    }

    @Test func missingModuleIsUnavailable() async {
        var uri = fixture.l1URI("probe")
        uri.modulePath = "/nonexistent/libvendor.so"
        let error = await #expect(throws: KeystoreError(.unavailable, "")) { try await keystore.token(for: uri) }
        #expect(error?.reason.contains("/nonexistent/libvendor.so") == true)
    }

    @Test func fileThatIsNotAModuleIsUnavailable() async throws {
        let path = NSTemporaryDirectory() + "fake-module-\(getpid()).so"
        try Data("#!/bin/sh\n".utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        var uri = fixture.l1URI("probe")
        uri.modulePath = path
        let error = await #expect(throws: KeystoreError(.unavailable, "")) { try await keystore.token(for: uri) }
        #expect(error?.reason.contains("not a PKCS#11 module") == true)
    }

    @Test func tokenRequiringLoginWithoutPINSourceFailsAtLogin() async throws {
        var uri = fixture.l1URI("probe")
        uri.pinSource = nil
        let report = try await probe(uri)
        #expect(!report.passed)
        #expect(report.checks.map(\.name) == ["token", "login"])
        #expect(report.failure?.code == .invalidInput)
        #expect(report.failure?.reason.contains("pin-source") == true)
    }

    @Test func uriMayNotContradictTheProfileOrTheModule() async throws {
        let profile = fixture.profile("probe")
        var uri = PKCS11URI()
        uri.token = "probe"
        uri.object = "l1"
        uri.pinSource = "env:SOMETHING_ELSE"
        await #expect(throws: KeystoreError(.invalidInput, "")) { try await keystore.token(for: uri, profile: profile) }
        uri.pinSource = nil
        uri.token = "pool"
        await #expect(throws: KeystoreError(.invalidInput, "")) { try await keystore.token(for: uri, profile: profile) }

        var library = fixture.l1URI("probe")
        library.libraryManufacturer = "Another Vendor"
        let error = await #expect(throws: KeystoreError(.invalidInput, "")) { try await keystore.token(for: library) }
        #expect(error?.reason.contains("SoftHSM") == true)
        library.libraryManufacturer = "SoftHSM"
        await #expect(throws: Never.self) { try await keystore.token(for: library) }
    }

    @Test func probeWithAProfile() async throws {
        let token = try await keystore.token(profile: fixture.profile("probe"))
        var uri = PKCS11URI()
        uri.token = "probe"
        uri.object = "l1"
        let report = await token.probe(.pkcs11(uri))
        #expect(report.passed)
        let status = await token.status()
        #expect(status.state == .available)
        #expect(status.wrapMechanisms == ["CKM_AES_KEY_WRAP_PAD", "CKM_AES_KEY_WRAP"])

        var other = uri
        other.token = "pool"
        let mismatch = await token.probe(.pkcs11(other))
        #expect(mismatch.failure?.code == .invalidInput)
    }
}
