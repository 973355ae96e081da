import Foundation
import Testing
@testable import KSI
import PKCS11
import TestSupport

@Suite struct HSMProfileTests {
    @Test func everyShippedProfileIsValid() throws {
        let directory = SoftHSMFixture.repositoryRoot + "/HSMConfig"
        let files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".json") }
        #expect(files.count >= 4, "SoftHSM and at least three vendor profiles")
        for file in files {
            let profile = try HSMProfile.load(from: "\(directory)/\(file)")
            #expect(profile.name + ".json" == file)
            #expect(!profile.notes.isEmpty, "\(file) documents its quirks")
            _ = try PKCS11Token.Configuration(profile: profile)
        }
        let softhsm = try HSMProfile.load(from: "\(directory)/softhsm2.json")
        #expect(softhsm.module == "/usr/lib/softhsm/libsofthsm2.so")
    }

    static let valid = """
    {"name":"x","description":"d","module":"/usr/lib/x.so","token":{"label":"t"},"pinSource":"env:PIN",
     "pool":{"maxSessions":4,"waitTimeoutMilliseconds":1000},"wrapMechanisms":["CKM_AES_KEY_WRAP_PAD"],
     "mechanismOverrides":{"CKM_AES_KEY_WRAP_PAD":"0x210B"},"notes":[]}
    """

    @Test func overridesBecomeCodes() throws {
        let profile = try HSMProfile.parse(Data(Self.valid.utf8))
        #expect(try profile.mechanismCodes().code(for: .aesKeyWrapPad) == .aesKeyWrapKWP)
        #expect(try profile.mechanismCodes().code(for: .aesKeyWrap) == .aesKeyWrap)
    }

    @Test(arguments: [
        (#""module":"/usr/lib/x.so""#, #""module":"lib/x.so""#, "absolute path"),
        (#""token":{"label":"t"}"#, #""token":{}"#, "label or a serial"),
        (#""pinSource":"env:PIN""#, #""pinSource":"123456""#, "pinSource"),
        (#""maxSessions":4"#, #""maxSessions":0"#, "maxSessions"),
        (#""CKM_AES_KEY_WRAP_PAD"]"#, #""CKM_DES3_ECB"]"#, "not supported"),
        (#""0x210B""#, #""CKM_BOGUS""#, "unknown mechanism"),
        (#""notes":[]"#, #""notes":[],"pin":"1234""#, "unknown keys"),
        (#""name":"x","#, "", "required key"),
        (#""maxSessions":4"#, #""maxSesions":4"#, "unknown keys in pool"),
        (#""token":{"label":"t"}"#, #""token":{"label":"t","lable":"u"}"#, "unknown keys in token"),
        (#""token":{"label":"t"}"#, #""token":{"label":""}"#, "may not be empty"),
        (#""pinSource":"env:PIN""#, #""pinSource":"file:pin.txt""#, "absolute"),
    ])
    func invalidProfilesAreRefusedWithAReason(original: String, replacement: String, reason: String) {
        let text = Self.valid.replacingOccurrences(of: original, with: replacement)
        let error = #expect(throws: KeystoreError(.invalidInput, "")) { try HSMProfile.parse(Data(text.utf8)) }
        #expect(error?.reason.contains(reason) == true, "\(error?.reason ?? "") should mention \(reason)")
    }

    @Test func notJSONIsRefused() {
        #expect(throws: KeystoreError(.invalidInput, "")) { try HSMProfile.parse(Data("module = x".utf8)) }
        #expect(throws: KeystoreError(.invalidInput, "")) { try HSMProfile.load(from: "/nonexistent/profile.json") }
    }
}
