import Foundation
import Testing
@testable import KSI
import TestSupport

/// The `cmk hsm` commands, run as a separate process against the `cli` token: output, JSON,
/// exit codes, and no secret in anything they print.
@Suite(.serialized) struct CLITests {
    let fixture = SoftHSMFixture.shared

    var cmk: String {
        get throws {
            let path = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("cmk").path
            guard FileManager.default.isExecutableFile(atPath: path) else {
                throw SoftHSMFixture.FixtureError(message: "\(path) is missing: build the cmk product first (Scripts/test does)")
            }
            return path
        }
    }

    func run(_ arguments: [String]) throws -> SoftHSMFixture.RunResult {
        let result = try SoftHSMFixture.run(try cmk, arguments, environment: ["SOFTHSM2_CONF": fixture.configPath])
        #expect(!result.output.contains(SoftHSMFixture.userPIN) && !result.error.contains(SoftHSMFixture.userPIN),
                "the PIN never appears in the CLI's output")
        return result
    }

    var uri: String { fixture.l1URI("cli").description }

    @Test func probeSucceedsWithHumanAndJSONOutput() throws {
        let human = try run(["hsm", "probe", uri])
        #expect(human.status == 0)
        #expect(human.output.contains("PASSED with CKM_AES_KEY_WRAP_PAD"))
        #expect(human.output.contains("ok   cleanup"))

        let json = try run(["hsm", "probe", uri, "--json"])
        #expect(json.status == 0)
        let report = try JSONDecoder().decode(ProbeReport.self, from: Data(json.output.utf8))
        #expect(report.passed && report.checks.count == 11)
    }

    @Test func probeWithAProfileFile() throws {
        let path = NSTemporaryDirectory() + "cli-profile-\(getpid()).json"
        let profile = fixture.profile("cli")
        let encoder = JSONEncoder()
        try encoder.encode(profile).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try run(["hsm", "probe", "pkcs11:token=cli;object=l1", "--profile", path])
        #expect(result.status == 0, "\(result.output) \(result.error)")
    }

    @Test func exitCodesTellTheCasesApart() throws {
        // Bad input: 64.
        let malformed = try run(["hsm", "probe", "pkcs11:token=a b"])
        #expect(malformed.status == 64)
        #expect(malformed.error.contains("malformed PKCS#11 URI"))
        #expect(try run(["hsm", "probe", "pkcs11:token=cli;object=l1?pin-value=1234&module-path=/x.so"]).status == 64)

        // Refused by the keystore: 65.
        let pinPath = NSTemporaryDirectory() + "cli-wrong-pin-\(getpid())"
        try Data("11111111".utf8).write(to: URL(fileURLWithPath: pinPath))
        defer { try? FileManager.default.removeItem(atPath: pinPath) }
        var wrongPIN = fixture.l1URI("cli")
        wrongPIN.pinSource = "file:\(pinPath)"
        let refused = try run(["hsm", "probe", wrongPIN.description])
        #expect(refused.status == 65)
        #expect(refused.output.contains("FAIL login"))
        #expect(try run(["hsm", "probe", fixture.l1URI("cli", key: "missing").description]).status == 65)

        // Keystore unavailable: 69.
        var noModule = fixture.l1URI("cli")
        noModule.modulePath = "/nonexistent/libpkcs11.so"
        let unavailable = try run(["hsm", "probe", noModule.description, "--json"])
        #expect(unavailable.status == 69)
        let body = try JSONSerialization.jsonObject(with: Data(unavailable.output.utf8)) as? [String: Any]
        let error = body?["error"] as? [String: Any]
        #expect(error?["code"] as? String == "unavailable")

        // The right PIN still works afterwards.
        #expect(try run(["hsm", "probe", uri]).status == 0)
    }

    @Test func tokensAndKeysAreListed() throws {
        let tokens = try run(["hsm", "tokens", "--module", SoftHSMFixture.modulePath, "--mechanisms"])
        #expect(tokens.status == 0)
        #expect(tokens.output.contains("\"cli\""))
        #expect(tokens.output.contains("CKM_AES_KEY_WRAP_PAD"))

        let keys = try run(["hsm", "keys", "cli", "--module", SoftHSMFixture.modulePath, "--pin-source", "file:\(fixture.pinFile("cli"))", "--json"])
        #expect(keys.status == 0, "\(keys.error)")
        let listed = try JSONDecoder().decode([KeyDescription].self, from: Data(keys.output.utf8))
        #expect(listed.contains { $0.label == "l1" && $0.usableAsL1 })

        let unknown = try run(["hsm", "keys", "nope", "--module", SoftHSMFixture.modulePath])
        #expect(unknown.status == 65)
    }

    @Test func modulesReportsEachModuleIndependently() throws {
        let broken = NSTemporaryDirectory() + "cli-broken-\(getpid()).json"
        try Data(#"{"name":"broken"}"#.utf8).write(to: URL(fileURLWithPath: broken))
        defer { try? FileManager.default.removeItem(atPath: broken) }
        let result = try run(["hsm", "modules", "--profile", broken, "--module", "/nonexistent/x.so",
                              "--module", SoftHSMFixture.modulePath, "--json"])
        #expect(result.status == 0, "one module loaded, so the command succeeds and reports the others")
        let rows = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [[String: Any]]
        #expect(rows?.count == 3)
        #expect(rows?.filter { $0["loaded"] as? Bool == true }.count == 1)

        let none = try run(["hsm", "modules", "--module", "/nonexistent/x.so"])
        #expect(none.status == 69)
    }
}

/// No PIN appears in errors, reports or descriptions produced by the library either.
@Suite(.serialized) struct SecretLeakTests {
    let fixture = SoftHSMFixture.shared

    @Test func errorsAndReportsNeverContainThePIN() async throws {
        let keystore = PKCS11Keystore()
        let token = try await keystore.token(for: fixture.l1URI("cli"))
        let report = await token.probe(.pkcs11(fixture.l1URI("cli")))
        let encoded = String(decoding: try JSONEncoder().encode(report), as: UTF8.self)
        #expect(!encoded.contains(SoftHSMFixture.userPIN))

        let wrongPath = NSTemporaryDirectory() + "leak-pin-\(getpid())"
        let wrongPIN = "Wrong-4242-Pin"
        try Data(wrongPIN.utf8).write(to: URL(fileURLWithPath: wrongPath))
        defer { try? FileManager.default.removeItem(atPath: wrongPath) }
        var uri = fixture.l1URI("cli")
        uri.pinSource = "file:\(wrongPath)"
        let failed = await (try await keystore.token(for: uri)).probe(.pkcs11(uri))
        let failedText = String(decoding: try JSONEncoder().encode(failed), as: UTF8.self) + String(describing: failed)
        #expect(!failedText.contains(wrongPIN))
        #expect(!String(describing: token.configuration).contains(SoftHSMFixture.userPIN))
    }
}
