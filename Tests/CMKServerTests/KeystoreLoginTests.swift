import Foundation
import KSI
import Testing
import TestSupport

/// `POST /api/v1/keystores/{keystore}/login` on the real `cmk serve`: a keystore whose PIN file
/// is wrong is `login_refused` and stays so (never retried by the gateway, even after the file
/// is corrected); the operator's request tries the PIN exactly once, is audited, answers
/// `keystore_refused` while the PIN is still wrong and the keystore's status once it is right.
/// The keystore's module is the fault-injecting shim over SoftHSM, used here only for its
/// call counts (no fault is injected): the tries are counted by the module itself.
@Suite(.serialized) struct KeystoreLoginTests: ChildProcessTests {
    let fixture = SoftHSMFixture.shared
    let faults = FaultModule.shared
    static let wrongPIN = "Wrong-PIN-4e1d77c0"

    @Test func operatorReLoginTriesThePINOncePerRequestWithoutARestart() async throws {
        let directory = faults.directory + "/relogin-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let pinFile = "\(directory)/fault.pin"
        try Data(Self.wrongPIN.utf8).write(to: URL(fileURLWithPath: pinFile))
        var profile = fixture.profile("fault", pinSource: "file:\(pinFile)")
        profile.module = faults.path
        try JSONEncoder().encode(profile).write(to: URL(fileURLWithPath: "\(directory)/fault-profile.json"))
        let control = "\(directory)/control", counts = "\(directory)/counts"
        try Data("# no faults: counts only\n".utf8).write(to: URL(fileURLWithPath: control))
        func logins() -> Int { faults.counts(at: counts)["C_Login"] ?? 0 }

        let server = try ChildServer(token: "logs", fixture: fixture, logLevel: "trace",
                                     environment: faults.childEnvironment(control: control, counts: counts),
                                     keystores: [#"{"id": "fault", "profile": "\#(directory)/fault-profile.json"}"#])
        defer { server.stopAndRemove() }
        try await waitUntilUp(server.base)
        try server.logIn()
        let operator_ = try server.person("ops", role: "platform-operator")
        func state() throws -> String? {
            ((try admin(server, "GET", "/api/v1/keystores/fault").json["status"]) as? [String: Any])?["state"] as? String
        }

        // The wrong PIN: refused at first use, tried once, and not again by later requests.
        #expect(try state() == "login_refused")
        let first = logins()
        #expect(first == 1, "one C_Login for the wrong PIN")
        #expect(try state() == "login_refused")
        #expect(logins() == 1)

        // Only a platform operator may ask; a security administrator is refused before any try.
        #expect(try admin(server, "POST", "/api/v1/keystores/fault/login").status == 403)
        #expect(logins() == 1)

        // Asked while the file is still wrong: one more try, refused clearly, audited.
        let refused = try call(operator_, server, "POST", "/api/v1/keystores/fault/login")
        #expect(refused.status == 422, "\(refused.body)")
        #expect((refused.json["error"] as? [String: Any])?["code"] as? String == "keystore_refused")
        #expect(logins() == 2, "exactly one C_Login for the request")
        #expect(try state() == "login_refused")

        // The PIN file unreadable: bad input, no attempt, nothing changes.
        try FileManager.default.removeItem(atPath: pinFile)
        let unreadable = try call(operator_, server, "POST", "/api/v1/keystores/fault/login")
        #expect(unreadable.status == 400, "\(unreadable.body)")
        #expect((unreadable.json["error"] as? [String: Any])?["code"] as? String == "invalid_input")
        #expect(logins() == 2)
        #expect(try state() == "login_refused")

        // Corrected: the gateway does not retry by itself (the operator decides when)...
        try Data(SoftHSMFixture.userPIN.utf8).write(to: URL(fileURLWithPath: pinFile))
        #expect(try state() == "login_refused")
        #expect(logins() == 2)
        // ...and the operator's request logs in, once, without a restart.
        let accepted = try call(operator_, server, "POST", "/api/v1/keystores/fault/login")
        #expect(accepted.status == 200, "\(accepted.body)")
        #expect(accepted.json["id"] as? String == "fault")
        #expect((accepted.json["status"] as? [String: Any])?["state"] as? String == "available")
        #expect(logins() == 3)
        #expect(try state() == "available")
        // Asked again while logged in: answered with the status, no login at all.
        #expect(try call(operator_, server, "POST", "/api/v1/keystores/fault/login").status == 200)
        #expect(logins() == 3)

        // Bad input changes nothing: an unknown keystore.
        #expect(try call(operator_, server, "POST", "/api/v1/keystores/nope/login").status == 404)

        // Audited: the refusal, the unreadable source and the two successes, by the operator.
        let audit = try admin(server, "GET", "/api/v1/audit?operation=keystore.login")
        let records = try #require(audit.json["items"] as? [[String: Any]], "\(audit.body)")
        #expect(records.count == 4, "\(audit.body)")
        #expect(records.allSatisfy { $0["keystore"] as? String == "fault" })
        #expect(records.compactMap { $0["outcome"] as? String }.sorted() == ["failure", "failure", "success", "success"])
        #expect(records.contains { ($0["error"] as? String) == "permission_denied" }, "the keystore's refusal: \(audit.body)")
        #expect(records.allSatisfy { "\($0["actor"] ?? "")".contains("ops") }, "by the operator: \(audit.body)")

        // Neither PIN appears in any response or log line (at trace level).
        kill(server.process.processIdentifier, SIGTERM)
        server.process.waitUntilExit()
        let everything = [refused.body, unreadable.body, accepted.body, audit.body].joined() + String(decoding: server.logs, as: UTF8.self)
        for pin in [Self.wrongPIN, SoftHSMFixture.userPIN] {
            #expect(!everything.contains(pin), "a PIN leaked")
        }
        #expect(server.logs.range(of: Data(Self.wrongPIN.utf8)) == nil && server.logs.range(of: Data(SoftHSMFixture.userPIN.utf8)) == nil)
    }
}
