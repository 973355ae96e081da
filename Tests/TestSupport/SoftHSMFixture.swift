import Foundation
public import KSI
public import PKCS11

/// A private SoftHSM token directory, provisioned once per test process with
/// `Scripts/softhsm-provision` (so the script is exercised too), before any test loads the module.
///
/// Tokens, each used by one group of tests so that their object counts do not interfere:
/// - `probe`: probe tests (object list compared before/after)
/// - `pool`: session pool, recovery and concurrency tests
/// - `pin`: wrong-PIN tests
/// - `crypto`: mechanisms, interop and wrap/unwrap tests
/// - `cli`: the `cmk` binary's tests
/// - `server`, `server-b`: the gateway's API tests (platform token and a second keystore)
/// - `fault`: the recovery tests through the fault-injecting module (`FaultModule`)
public struct SoftHSMFixture: Sendable {
    public static let modulePath = "/usr/lib/softhsm/libsofthsm2.so"
    /// Distinctive so that leak tests can search for it.
    public static let userPIN = "Pin-7f3a9c-Secret"
    public static let tokens = ["probe", "pool", "pin", "crypto", "cli", "server", "server-b", "crash", "logs", "audit", "orbital", "ha", "grpc", "fault"]

    public let directory: String
    public let configPath: String

    /// The fixture; the first access provisions it.
    public static let shared: SoftHSMFixture = {
        do {
            return try SoftHSMFixture()
        } catch {
            fatalError("SoftHSM fixture: \(error)")
        }
    }()

    public static var repositoryRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    init() throws {
        let base = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("openkcm-tests-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        directory = base.path
        configPath = base.appendingPathComponent("softhsm2.conf").path
        try FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
        for token in Self.tokens {
            let result = try Self.run("\(Self.repositoryRoot)/Scripts/softhsm-provision", ["--dir", directory, "--label", token],
                                      environment: ["OPENKCM_USER_PIN": Self.userPIN, "OPENKCM_SO_PIN": "so-\(Self.userPIN)"])
            guard result.status == 0 else { throw FixtureError(message: "provisioning \(token) failed: \(result.output)") }
        }
        setenv("SOFTHSM2_CONF", configPath, 1)
        setenv("OPENKCM_TEST_PIN", Self.userPIN, 1)
    }

    /// The PIN file the script wrote for `token`.
    public func pinFile(_ token: String) -> String { "\(directory)/\(token).pin" }

    /// The L1 key's URI on `token`, with module path and PIN source.
    public func l1URI(_ token: String, key: String = "l1") -> PKCS11URI {
        var uri = PKCS11URI()
        uri.token = token
        uri.object = key
        uri.type = "secret-key"
        uri.modulePath = Self.modulePath
        uri.pinSource = "file:\(pinFile(token))"
        return uri
    }

    public func profile(_ token: String, pinSource: String? = nil, maxSessions: Int = 4) -> HSMProfile {
        HSMProfile(name: "test-\(token)", module: Self.modulePath, token: .init(label: token),
                   pinSource: pinSource ?? "file:\(pinFile(token))", pool: .init(maxSessions: maxSessions, waitTimeoutMilliseconds: 5000))
    }

    public struct FixtureError: Error, CustomStringConvertible {
        public let message: String
        public init(message: String) { self.message = message }
        public var description: String { message }
    }

    public struct RunResult: Sendable {
        public var status: Int32
        public var output: String
        public var error: String
    }

    /// Runs a program and collects its exit status, stdout and stderr.
    @discardableResult
    public static func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws -> RunResult {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        process.environment = env
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Read both pipes before waiting, so a chatty child cannot block on a full pipe.
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return RunResult(status: process.terminationStatus, output: String(decoding: outData, as: UTF8.self),
                         error: String(decoding: errData, as: UTF8.self))
    }

    /// The pool for `token`, logged in with the fixture's PIN file.
    /// `clock`: what the wait timeout is measured on (a `ManualClock` in tests of the timeout).
    public func pool(_ token: String, maxSessions: Int = 4, waitTimeout: Duration = .seconds(5),
                     codes: MechanismCodes = MechanismCodes(), pinSource: PINSource? = nil,
                     clock: any Clock<Duration> = ContinuousClock()) throws -> SessionPool {
        let module = try ModuleManager.shared.module(at: Self.modulePath)
        return SessionPool(module: module, configuration: .init(
            token: TokenSelector(label: token), pinSource: pinSource ?? .file(pinFile(token)),
            maxSessions: maxSessions, waitTimeout: waitTimeout, mechanismCodes: codes, clock: clock))
    }

    /// Every object a fresh logged-in session can see on `token` (token and session objects),
    /// as (class, label, id) triples, sorted.
    public func objectList(_ token: String) async throws -> [String] {
        try await Self.objectList(in: try pool(token, maxSessions: 1))
    }

    /// Every object a session of `pool` sees, as (class, label, id, token object) strings,
    /// sorted; the pool is shut down after.
    public static func objectList(in pool: SessionPool) async throws -> [String] {
        do {
            let list = try await pool.withSession { session in
                try session.findObjects([]).map { handle in
                    let info = try session.info(of: handle)
                    return "\(info.objectClass)|\(info.label)|\(info.idHex)|\(info.isTokenObject)"
                }.sorted()
            }
            await pool.shutdown()
            return list
        } catch {
            await pool.shutdown()
            throw error
        }
    }
}
