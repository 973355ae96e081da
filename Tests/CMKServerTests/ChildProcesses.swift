@testable import CMKServer
import ControlPlane
import Foundation
import TestSupport
import Testing

/// The path of a product built next to the test bundle.
func builtProduct(_ name: String) throws -> String {
    let path = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(name).path
    guard FileManager.default.isExecutableFile(atPath: path) else {
        throw SoftHSMFixture.FixtureError(message: "build the \(name) product first")
    }
    return path
}

/// A child process with its output captured in files; `start` may be called again after it ended.
final class ChildProcess: @unchecked Sendable {
    let executable: String
    let arguments: [String]
    let logPath: String
    private(set) var process = Process()
    var environment: [String: String]

    init(executable: String, arguments: [String], logPath: String, environment: [String: String]) {
        self.executable = executable
        self.arguments = arguments
        self.logPath = logPath
        self.environment = environment
    }

    func start() throws {
        if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        try log.seekToEnd()
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = log
        process.standardError = log
        try process.run()
    }

    var isRunning: Bool { process.isRunning }

    /// Sends `signal` and waits (up to 10 s) for the process to end.
    func stop(_ signal: Int32 = SIGTERM) {
        guard process.isRunning else { return }
        kill(process.processIdentifier, signal)
        try? blockUntil("the child to exit after signal \(signal)", timeout: .seconds(10)) { !process.isRunning }
        if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
    }

    var log: String { (FileManager.default.contents(atPath: logPath)).map { String(decoding: $0, as: UTF8.self) } ?? "" }
}

/// `cmk serve` in a child process on `token`, in its own directory; it can be stopped and
/// started again on the same registry, audit log and port.
struct ChildServer {
    let directory: String
    let base: String
    let port: Int
    let child: ChildProcess
    let fixture: SoftHSMFixture
    /// The administrator's session, once `logIn()` ran.
    final class Credentials: @unchecked Sendable {
        var cookie = ""
        var csrf = ""
        var totpSecret = ""
        var operatorToken = ""
        /// Applications' credentials for nodes, by tenant.
        var appCredentials: [String: String] = [:]
    }
    let credentials = Credentials()
    static let adminPassword = "child admin passphrase 0123"

    /// HTTPS for the child: its certificate files, the CA curl trusts, the host name it is
    /// called by (resolved to 127.0.0.1 by curl).
    struct TLS {
        var certificate: String
        var key: String
        var ca: String
        var host = "localhost"
        var nodeClientCA: String?
        var reloadIntervalSeconds = 3600
    }
    /// What every curl call to this server needs (the CA, the name's address); empty for HTTP.
    let curlOptions: [String]

    /// `keystores` adds JSON keystore entries (cloud keystores) after `hsm`.
    /// `extraConfiguration`: more top-level members of cmk.json (`"lifecycle": {…}`).
    /// The port is one the kernel says is free; if the server loses it to another process
    /// before it binds, it is started again on another (`LoopbackPort.start`).
    /// `database`: the registry (a SQLite file in the server's directory by default, or a
    /// PostgreSQL URL several servers share).
    init(token: String, fixture: SoftHSMFixture, logLevel: String, leaseSeconds: Int = 30, environment: [String: String] = [:],
         keystores: [String] = [], extraConfiguration: String? = nil, probeIntervalSeconds: Int = 0, tls: TLS? = nil,
         database: String = "cmk.sqlite") throws {
        let cmk = try builtProduct("cmk")
        let directory = NSTemporaryDirectory() + "cmk-child-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        self.directory = directory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try JSONEncoder().encode(fixture.profile(token)).write(to: URL(fileURLWithPath: "\(directory)/profile.json"))
        self.fixture = fixture
        let logPath = "\(directory)/server.log"
        let environment = environment.merging(["SOFTHSM2_CONF": fixture.configPath]) { $1 }
        var started: (child: ChildProcess, base: String, curlOptions: [String])?
        let (chosen, _) = try LoopbackPort.start("cmk serve", logPath: logPath) { port in
            var extra = extraConfiguration.map { [$0] } ?? []
            let base: String, curlOptions: [String]
            if let tls {
                base = "https://\(tls.host):\(port)"
                curlOptions = ["--cacert", tls.ca, "--resolve", "\(tls.host):\(port):127.0.0.1"]
                extra.append(#""tls": {"certificate": "\#(tls.certificate)", "privateKey": "\#(tls.key)", "reloadIntervalSeconds": \#(tls.reloadIntervalSeconds)"#
                             + (tls.nodeClientCA.map { #", "nodeClientCA": "\#($0)""# } ?? "") + "}")
            } else {
                base = "http://127.0.0.1:\(port)"
                curlOptions = []
            }
            let config = """
            {"port": \(port), "database": "\(database)", "keystores": [{"id": "hsm", "profile": "profile.json"}\(keystores.map { ", " + $0 }.joined())],
             "platform": {"profile": "profile.json"}, "probeIntervalSeconds": \(probeIntervalSeconds), "logLevel": "\(logLevel)",
             "leaseSeconds": \(leaseSeconds)\(extra.map { ", " + $0 }.joined())}
            """
            try Data(config.utf8).write(to: URL(fileURLWithPath: "\(directory)/cmk.json"))
            let child = ChildProcess(executable: cmk, arguments: ["serve", "--config", "\(directory)/cmk.json"], logPath: logPath,
                                     environment: environment)
            try child.start()
            started = (child, base, curlOptions)
            return child.process
        }
        port = chosen
        (child, base, curlOptions) = started!
    }

    var process: Process { child.process }

    /// Kills the server and removes its directory (registry, audit log, node data, logs).
    func stopAndRemove() {
        child.stop(SIGKILL)
        try? FileManager.default.removeItem(atPath: directory)
    }
    var logs: Data { FileManager.default.contents(atPath: child.logPath) ?? Data() }
    /// curl arguments for an administrator's request: the session cookie and CSRF header.
    var auth: [String] {
        curlOptions + ["-H", "Cookie: cmk_session=\(credentials.cookie)", "-H", "X-CSRF-Token: \(credentials.csrf)", "-H", "Content-Type: application/json"]
    }

    func cmk(_ arguments: [String]) throws -> SoftHSMFixture.RunResult {
        try SoftHSMFixture.run(try builtProduct("cmk"), arguments, environment: ["SOFTHSM2_CONF": fixture.configPath])
    }

    /// Makes the administrator `admin` with `cmk admin create` (once); its TOTP secret is kept
    /// in `credentials`.
    func createAdmin() throws {
        if credentials.totpSecret.isEmpty {
            try Data(Self.adminPassword.utf8).write(to: URL(fileURLWithPath: "\(directory)/admin-password"))
            let created = try cmk(["admin", "create", "--username", "admin", "--password-file", "\(directory)/admin-password",
                                   "--config", "\(directory)/cmk.json"])
            guard created.status == 0, let line = created.output.split(separator: "\n").first(where: { $0.hasPrefix("TOTP secret") }) else {
                throw SoftHSMFixture.FixtureError(message: "cmk admin create: \(created.error)")
            }
            credentials.totpSecret = String(line.split(separator: " ").last!)
        }
    }

    /// Makes the administrator (once) and logs in with password and the current TOTP code;
    /// the server must be up.
    func logIn() throws {
        try createAdmin()
        let totp = TOTP(), secret = Base32.decode(credentials.totpSecret) ?? []
        // A step not used before by this account (steps only move forward).
        let code = totp.code(secret: secret, step: totp.step(at: Date()) + (credentials.cookie.isEmpty ? 0 : 1))
        let login = try SoftHSMFixture.run("/usr/bin/env", [
            "curl", "-s", "-D", "-", "--max-time", "20", "-H", "Content-Type: application/json"] + curlOptions + [
            "-d", #"{"username":"admin","password":"\#(Self.adminPassword)","totp":"\#(code)"}"#, "\(base)/api/v1/session"])
        guard let cookieLine = login.output.split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("set-cookie: cmk_session=") }),
              let body = login.output.components(separatedBy: "\r\n\r\n").last,
              let json = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any], let csrf = json["csrfToken"] as? String else {
            throw SoftHSMFixture.FixtureError(message: "login failed: \(login.output)")
        }
        credentials.cookie = String(cookieLine.dropFirst("set-cookie: cmk_session=".count).split(separator: ";")[0])
        credentials.csrf = csrf
    }

    /// Another person, made with `cmk admin create` and logged in (a fresh second factor).
    func person(_ username: String, role: String = "security-admin") throws -> Person {
        let passwordFile = "\(directory)/\(username)-password"
        try Data(Self.adminPassword.utf8).write(to: URL(fileURLWithPath: passwordFile))
        let created = try cmk(["admin", "create", "--username", username, "--password-file", passwordFile, "--role", role,
                               "--config", "\(directory)/cmk.json"])
        guard created.status == 0, let line = created.output.split(separator: "\n").first(where: { $0.hasPrefix("TOTP secret") }) else {
            throw SoftHSMFixture.FixtureError(message: "cmk admin create \(username): \(created.error)")
        }
        let person = Person(username: username, secret: Base32.decode(String(line.split(separator: " ").last!)) ?? [])
        try person.logIn(base, curlOptions: curlOptions)
        return person
    }

    /// An application's credential for `tenant` on nodes, issued once through the API by the
    /// logged-in administrator.
    func appCredential(for tenant: String) throws -> String {
        if let known = credentials.appCredentials[tenant] { return known }
        let issued = try SoftHSMFixture.run("/usr/bin/env", ["curl", "-s", "--max-time", "20"] + auth +
                                            ["-d", #"{"name":"tests-\#(tenant)","tenants":["\#(tenant)"]}"#, "\(base)/api/v1/app-credentials"])
        guard let json = try? JSONSerialization.jsonObject(with: Data(issued.output.utf8)) as? [String: Any],
              let credential = json["credential"] as? String else {
            throw SoftHSMFixture.FixtureError(message: "app credential for \(tenant): \(issued.output)")
        }
        credentials.appCredentials[tenant] = credential
        return credential
    }

    /// A platform operator's automation token (node enrolment), made once with `cmk admin token`.
    func operatorToken() throws -> String {
        if credentials.operatorToken.isEmpty {
            let issued = try cmk(["admin", "token", "--name", "operations", "--role", "platform-operator", "--config", "\(directory)/cmk.json"])
            guard issued.status == 0 else { throw SoftHSMFixture.FixtureError(message: "cmk admin token: \(issued.error)") }
            credentials.operatorToken = issued.output.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return credentials.operatorToken
    }

    /// An automation token from `cmk admin token`.
    func automationToken(role: String = "security-admin") throws -> String {
        let issued = try cmk(["admin", "token", "--name", "tests", "--role", role, "--config", "\(directory)/cmk.json"])
        guard issued.status == 0 else { throw SoftHSMFixture.FixtureError(message: "cmk admin token: \(issued.error)") }
        return issued.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// A person logged in to a child server: the session cookie, the CSRF token, the TOTP secret.
final class Person: @unchecked Sendable {
    let username: String
    let secret: [UInt8]
    var cookie = ""
    var csrf = ""
    var curlOptions: [String] = []
    private var lastStep: Int64 = 0

    init(username: String, secret: [UInt8]) {
        self.username = username
        self.secret = secret
    }

    /// A code of a step this account has not used yet (steps only move forward).
    func nextCode() -> String {
        let totp = TOTP()
        let step = max(totp.step(at: Date()), lastStep + 1)
        lastStep = step
        return totp.code(secret: secret, step: step)
    }

    func logIn(_ base: String, curlOptions: [String] = []) throws {
        self.curlOptions = curlOptions
        let login = try SoftHSMFixture.run("/usr/bin/env", [
            "curl", "-s", "-D", "-", "--max-time", "20", "-H", "Content-Type: application/json"] + curlOptions + [
            "-d", #"{"username":"\#(username)","password":"\#(ChildServer.adminPassword)","totp":"\#(nextCode())"}"#, "\(base)/api/v1/session"])
        guard let cookieLine = login.output.split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("set-cookie: cmk_session=") }),
              let body = login.output.components(separatedBy: "\r\n\r\n").last,
              let json = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any], let csrf = json["csrfToken"] as? String else {
            throw SoftHSMFixture.FixtureError(message: "login of \(username) failed: \(login.output)")
        }
        cookie = String(cookieLine.dropFirst("set-cookie: cmk_session=".count).split(separator: ";")[0])
        self.csrf = csrf
    }

    var auth: [String] {
        curlOptions + ["-H", "Cookie: cmk_session=\(cookie)", "-H", "X-CSRF-Token: \(csrf)", "-H", "Content-Type: application/json"]
    }
}

/// `cmk node` in a child process, with its data directory and application API port.
struct ChildNode {
    let directory: String
    let base: String
    let child: ChildProcess
    /// The server whose app credentials the tests' application calls present.
    var issuer: ChildServer?
    /// For an API served over HTTPS (`--tls-certificate` in `extraArguments`): the CA to trust.
    let curlOptions: [String]

    /// `port`: where the application API listens; a free one unless given (a node started again
    /// on its predecessor's port), chosen again if the node loses it before it binds.
    init(gateway: String, region: String, enrolmentToken: String?, in parent: String, name: String, port: Int? = nil,
         extraArguments: [String] = [], issuer: ChildServer? = nil, apiCA: String? = nil) throws {
        self.issuer = issuer
        let directory = "\(parent)/\(name)"
        self.directory = directory
        curlOptions = apiCA.map { ["--cacert", $0] } ?? []
        var options = extraArguments
        if let enrolmentToken {
            let tokenFile = "\(parent)/\(name).enrolment"
            try Data(enrolmentToken.utf8).write(to: URL(fileURLWithPath: tokenFile))
            options += ["--enrolment-token-file", tokenFile]
        }
        let cmk = try builtProduct("cmk")
        let logPath = "\(parent)/\(name).log"
        func launch(_ port: Int) throws -> ChildProcess {
            let child = ChildProcess(executable: cmk, arguments: ["node", "--gateway", gateway, "--region", region, "--data-dir", directory,
                                                                  "--listen", "127.0.0.1:\(port)", "--log-level", "debug"] + options,
                                     logPath: logPath, environment: ["CMK_NODE_HEARTBEAT_SECONDS": "1"])
            try child.start()
            return child
        }
        let chosen: Int
        var started: ChildProcess?
        if let port {
            chosen = port
            started = try launch(port)
        } else {
            (chosen, _) = try LoopbackPort.start("cmk node \(name)", logPath: logPath) { port in
                let child = try launch(port)
                started = child
                return child.process
            }
        }
        child = started!
        base = apiCA == nil ? "http://127.0.0.1:\(chosen)" : "https://localhost:\(chosen)"
    }

    var log: String { child.log }
}

/// Helpers for tests that drive `cmk serve` and `cmk node` processes over HTTP (curl).
protocol ChildProcessTests {}

struct HTTPResult {
    var status: Int
    var body: String
    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]) ?? [:] }
}

extension ChildProcessTests {
    /// One HTTP call through curl: status and body.
    func http(_ arguments: [String]) throws -> HTTPResult {
        let result = try SoftHSMFixture.run("/usr/bin/env", ["curl", "-s", "--max-time", "20", "-w", "\n%{http_code}"] + arguments)
        let text = result.output
        let split = text.lastIndex(of: "\n").map { (String(text[..<$0]), String(text[text.index(after: $0)...])) } ?? ("", text)
        return HTTPResult(status: Int(split.1.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0, body: split.0)
    }

    func admin(_ server: ChildServer, _ method: String, _ path: String, _ body: String? = nil) throws -> HTTPResult {
        try http(server.auth + ["-X", method] + (body.map { ["-d", $0] } ?? []) + ["\(server.base)\(path)"])
    }

    func call(_ person: Person, _ server: ChildServer, _ method: String, _ path: String, _ body: String? = nil) throws -> HTTPResult {
        try http(person.auth + ["-X", method] + (body.map { ["-d", $0] } ?? []) + ["\(server.base)\(path)"])
    }

    /// Waits until `condition` holds, up to `seconds` (`waitUntil`: polled, failing with `what`).
    func eventually(_ seconds: Double = 15, _ what: String, _ condition: () throws -> Bool) async throws {
        try await waitUntil(what, timeout: .milliseconds(Int64(seconds * 1000)), every: .milliseconds(100)) { try condition() }
    }

    func waitUntilUp(_ base: String, curlOptions: [String] = []) async throws {
        try await eventually(20, "\(base) to answer") { try http(curlOptions + ["\(base)/healthz"]).status == 200 }
    }

    /// A tenant with a linked L1 key; returns the link id.
    func linkedTenant(_ server: ChildServer, _ tenant: String) throws -> String {
        #expect(try admin(server, "POST", "/api/v1/tenants", #"{"id":"\#(tenant)","name":"\#(tenant)"}"#).status == 201)
        let created = try admin(server, "POST", "/api/v1/tenants/\(tenant)/l1-links", #"{"provider":"pkcs11","keystore":"hsm","key":"pkcs11:object=l1"}"#)
        guard created.status == 201, let id = created.json["id"] as? String else {
            throw SoftHSMFixture.FixtureError(message: "handshake failed: \(created.body)")
        }
        return id
    }

    func enrolmentToken(_ server: ChildServer, region: String) throws -> String {
        // Node enrolment is the platform operator's duty, not a security administrator's.
        let issued = try http(server.curlOptions + ["-H", "Authorization: Bearer \(try server.operatorToken())", "-H", "Content-Type: application/json",
                               "-d", #"{"region":"\#(region)"}"#, "\(server.base)/api/v1/nodes/enrolments"])
        guard let token = issued.json["token"] as? String else { throw SoftHSMFixture.FixtureError(message: "no token: \(issued.body)") }
        return token
    }

    func startNode(_ server: ChildServer, region: String, name: String) async throws -> ChildNode {
        let node = try ChildNode(gateway: server.base, region: region, enrolmentToken: try enrolmentToken(server, region: region),
                                 in: server.directory, name: name, issuer: server)
        try await waitUntilUp(node.base)
        try await eventually(10, "\(name) to open its event stream") { try status(node)["connected"] as? Bool == true }
        return node
    }

    func status(_ node: ChildNode) throws -> [String: Any] { try http(node.curlOptions + ["\(node.base)/v1/status"]).json }

    /// An application's call to a node for `tenant`, with the tenant's app credential.
    func application(_ node: ChildNode, _ tenant: String, _ operation: String, _ body: String) throws -> HTTPResult {
        let bearer = try node.issuer.map { ["-H", "Authorization: Bearer \(try $0.appCredential(for: tenant))"] } ?? []
        return try http(node.curlOptions + bearer + ["-d", body, "\(node.base)/v1/tenants/\(tenant)/\(operation)"])
    }
}
