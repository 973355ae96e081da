import CMKCore
import Crypto
import Foundation
@testable import KSI
import PKCS11
import TestSupport
import Testing

/// The gateway's PKCS#11 driver on a second, independent implementation: NSS's softoken, whose
/// key token is `NSS Certificate DB`, whose database is named only by `C_Initialize`'s
/// arguments, and whose `0x210A` is not RFC 5649 (its RFC 5649 is `0x210B`).
@Suite(.serialized, .enabled(if: NSSFixture.isAvailable, "NSS softoken and certutil (libnss3-tools) are not installed"))
struct NSSSoftokenTests {
    let keystore = PKCS11Keystore()

    func probe(_ fixture: NSSFixture, key: String = "l1", profile: HSMProfile? = nil) async throws -> ProbeReport {
        let uri = fixture.uri(key)
        let token = try await keystore.token(for: uri, profile: profile ?? fixture.profile())
        return await token.probe(.pkcs11(uri))
    }

    // MARK: The profile

    @Test func theShippedProfileNamesTheKeyTokenAndRFC5649As0x210B() throws {
        let profile = try HSMProfile.load(from: SoftHSMFixture.repositoryRoot + "/HSMConfig/nss-softoken.json")
        #expect(profile.name == "nss-softoken")
        #expect(profile.token.label == NSSFixture.tokenLabel)
        #expect(profile.initArguments?.hasPrefix("configdir='sql:") == true)
        let codes = try profile.mechanismCodes()
        #expect(codes.code(for: .aesKeyWrapPad) == .aesKeyWrapKWP)
        #expect(codes.code(for: .aesKeyWrap) == .aesKeyWrap)
        let configuration = try PKCS11Token.Configuration(profile: profile)
        #expect(configuration.initArguments == profile.initArguments)
    }

    @Test(arguments: [
        ("configdir='sql:/tmp/x'\u{0}flags=readOnly", "NUL byte"),
        (String(repeating: "a", count: Module.maxInitArgumentsLength + 1), "at most 4096"),
        ("", "may not be empty"),
    ])
    func badInitArgumentsAreRefusedWithoutEchoingThem(_ arguments: String, _ expected: String) throws {
        var profile = HSMProfile(name: "bad", module: NSSFixture.modulePath, initArguments: arguments,
                                 token: .init(label: NSSFixture.tokenLabel), pinSource: "env:OPENKCM_HSM_PIN")
        profile.notes = []
        let data = try JSONEncoder().encode(profile)
        #expect { try HSMProfile.parse(data, source: "bad.json") } throws: { error in
            let error = error as? KeystoreError
            return error?.code == .invalidInput && error?.reason.contains(expected) == true
                && (arguments.isEmpty || error?.reason.contains(arguments) == false)
        }
        // The PKCS#11 layer holds the same line for callers that do not go through a profile.
        if !arguments.isEmpty {
            #expect(throws: PKCS11Error(.invalidArgument)) { try Module.checkInitArguments(arguments) }
        }
    }

    @Test func initArgumentsOfTheWrongTypeAreAProfileError() throws {
        let json = #"{"name":"x","description":"","module":"/usr/lib/x86_64-linux-gnu/libsoftokn3.so","initArguments":42,"token":{"label":"NSS Certificate DB"},"pinSource":"env:P","pool":{"maxSessions":1,"waitTimeoutMilliseconds":10},"wrapMechanisms":["CKM_AES_KEY_WRAP"],"notes":[]}"#
        #expect { try HSMProfile.parse(Data(json.utf8)) } throws: { error in
            (error as? KeystoreError)?.reason.contains("initArguments has the wrong type") == true
        }
    }

    // MARK: Loading once per path

    @Test func aSecondLoadWithOtherInitArgumentsIsRefusedAndTheSameArgumentsShareTheModule() async throws {
        let fixture = try await NSSFixture.shared
        let loaded = try ModuleManager.shared.module(at: NSSFixture.modulePath, initArguments: fixture.initArguments)
        #expect(loaded.initArguments == fixture.initArguments)
        // Same manager, other database: refused, and the message does not repeat the arguments.
        let other = "configdir='sql:/tmp/another-nss-db' certPrefix='' keyPrefix='' secmod='secmod.db' flags="
        #expect { try ModuleManager.shared.module(at: NSSFixture.modulePath, initArguments: other) } throws: { error in
            let error = error as? PKCS11Error
            return error?.code == .invalidArgument && error?.reason.contains("already loaded in this process with other initialise arguments") == true
                && error?.reason.contains("another-nss-db") == false
        }
        #expect(throws: PKCS11Error(.invalidArgument)) { try ModuleManager.shared.module(at: NSSFixture.modulePath) }
        // Another manager in the same process: C_Initialize is per process, so it is refused too,
        // and with the same arguments it shares the initialisation.
        let manager = ModuleManager()
        #expect(throws: PKCS11Error(.invalidArgument)) { try manager.module(at: NSSFixture.modulePath, initArguments: other) }
        let shared = try manager.module(at: NSSFixture.modulePath, initArguments: fixture.initArguments)
        #expect(!shared.ownsInitialization)
        manager.shutdown()
        // The refusals changed nothing: the process's module still works.
        #expect(try loaded.tokens().contains { $0.1.label == NSSFixture.tokenLabel })
    }

    @Test func aKeystoreRefusesTheShippedProfileBesideTheFixturesDatabase() async throws {
        let fixture = try await NSSFixture.shared
        _ = try await fixture.objectList()
        let shipped = try HSMProfile.load(from: SoftHSMFixture.repositoryRoot + "/HSMConfig/nss-softoken.json")
        await #expect { _ = try await keystore.token(profile: shipped) } throws: { error in
            let error = error as? KeystoreError
            return error?.code == .invalidInput && error?.reason.contains("same initArguments") == true
        }
    }

    // MARK: The probe

    @Test func theProbePassesOnNSSWithRFC5649AsCode0x210BAndLeavesNothingBehind() async throws {
        let fixture = try await NSSFixture.shared
        let before = try await fixture.objectList()
        let report = try await probe(fixture)
        let after = try await fixture.objectList()
        #expect(before == after)
        #expect(report.passed, "\(report.checks)")
        #expect(report.mechanism == "CKM_AES_KEY_WRAP_PAD")
        #expect(report.checks.map(\.name) == ["token", "login", "key_found", "key_type", "key_usage", "mechanism",
                                              "test_key", "wrap", "unwrap", "compare", "cleanup"])
        let mechanism = try #require(report.checks.first { $0.name == "mechanism" })
        #expect(mechanism.detail.contains("0x210B") && mechanism.detail.contains("passed the known-answer test"), "\(mechanism.detail)")
        #expect(report.checks.first { $0.name == "token" }?.detail.contains(NSSFixture.tokenLabel) == true)
        #expect(report.checks.first { $0.name == "wrap" }?.detail.contains("40-byte blob") == true, "RFC 5649 of 32 bytes is 40 bytes")
    }

    @Test func nssCode0x210AIsNotTakenForRFC5649() async throws {
        let fixture = try await NSSFixture.shared
        // RFC 5649 only, without the override: NSS offers 0x210A for wrap and unwrap, and it
        // round-trips there, but it is not RFC 5649. The probe must say so and not pass.
        let padOnly = fixture.profile(name: "nss-pad-only", overrides: nil, wrapMechanisms: ["CKM_AES_KEY_WRAP_PAD"])
        let before = try await fixture.objectList()
        let refused = try await probe(fixture, profile: padOnly)
        #expect(try await fixture.objectList() == before)
        #expect(!refused.passed)
        #expect(refused.failure?.code == .unsupported)
        #expect(refused.checks.last?.name == "mechanism")
        let reason = try #require(refused.failure?.reason)
        #expect(reason.contains("0x210A is not RFC 5649") && reason.contains("map CKM_AES_KEY_WRAP_PAD to 0x210B"), "\(reason)")
        // The default list without the override falls through to RFC 3394, which is what 0x2109
        // is on NSS, and the report says why RFC 5649 was passed over.
        let fallback = try await probe(fixture, profile: fixture.profile(name: "nss-no-override", overrides: nil))
        #expect(fallback.passed)
        #expect(fallback.mechanism == "CKM_AES_KEY_WRAP")
        #expect(fallback.checks.first { $0.name == "mechanism" }?.detail.contains("CKM_AES_KEY_WRAP_PAD as code 0x210A is not RFC 5649") == true)
    }

    /// The same known answer on SoftHSM, where RFC 5649 is 0x210A: the check passes there
    /// without an override, so the test tells the two modules' 0x210A apart.
    @Test func softHSMs0x210APassesTheKnownAnswerTest() async throws {
        let uri = SoftHSMFixture.shared.l1URI("crypto")
        let token = try await keystore.token(for: uri)
        let report = await token.probe(.pkcs11(uri))
        #expect(report.passed && report.mechanism == "CKM_AES_KEY_WRAP_PAD")
        let mechanism = report.checks.first { $0.name == "mechanism" }?.detail ?? ""
        #expect(mechanism.contains("CKM_AES_KEY_WRAP_PAD passed the known-answer test") && !mechanism.contains("0x210B"), "\(mechanism)")
    }

    @Test func aKeyWithoutWrapIsRefusedOnNSSWithTheSameReasonAsOnSoftHSM() async throws {
        let fixture = try await NSSFixture.shared
        let report = try await probe(fixture, key: "no-wrap")
        #expect(!report.passed)
        #expect(report.failure?.code == .permissionDenied)
        #expect(report.checks.last?.name == "key_usage")
        let missing = try await probe(fixture, key: "absent")
        #expect(missing.failure?.code == .notFound)
        #expect(missing.failure?.reason.contains(NSSFixture.tokenLabel) == true)
    }

    @Test func theProbeReportAndErrorsNeverCarryThePIN() async throws {
        let fixture = try await NSSFixture.shared
        let report = try await probe(fixture)
        let text = String(decoding: try JSONEncoder().encode(report), as: UTF8.self)
        #expect(!text.contains(NSSFixture.userPIN))
        #expect(report.checks.first { $0.name == "login" }?.detail.contains(fixture.pinFile) == true, "the report names where the PIN is, not the PIN")
    }

    // MARK: The command line

    /// `cmk hsm` in its own process with the profile's initArguments: it sees the key token and
    /// its 0x210B, and the probe passes; without the arguments NSS does not initialise.
    @Test func theCLIPassesTheProfilesInitArgumentsToNSS() async throws {
        let fixture = try await NSSFixture.shared
        let cmk = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("cmk").path
        try #require(FileManager.default.isExecutableFile(atPath: cmk), "build the cmk product first (Scripts/test does)")
        let profile = fixture.directory + "/cli-profile.json"
        try JSONEncoder().encode(fixture.profile(name: "cli-profile")).write(to: URL(fileURLWithPath: profile))
        func run(_ arguments: [String]) throws -> SoftHSMFixture.RunResult {
            let result = try SoftHSMFixture.run(cmk, arguments)
            #expect(!result.output.contains(NSSFixture.userPIN) && !result.error.contains(NSSFixture.userPIN))
            return result
        }

        let tokens = try run(["hsm", "tokens", "--profile", profile, "--mechanisms", "--json"])
        #expect(tokens.status == 0, "\(tokens.error)")
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(tokens.output.utf8)) as? [[String: Any]])
        let keyToken = try #require(rows.first { $0["label"] as? String == NSSFixture.tokenLabel })
        #expect(keyToken["loginRequired"] as? Bool == true)
        #expect(tokens.output.contains("CKM_AES_KEY_WRAP_KWP"))

        let probe = try run(["hsm", "probe", fixture.uri().description, "--profile", profile, "--json"])
        #expect(probe.status == 0, "\(probe.output) \(probe.error)")
        #expect(probe.output.contains("\"passed\" : true") || probe.output.contains("\"passed\":true"))

        let bare = try run(["hsm", "modules", "--module", NSSFixture.modulePath, "--json"])
        let bareRows = try #require(try JSONSerialization.jsonObject(with: Data(bare.output.utf8)) as? [[String: Any]], "\(bare.output) \(bare.error)")
        #expect(bareRows.first?["loaded"] as? Bool == false, "NSS needs its initialise arguments: \(bare.output)")
        #expect((bareRows.first?["error"] as? String)?.contains("need initArguments in the profile") == true, "\(bare.output)")
    }

    // MARK: The gateway's token operations

    @Test func l2KeysAreWrappedAsRFC5649AndUnwrapAgainOnNSS() async throws {
        let fixture = try await NSSFixture.shared
        let token = try await keystore.token(for: fixture.uri(), profile: fixture.profile())
        let l1 = KeyReference.pkcs11(fixture.uri())
        let generated = try await token.generateWrappedKey(with: l1)
        #expect(generated.mechanism == "CKM_AES_KEY_WRAP_PAD")
        #expect(generated.blob.count == 40)
        try await token.verifyUnwrap(generated, with: l1)
        let material = SecretBytes(copying: (0..<32).map { UInt8($0 &* 7) })
        let wrapped = try await token.wrap(material, with: l1)
        let back = try await token.unwrap(wrapped, with: l1)
        #expect(back.withUnsafeBytes { Array($0) } == material.withUnsafeBytes { Array($0) })
        // A tampered blob is refused, not unwrapped into something else.
        var tampered = wrapped
        tampered.blob[5] ^= 0x01
        await #expect(throws: KeystoreError.self) { _ = try await token.unwrap(tampered, with: l1) }
    }

    // MARK: Interoperability by the standard

    /// The known-answer vectors the gateway holds mechanisms against are the standards' (checked
    /// here against the tests' own software RFC 3394/5649).
    @Test func theKnownAnswerVectorsAreRFC3394AndRFC5649() throws {
        let kek = SymmetricKey(data: PKCS11Token.knownAnswerKEK)
        #expect(try AESKeyWrap.wrap(PKCS11Token.knownAnswerKey, kek: kek) == PKCS11Token.knownAnswerBlobs[.aesKeyWrap])
        #expect(try AESKeyWrap.wrapPadded(PKCS11Token.knownAnswerKey, kek: kek) == PKCS11Token.knownAnswerBlobs[.aesKeyWrapPad])
    }

    /// One KEK imported into SoftHSM and into NSS; a key wrapped on one is unwrapped on the other
    /// (SoftHSM RFC 5649 = 0x210A, NSS RFC 5649 = 0x210B), in both directions, and the blobs are
    /// the bytes the standard gives (the tests' software RFC 5649). NSS's own 0x210A makes a
    /// different, longer blob that SoftHSM refuses.
    @Test func anRFC5649BlobMadeOnOneModuleUnwrapsOnTheOther() async throws {
        let nss = try await NSSFixture.shared
        let kekBytes = (0..<32).map { _ in UInt8.random(in: 0...255) }
        let keyBytes = (0..<32).map { _ in UInt8.random(in: 0...255) }
        let expected = try AESKeyWrap.wrapPadded(keyBytes, kek: SymmetricKey(data: kekBytes))

        let kekTemplate: [Attribute] = [.class(.secretKey), .keyType(.aes), .token(false), .private(true), .sensitive(true),
                                        .wrap(true), .unwrap(true)]
        let keyTemplate: [Attribute] = [.class(.secretKey), .keyType(.aes), .token(false), .private(true), .sensitive(false),
                                        .extractable(true), .encrypt(true)]
        /// Imports the KEK, runs `body`, destroys every session object it made.
        @Sendable func onToken<T: Sendable>(_ pool: SessionPool, _ body: @escaping @Sendable (Session, ObjectHandle) throws -> T) async throws -> T {
            try await pool.withSession { session in
                let kek = try session.createSecretKey(value: SecretBytes(copying: kekBytes), template: kekTemplate)
                defer { try? session.destroyObject(kek) }
                return try body(session, kek)
            }
        }
        @Sendable func wrap(_ session: Session, _ kek: ObjectHandle, _ mechanism: Mechanism) throws -> [UInt8] {
            let key = try session.createSecretKey(value: SecretBytes(copying: keyBytes), template: keyTemplate)
            defer { try? session.destroyObject(key) }
            return try session.wrapKey(key, with: kek, mechanism: mechanism)
        }
        @Sendable func unwrap(_ session: Session, _ kek: ObjectHandle, _ blob: [UInt8]) throws -> [UInt8] {
            let key = try session.unwrapKey(blob, with: kek, mechanism: .aesKeyWrapPad, template: keyTemplate)
            defer { try? session.destroyObject(key) }
            return try session.secretValue(of: key).withUnsafeBytes { Array($0) }
        }

        let softhsm = try SoftHSMFixture.shared.pool("crypto", maxSessions: 1)
        let nssPool = try nss.pool(maxSessions: 1)            // RFC 5649 sent as 0x210B
        let nssRaw = try nss.pool(maxSessions: 1, codes: MechanismCodes())  // NSS's own 0x210A

        let fromSoftHSM = try await onToken(softhsm) { session, kek in try wrap(session, kek, .aesKeyWrapPad) }
        let fromNSS = try await onToken(nssPool) { session, kek in try wrap(session, kek, .aesKeyWrapPad) }
        #expect(fromSoftHSM == expected)
        #expect(fromNSS == expected)
        #expect(try await onToken(nssPool) { session, kek in try unwrap(session, kek, fromSoftHSM) } == keyBytes)
        #expect(try await onToken(softhsm) { session, kek in try unwrap(session, kek, fromNSS) } == keyBytes)

        let nssPad = try await onToken(nssRaw) { session, kek in try wrap(session, kek, .aesKeyWrapPad) }
        // What it is: eight bytes of 0x08 after the key (PKCS #7 to an 8-byte block), then RFC 3394.
        #expect(nssPad.count == 48 && nssPad != expected)
        #expect(try nssPad == AESKeyWrap.wrap(keyBytes + Array(repeating: 0x08, count: 8), kek: SymmetricKey(data: kekBytes)))
        await #expect(throws: PKCS11Error.self) {
            _ = try await onToken(softhsm) { session, kek in try unwrap(session, kek, nssPad) }
        }
        // Closing the sessions takes with them any empty object a refused unwrap left behind.
        await softhsm.shutdown()
        await nssPool.shutdown()
        await nssRaw.shutdown()
    }
}
