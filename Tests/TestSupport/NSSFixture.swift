import Foundation
public import KSI
public import PKCS11

/// A private NSS softoken database (`libsoftokn3.so`), the second, independent PKCS#11
/// implementation the tests run the gateway on. Made once per test process: NSS reads its
/// database directory from `C_Initialize`'s arguments, and a module is initialised once per
/// process, so every test of the process shares this one database.
///
/// The database is made with `certutil -N` and a password file, so its key token
/// (`NSS Certificate DB`) requires a login with `userPIN`. Keys are made on it through the
/// project's own PKCS#11 code (the tool `certutil` cannot make an AES key with chosen attributes):
/// - `l1`: AES-256 with CKA_WRAP and CKA_UNWRAP, for the probe and token tests
/// - `l1-gateway`: the same, for the gateway's flows
/// - `no-wrap`: AES-256 without CKA_WRAP/CKA_UNWRAP, for the probe's refusal
public struct NSSFixture: Sendable {
    public static let modulePath = "/usr/lib/x86_64-linux-gnu/libsoftokn3.so"
    public static let tokenLabel = "NSS Certificate DB"
    /// Distinctive so that leak tests can search for it.
    public static let userPIN = "Nss-4e1b7d-Secret"
    public static let keys = ["l1", "l1-gateway"]

    public let directory: String
    public let pinFile: String
    /// What `C_Initialize` gets in `pReserved`: NSS's own parameter string naming the database.
    public let initArguments: String

    /// Whether NSS's module and `certutil` are installed (Scripts/test installs libnss3-tools).
    public static var isAvailable: Bool {
        FileManager.default.isExecutableFile(atPath: "/usr/bin/certutil") && FileManager.default.fileExists(atPath: modulePath)
    }

    private static let made = Task { try await NSSFixture.make() }

    /// The fixture; the first access makes the database and the keys.
    public static var shared: NSSFixture {
        get async throws { try await made.value }
    }

    private init(directory: String) {
        self.directory = directory
        pinFile = "\(directory)/user.pin"
        initArguments = "configdir='sql:\(directory)' certPrefix='' keyPrefix='' secmod='secmod.db' flags="
    }

    private static func make() async throws -> NSSFixture {
        let directory = NSTemporaryDirectory() + "openkcm-nss-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        let fixture = NSSFixture(directory: directory)
        // The PIN goes to certutil in a file, never on its command line (visible in ps).
        guard FileManager.default.createFile(atPath: fixture.pinFile, contents: Data(userPIN.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw SoftHSMFixture.FixtureError(message: "cannot write \(fixture.pinFile)")
        }
        let result = try SoftHSMFixture.run("/usr/bin/certutil", ["-N", "-d", "sql:\(directory)", "-f", fixture.pinFile])
        guard result.status == 0 else {
            throw SoftHSMFixture.FixtureError(message: "certutil -N failed (\(result.status)): \(result.output) \(result.error)")
        }
        let pool = try fixture.pool(maxSessions: 1)
        do {
            try await pool.withSession { session in
                for (index, label) in keys.enumerated() {
                    _ = try session.generateAESKey(bits: 256, token: true, label: label, id: [UInt8(index + 1)],
                                                   usages: [.wrap(true), .unwrap(true), .encrypt(true), .decrypt(true)])
                }
                _ = try session.generateAESKey(bits: 256, token: true, label: "no-wrap", id: [0x7F],
                                               usages: [.wrap(false), .unwrap(false), .encrypt(true), .decrypt(true)])
            }
        } catch {
            await pool.shutdown()
            throw error
        }
        await pool.shutdown()
        return fixture
    }

    /// A pool on the key token, logged in with the fixture's PIN file, on the process's module.
    public func pool(maxSessions: Int = 4, codes: MechanismCodes = Self.codes) throws -> SessionPool {
        let module = try ModuleManager.shared.module(at: Self.modulePath, initArguments: initArguments)
        return SessionPool(module: module, configuration: .init(
            token: TokenSelector(label: Self.tokenLabel), pinSource: .file(pinFile),
            maxSessions: maxSessions, waitTimeout: .seconds(5), mechanismCodes: codes))
    }

    /// The override the shipped profile makes: RFC 5649 is 0x210B on NSS.
    public static let codes = MechanismCodes([.aesKeyWrapPad: .aesKeyWrapKWP])

    /// A profile for this database, as `HSMConfig/nss-softoken.json` with the fixture's paths.
    public func profile(name: String = "test-nss", pinSource: String? = nil, overrides: [String: String]? = ["CKM_AES_KEY_WRAP_PAD": "0x210B"],
                        wrapMechanisms: [String] = ["CKM_AES_KEY_WRAP_PAD", "CKM_AES_KEY_WRAP"]) -> HSMProfile {
        HSMProfile(name: name, module: Self.modulePath, initArguments: initArguments, token: .init(label: Self.tokenLabel),
                   pinSource: pinSource ?? "file:\(pinFile)", pool: .init(maxSessions: 4, waitTimeoutMilliseconds: 5000),
                   wrapMechanisms: wrapMechanisms, mechanismOverrides: overrides)
    }

    /// The key's URI on the NSS token (no module path: used with `profile`).
    public func uri(_ key: String = "l1") -> PKCS11URI {
        var uri = PKCS11URI()
        uri.token = Self.tokenLabel
        uri.object = key
        uri.type = "secret-key"
        return uri
    }

    /// Every object a fresh logged-in session sees on the key token, as (class, label, id,
    /// token object) strings, sorted.
    public func objectList() async throws -> [String] {
        try await SoftHSMFixture.objectList(in: try pool(maxSessions: 1))
    }
}
