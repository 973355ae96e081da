import CMKCore
import Foundation
@testable import PKCS11
import Testing
import TestSupport

@Suite struct ModuleTests {
    let fixture = SoftHSMFixture.shared

    @Test func loadsEachModuleOncePerPath() throws {
        let manager = ModuleManager()
        let first = try manager.module(at: SoftHSMFixture.modulePath)
        let link = NSTemporaryDirectory() + "softhsm-link-\(getpid()).so"
        try? FileManager.default.removeItem(atPath: link)
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: SoftHSMFixture.modulePath)
        defer { try? FileManager.default.removeItem(atPath: link) }
        let second = try manager.module(at: SoftHSMFixture.modulePath)
        let viaLink = try manager.module(at: link)
        #expect(first === second)
        #expect(first === viaLink)
        #expect(manager.loaded.count == 1)
    }

    @Test func missingModuleFileIsATypedErrorNamingThePath() {
        let path = "/nonexistent/libvendor-pkcs11.so"
        let error = #expect(throws: PKCS11Error(.moduleNotFound)) { try ModuleManager().module(at: path) }
        #expect(error?.module == path)
        #expect(error?.description.contains(path) == true)
    }

    @Test func fileThatIsNotAModuleIsATypedError() throws {
        let text = NSTemporaryDirectory() + "not-a-module-\(getpid()).so"
        try Data("this is not an ELF shared object\n".utf8).write(to: URL(fileURLWithPath: text))
        defer { try? FileManager.default.removeItem(atPath: text) }
        let manager = ModuleManager()
        let error = #expect(throws: PKCS11Error(.notAModule)) { try manager.module(at: text) }
        #expect(error?.module == text)

        // A real shared library that is not a PKCS#11 module.
        let libm = ["/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6", "/lib/aarch64-linux-gnu/libm.so.6"]
            .first { FileManager.default.fileExists(atPath: $0) }
        if let libm {
            let noSymbol = #expect(throws: PKCS11Error(.notAModule)) { try manager.module(at: libm) }
            #expect(noSymbol?.reason.contains("C_GetFunctionList") == true)
        }

        // The failures left the manager usable for other modules.
        let softhsm = try manager.module(at: SoftHSMFixture.modulePath)
        #expect(try softhsm.info().manufacturer.contains("SoftHSM"))
    }

    @Test func findsTokensByLabelAndSerialNeverBySlot() throws {
        _ = fixture
        let module = try ModuleManager.shared.module(at: SoftHSMFixture.modulePath)
        let byLabel = try module.findToken(TokenSelector(label: "crypto"))
        #expect(byLabel.info.label == "crypto")
        #expect(byLabel.info.isInitialized)
        #expect(byLabel.info.loginRequired)
        let bySerial = try module.findToken(TokenSelector(serial: byLabel.info.serial))
        #expect(bySerial.slot == byLabel.slot)
        let labels = Set(try module.tokens().map(\.info.label))
        #expect(labels.isSuperset(of: SoftHSMFixture.tokens))

        let missing = #expect(throws: PKCS11Error(.tokenNotFound)) { try module.findToken(TokenSelector(label: "no-such-token")) }
        #expect(missing?.reason.contains("\"crypto\"") == true, "the error lists the tokens that exist")
        #expect(throws: PKCS11Error(.tokenNotFound)) { try module.findToken(TokenSelector(label: "crypto", serial: "0000")) }
    }

    @Test func mechanismListAndInfo() throws {
        _ = fixture
        let module = try ModuleManager.shared.module(at: SoftHSMFixture.modulePath)
        let slot = try module.findToken(TokenSelector(label: "crypto")).slot
        let mechanisms = try module.mechanisms(slot)
        #expect(mechanisms.contains(.aesKeyWrapPad))
        #expect(mechanisms.contains(.aesKeyWrap))
        #expect(mechanisms.contains(.aesGCM))
        #expect(!mechanisms.contains(.aesKeyWrapKWP), "SoftHSM lacks the PKCS#11 3.0 code for RFC 5649")
        let info = try module.mechanismInfo(.aesKeyWrapPad, slot: slot)
        #expect(info.canWrap && info.canUnwrap)
        #expect(!info.canGenerate)
        let keyGen = try module.mechanismInfo(.aesKeyGen, slot: slot)
        #expect(keyGen.canGenerate)
        #expect(keyGen.maxKeySize >= 32)
    }

    @Test func moduleInfoNamesTheLibrary() throws {
        _ = fixture
        let info = try ModuleManager.shared.module(at: SoftHSMFixture.modulePath).info()
        #expect(info.cryptokiVersion.hasPrefix("2.") || info.cryptokiVersion.hasPrefix("3."))
        #expect(info.manufacturer.contains("SoftHSM"))
        #expect(!info.libraryDescription.isEmpty)
    }
}

@Suite struct ErrorTests {
    @Test func errorsNameTheReturnValueAndFunction() {
        let error = PKCS11Error(.returnValue(.pinIncorrect), function: .C_Login, module: "/usr/lib/x.so", reason: "refused")
        #expect(error.description == "C_Login failed: CKR_PIN_INCORRECT (0xA0): refused [module /usr/lib/x.so]")
        #expect(ReturnValue(rawValue: 0x8000_0001).name == "CKR_VENDOR_DEFINED")
        #expect(ReturnValue.objectHandleInvalid.description == "CKR_OBJECT_HANDLE_INVALID (0x82)")
        #expect(MechanismType.aesKeyWrapPad.description == "CKM_AES_KEY_WRAP_PAD")
        #expect(MechanismType(parsing: "ckm_aes_key_wrap_pad") == .aesKeyWrapPad)
        #expect(MechanismType(parsing: "0x210B") == .aesKeyWrapKWP)
        #expect(MechanismType(parsing: "CKM_NOPE") == nil)
    }

    @Test func equalityComparesCodesOnly() {
        #expect(PKCS11Error(.returnValue(.pinIncorrect), function: .C_Login) == PKCS11Error(.returnValue(.pinIncorrect)))
        #expect(PKCS11Error(.returnValue(.pinIncorrect)) != PKCS11Error(.returnValue(.pinLocked)))
    }

    @Test(arguments: [
        (ReturnValue.sessionHandleInvalid, Recovery.replaceSession), (.sessionClosed, .replaceSession),
        (.userNotLoggedIn, .loginAgain), (.objectHandleInvalid, .refindObject), (.keyHandleInvalid, .refindObject),
        (.wrappingKeyHandleInvalid, .refindObject), (.deviceRemoved, .reinitializeToken), (.tokenNotPresent, .reinitializeToken),
        (.cryptokiNotInitialized, .reinitializeToken), (.deviceError, .reinitializeToken), (.pinIncorrect, .neverRetry),
        (.pinLocked, .neverRetry), (.pinExpired, .neverRetry), (.mechanismInvalid, .report), (.generalError, .report),
    ])
    func recoveryTable(code: ReturnValue, expected: Recovery) {
        #expect(code.recovery == expected)
    }

    @Test func backoffDoublesAndIsCapped() {
        #expect(SessionPool.backoff(attempt: 1, initial: .milliseconds(500), maximum: .seconds(30)) == .milliseconds(500))
        #expect(SessionPool.backoff(attempt: 3, initial: .milliseconds(500), maximum: .seconds(30)) == .seconds(2))
        #expect(SessionPool.backoff(attempt: 40, initial: .milliseconds(500), maximum: .seconds(30)) == .seconds(30))
    }

    @Test func capacityFollowsTheTokensLimits() {
        var info = TokenInfo(label: "t", manufacturer: "", model: "", serial: "", flags: 0, maxSessionCount: nil, sessionCount: nil,
                             maxRwSessionCount: nil, rwSessionCount: nil, minPinLength: 4, maxPinLength: 255,
                             hardwareVersion: "", firmwareVersion: "")
        #expect(SessionPool.capacity(configured: 8, token: info) == 8)
        info.maxRwSessionCount = 5
        #expect(SessionPool.capacity(configured: 8, token: info) == 4, "one read-write session holds the login")
        info.maxSessionCount = 3
        #expect(SessionPool.capacity(configured: 8, token: info) == 2)
    }
}

@Suite struct SecretTests {
    @Test func pinSourcesParseAndRead() throws {
        #expect(try PINSource(parsing: "env:HSM_PIN") == .environment("HSM_PIN"))
        #expect(try PINSource(parsing: "file:/run/pin") == .file("/run/pin"))
        #expect(try PINSource(parsing: "file:///run/pin") == .file("/run/pin"))
        #expect(throws: PKCS11Error(.invalidArgument)) { try PINSource(parsing: "123456") }
        #expect(throws: PKCS11Error(.invalidArgument)) { try PINSource(parsing: "env:") }
        #expect(throws: PKCS11Error(.invalidArgument)) { try PINSource(parsing: "file:relative/pin") }

        let path = NSTemporaryDirectory() + "pin-\(getpid())"
        try Data("s3cret-pin\n".utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let pin = try PINSource.file(path).read()
        #expect(pin.count == 10, "the trailing newline is not part of the PIN")
        #expect(pin.isEqual(to: SecretBytes(copying: Array("s3cret-pin".utf8))))
        #expect(!String(describing: pin).contains("s3cret"))
        #expect(!PINSource.file(path).description.contains("s3cret"))

        setenv("OPENKCM_TEST_ENV_PIN", "env-pin-42", 1)
        #expect(try PINSource.environment("OPENKCM_TEST_ENV_PIN").read().count == 10)
        let missing = #expect(throws: PKCS11Error(.pinSourceUnavailable)) { try PINSource.file("/nonexistent/pin").read() }
        #expect(missing?.reason.contains("/nonexistent/pin") == true)
        #expect(throws: PKCS11Error(.pinSourceUnavailable)) { try PINSource.environment("OPENKCM_UNSET_VARIABLE_X").read() }
    }

    @Test func secretBytesAreWipedOnRelease() {
        // The wipe itself is explicit_bzero in deinit; what can be checked from outside is that
        // the bytes are reachable only through the closure APIs and never printed.
        let secret = SecretBytes(copying: [1, 2, 3, 4])
        #expect(secret.description == "SecretBytes(4 bytes, redacted)")
        #expect(secret.withUnsafeBytes { Array($0) } == [1, 2, 3, 4])
        #expect(!secret.isEqual(to: SecretBytes(copying: [1, 2, 3, 5])))
    }
}
