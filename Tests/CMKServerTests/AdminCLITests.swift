@testable import CMKServer
import ControlPlane
import Foundation
import TestSupport
import Testing

/// `cmk admin create` and `cmk admin token` on a real gateway's configuration, then a login
/// with the printed TOTP secret against the running `cmk serve`.
@Suite(.serialized) struct AdminCLITests {
    let fixture = SoftHSMFixture.shared

    func run(_ arguments: [String], environment: [String: String] = [:]) throws -> SoftHSMFixture.RunResult {
        try SoftHSMFixture.run(try builtProduct("cmk"), arguments, environment: environment.merging(["SOFTHSM2_CONF": fixture.configPath]) { $1 })
    }

    @Test func theFirstAdministratorLogsInWithThePrintedSecret() async throws {
        let server = try ChildServer(token: "orbital", fixture: fixture, logLevel: "info")
        defer { server.stopAndRemove() }
        // The server first (it makes the IVK), then the command line beside it.
        try await waitUntil("cmk serve to answer /healthz", every: .milliseconds(100)) {
            try SoftHSMFixture.run("/usr/bin/env", ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "\(server.base)/healthz"]).output == "200"
        }
        try Data("a long enough passphrase".utf8).write(to: URL(fileURLWithPath: "\(server.directory)/password"))
        let created = try run(["admin", "create", "--username", "ana", "--password-file", "\(server.directory)/password",
                               "--config", "\(server.directory)/cmk.json"])
        try #require(created.status == 0, "\(created.error)")
        let secretLine = try #require(created.output.split(separator: "\n").first { $0.hasPrefix("TOTP secret") })
        let secret = try #require(Base32.decode(String(secretLine.split(separator: " ").last!)))
        #expect(created.output.contains("otpauth://totp/OpenKCM:ana?secret="))
        // The same name again is refused; so is a short password.
        #expect(try run(["admin", "create", "--username", "ana", "--password-file", "\(server.directory)/password",
                         "--config", "\(server.directory)/cmk.json"]).status == 65)
        #expect(try run(["admin", "create", "--username", "bob", "--config", "\(server.directory)/cmk.json"],
                        environment: ["CMK_ADMIN_PASSWORD": "short"]).status == 64)
        let token = try run(["admin", "token", "--name", "ci", "--role", "auditor", "--config", "\(server.directory)/cmk.json"])
        try #require(token.status == 0 && token.output.hasPrefix("okat_"), "\(token.error)")

        let totp = TOTP(), code = totp.code(secret: secret, step: totp.step(at: Date()))
        let login = try SoftHSMFixture.run("/usr/bin/env", [
            "curl", "-s", "-i", "-H", "Content-Type: application/json",
            "-d", #"{"username":"ana","password":"a long enough passphrase","totp":"\#(code)"}"#, "\(server.base)/api/v1/session"])
        #expect(login.output.contains("HTTP/1.1 201"), "\(login.output)")
        #expect(login.output.lowercased().contains("set-cookie: cmk_session=okas_"))
        let listed = try SoftHSMFixture.run("/usr/bin/env", ["curl", "-s", "-H", "Authorization: Bearer \(token.output.trimmingCharacters(in: .whitespacesAndNewlines))",
                                                             "\(server.base)/api/v1/tenants"])
        #expect(listed.output.contains("\"items\""), "\(listed.output)")
        // Neither the password nor the TOTP secret reached the server's log.
        let logs = String(decoding: server.logs, as: UTF8.self)
        #expect(!logs.contains("a long enough passphrase") && !logs.contains(String(secretLine.split(separator: " ").last!)))
    }
}
