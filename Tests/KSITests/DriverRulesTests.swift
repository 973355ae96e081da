import Foundation
@testable import KSI
import PKCS11
import Testing

/// The PKCS#11 driver's rules that need no token, at unit speed: the one translation of PKCS#11
/// errors into keystore codes and operator words, and the checks made on a key reference or a
/// wrapped blob before any `C_*` call. The SoftHSM suites (ProbeTests, TokenOperationTests,
/// CLITests) still show the same answers coming back from a real module end to end.
struct DriverRulesTests {
    /// What ProbeTests sees SoftHSM answer to a wrong PIN, translated here without SoftHSM.
    @Test func aWrongPINIsPermissionDeniedAndSaysItWasNotRetried() {
        let error = KeystoreError(PKCS11Error(.returnValue(.pinIncorrect), function: .C_Login, module: "/usr/lib/softhsm/libsofthsm2.so"))
        #expect(error.code == .permissionDenied)
        #expect(error.reason.contains("wrong PIN") && error.reason.contains("not retried"), "\(error.reason)")
        #expect(error.detail?.contains("C_Login failed: CKR_PIN_INCORRECT (0xA0)") == true, "\(String(describing: error.detail))")
        #expect(error.detail?.contains("libsofthsm2.so") == true, "the detail names the module")
    }

    @Test(arguments: [
        (PKCS11Error.Code.returnValue(.pinLocked), KeystoreError.Code.permissionDenied, "locked"),
        (.returnValue(.keyFunctionNotPermitted), .permissionDenied, "CKA_WRAP"),
        (.returnValue(.keyUnextractable), .permissionDenied, "CKA_EXTRACTABLE"),
        (.returnValue(.mechanismInvalid), .unsupported, "mechanism"),
        (.returnValue(.wrappingKeyTypeInconsistent), .unsupported, "type or size"),
        (.returnValue(.wrappedKeyInvalid), .invalidInput, "not wrapped by this key"),
        (.returnValue(.deviceRemoved), .unavailable, "device removed"),
        (.returnValue(.tokenWriteProtected), .permissionDenied, "write-protected"),
        (.returnValue(.generalError), .internal, "unexpected"),
        (.tokenNotFound, .notFound, "as the layer said it"),
        (.ambiguousObject, .conflict, "as the layer said it"),
        (.poolTimeout, .unavailable, "as the layer said it"),
        (.moduleNotFound, .unavailable, "/opt/vendor/lib.so"),
        (.notAModule, .unavailable, "not a PKCS#11 module"),
        (.pinSourceUnavailable, .invalidInput, "as the layer said it"),
    ])
    func everyPKCS11ErrorMapsToOneKeystoreCode(cause: PKCS11Error.Code, code: KeystoreError.Code, words: String) {
        // The layer's own reason is kept where it says more than the code (which token, which object).
        let error = KeystoreError(PKCS11Error(cause, function: .C_WrapKey, module: "/opt/vendor/lib.so", reason: "as the layer said it"),
                                  context: "wrap")
        #expect(error.code == code, "\(cause) → \(error.code)")
        #expect(error.reason.hasPrefix("wrap: "), "the context comes first: \(error.reason)")
        #expect(error.reason.contains(words), "\(error.reason)")
    }

    /// The same refusals `cmk hsm probe` gives for these URIs (CLITests), made before a module
    /// is loaded.
    @Test(arguments: [
        ("pkcs11:token=t;object=l1?pin-value=1234", "pin-value"),
        ("pkcs11:token=t;object=l1;objekt=typo", "path attribute \"objekt\""),
        ("pkcs11:token=t;object=l1?vendor-x=1", "query attribute \"vendor-x\""),
        ("pkcs11:token=t;object=l1;slot-id=3", "slot attributes are not accepted"),
    ])
    func referencesTheGatewayCannotHonourAreRefused(text: String, words: String) throws {
        let uri = try PKCS11URI(parsing: text)
        let error = #expect(throws: KeystoreError(.invalidInput, "")) { try PKCS11Token.checkUsable(uri) }
        #expect(error?.reason.contains(words) == true, "\(String(describing: error))")
        #expect(error?.reason.contains("1234") == false, "a PIN is never repeated")
    }

    /// TokenOperationTests' malformed blobs, refused before the token is asked.
    @Test func malformedBlobsAndUnknownMechanismsAreInvalidInput() throws {
        #expect(throws: KeystoreError(.invalidInput, "")) { try PKCS11Token.checkBlob(WrappedKey(mechanism: "CKM_AES_KEY_WRAP_PAD", blob: [1, 2, 3])) }
        #expect(throws: KeystoreError(.invalidInput, "")) { try PKCS11Token.checkBlob(WrappedKey(mechanism: "CKM_AES_KEY_WRAP_PAD", blob: Array(repeating: 0, count: 41))) }
        #expect(throws: KeystoreError(.invalidInput, "")) { try PKCS11Token.checkBlob(WrappedKey(mechanism: "CKM_AES_KEY_WRAP_PAD", blob: Array(repeating: 0, count: 1032))) }
        try PKCS11Token.checkBlob(WrappedKey(mechanism: "CKM_AES_KEY_WRAP_PAD", blob: Array(repeating: 0, count: 40)))
        #expect(throws: KeystoreError(.invalidInput, "")) { try PKCS11Token.mechanism(named: "CKM_NOPE") }
        #expect(throws: KeystoreError(.unsupported, "")) { try PKCS11Token.mechanism(named: "CKM_AES_GCM") }
        #expect(try PKCS11Token.mechanism(named: "CKM_AES_KEY_WRAP_PAD") == .aesKeyWrapPad)
    }
}
