import CMKCore
import Crypto
import Foundation
import KSI
import Testing
import TestSupport

/// The in-memory keystore at unit speed: no module, no token directory, no process. Its probe
/// reports the PKCS#11 driver's checks, and fails where and why a real token fails; its wraps
/// are RFC 5649 and RFC 3394, held against the RFCs' own vectors and swift-crypto.
struct InMemoryTokenTests {
    static let passingChecks = ["token", "login", "key_found", "key_type", "key_usage", "mechanism",
                                "test_key", "wrap", "unwrap", "compare", "cleanup"]

    @Test func theProbePassesWithTheDriversChecksAndLeavesNothingBehind() async {
        let token = InMemoryToken()
        let l1 = token.addKey("l1", id: [0x01])
        let before = token.objectList
        let report = await token.probe(l1)
        #expect(report.passed && report.failure == nil)
        #expect(report.checks.map(\.name) == Self.passingChecks)
        #expect(report.checks.allSatisfy { $0.passed })
        #expect(report.mechanism == "CKM_AES_KEY_WRAP_PAD")
        #expect(report.provider == .pkcs11 && report.token == "memory" && report.key == l1.description)
        #expect(token.objectList == before)
        #expect(token.useCount(of: l1) == 1)
    }

    /// Each way a keystore fails, where the report shows it, with its code and the words the
    /// PKCS#11 driver uses.
    @Test(arguments: [
        (InMemoryToken.Fault.unavailable, "token", KeystoreError.Code.unavailable, "device removed"),
        (.loginRefused, "login", .permissionDenied, "wrong PIN"),
        (.keyNotFound, "key_found", .notFound, "cmk hsm keys memory"),
        (.unsupportedMechanism, "mechanism", .unsupported, "supports none of the wrap mechanisms"),
        (.permissionDenied(.wrap), "wrap", .permissionDenied, "do not permit this operation"),
        (.permissionDenied(.unwrap), "unwrap", .permissionDenied, "do not permit this operation"),
        (.unwrapReturnsOtherBytes, "compare", .internal, "does not round-trip"),
    ])
    func aFailingProbeSaysWhereAndWhy(fault: InMemoryToken.Fault, check: String, code: KeystoreError.Code, words: String) async {
        let token = InMemoryToken()
        let l1 = token.addKey("l1")
        token.inject(fault)
        let report = await token.probe(l1)
        #expect(!report.passed)
        #expect(report.checks.last?.name == check && report.checks.last?.passed == false, "\(report.checks)")
        #expect(report.checks.dropLast().allSatisfy { $0.passed }, "every check before the failing one passed")
        #expect(Array(report.checks.map(\.name)) == Array(Self.passingChecks.prefix(report.checks.count)), "the driver's order")
        #expect(report.failure?.code == code)
        #expect(report.failure?.reason.contains(words) == true, "\(String(describing: report.failure))")
        #expect(report.error == KeystoreError(code, ""))

        token.clear(fault)
        #expect(await token.probe(l1).passed, "the token works again once the fault is gone")
    }

    @Test func theDriversLowLevelCauseIsKeptAsDetail() async {
        let token = InMemoryToken()
        let l1 = token.addKey("l1")
        token.inject(.loginRefused)
        let report = await token.probe(l1)
        #expect(report.checks.map(\.name) == ["token", "login"])
        #expect(report.failure?.detail?.contains("C_Login failed: CKR_PIN_INCORRECT") == true, "\(String(describing: report.failure))")
        // Every later operation is refused the same way, as the pool refuses after a wrong PIN.
        await #expect(throws: KeystoreError(.permissionDenied, "")) { try await token.wrap(SecretBytes(count: 32), with: l1) }
        #expect(await token.status().state == .loginRefused)
    }

    @Test func keysThatCannotBeL1KeysAreExplained() async {
        let token = InMemoryToken()
        token.addKey("nowrap", canWrap: false)
        token.addKey("nounwrap", canUnwrap: false)
        token.addObject("rsa-root", objectClass: "private-key", keyType: "CKK_RSA")
        token.addObject("hmac", objectClass: "secret-key", keyType: "CKK_GENERIC_SECRET")

        let noWrap = await token.probe(token.reference("nowrap"))
        #expect(noWrap.checks.last?.name == "key_usage" && noWrap.failure?.code == .permissionDenied)
        #expect(noWrap.failure?.reason.contains("lacks CKA_WRAP:") == true, "\(String(describing: noWrap.failure))")
        let noUnwrap = await token.probe(token.reference("nounwrap"))
        #expect(noUnwrap.failure?.reason.contains("lacks CKA_UNWRAP") == true)

        let rsa = await token.probe(token.reference("rsa-root"))
        #expect(rsa.checks.last?.name == "key_found" && rsa.failure?.code == .notFound)
        #expect(rsa.failure?.reason.contains("there is a private-key object with that name: the L1 key must be a secret key") == true)

        let hmac = await token.probe(token.reference("hmac"))
        #expect(hmac.checks.last?.name == "key_type" && hmac.failure?.code == .unsupported)
        #expect(hmac.failure?.reason.contains("must be an AES secret key") == true)

        let missing = await token.probe(token.reference("nope"))
        #expect(missing.checks.map(\.name) == ["token", "login", "key_found"] && missing.failure?.code == .notFound)
    }

    @Test func referencesTheDriverRefusesAreRefusedBeforeAnyCheck() async throws {
        let token = InMemoryToken()
        token.addKey("l1")
        for text in ["pkcs11:token=memory;object=l1?pin-value=1234", "pkcs11:token=other;object=l1", "pkcs11:token=memory",
                     "pkcs11:token=memory;object=l1;type=private", "arn:aws:kms:eu-central-1:111122223333:alias/l1"] {
            let report = await token.probe(try KeyReference(parsing: text))
            #expect(report.checks.map(\.name) == ["key_reference"] && report.failure?.code == .invalidInput, "\(text): \(report.checks)")
        }
    }

    @Test func twoKeysUnderOneNameAreAConflict() async {
        let token = InMemoryToken()
        token.addKey("twin", id: [0x01])
        token.addKey("twin", id: [0x02])
        let report = await token.probe(token.reference("twin"))
        #expect(report.checks.last?.name == "key_found" && report.failure?.code == .conflict)
        #expect(await token.probe(token.reference("twin", id: [0x02])).passed, "label and id name one key")
    }

    @Test(arguments: [16, 24, 32])
    func wrapAndUnwrapRoundTrip(length: Int) async throws {
        let token = InMemoryToken()
        let l1 = token.addKey("l1")
        let material = SecretBytes(copying: (0..<length).map { UInt8(truncatingIfNeeded: $0 * 7 + 3) })
        let wrapped = try await token.wrap(material, with: l1)
        #expect(wrapped.mechanism == "CKM_AES_KEY_WRAP_PAD")
        #expect(wrapped.blob.count == length + 8, "RFC 5649 adds one block to a key of whole blocks")
        #expect(try await token.unwrap(wrapped, with: l1).isEqual(to: material))

        let other = token.addKey("other")
        let error = await #expect(throws: KeystoreError(.invalidInput, "")) { try await token.unwrap(wrapped, with: other) }
        #expect(error?.reason.contains("corrupt or was wrapped by another key") == true)
        var tampered = wrapped
        tampered.blob[5] ^= 0x40
        await #expect(throws: KeystoreError(.invalidInput, "")) { try await token.unwrap(tampered, with: l1) }
    }

    @Test func theUnpaddedMechanismIsRFC3394() async throws {
        let token = InMemoryToken(mechanisms: [.aesKeyWrap])
        let material = (0..<32).map { UInt8($0) }
        let kekBytes = (0..<32).map { UInt8(255 - $0) }
        let l1 = token.addKey("l1", material: kekBytes)
        let wrapped = try await token.wrap(SecretBytes(copying: material), with: l1)
        #expect(wrapped.mechanism == "CKM_AES_KEY_WRAP")
        let reference = try AES.KeyWrap.wrap(SymmetricKey(data: material), using: SymmetricKey(data: kekBytes))
        #expect(wrapped.blob == Array(reference), "the same blob as swift-crypto's RFC 3394")
        #expect(try await token.unwrap(wrapped, with: l1).withUnsafeBytes { Array($0) } == material)
        // A token that does not offer the blob's mechanism cannot unwrap it.
        let padOnly = InMemoryToken(mechanisms: [.aesKeyWrapPad])
        let same = padOnly.addKey("l1", material: kekBytes)
        await #expect(throws: KeystoreError(.unsupported, "")) { try await padOnly.unwrap(wrapped, with: same) }
    }

    @Test func badInputIsRefusedAsTheDriverRefusesIt() async throws {
        let token = InMemoryToken()
        let l1 = token.addKey("l1")
        await #expect(throws: KeystoreError(.invalidInput, "")) { try await token.wrap(SecretBytes(count: 20), with: l1) }
        await #expect(throws: KeystoreError(.invalidInput, "")) {
            try await token.unwrap(WrappedKey(mechanism: "CKM_AES_KEY_WRAP_PAD", blob: [1, 2, 3]), with: l1)
        }
        await #expect(throws: KeystoreError(.invalidInput, "")) {
            try await token.unwrap(WrappedKey(mechanism: "CKM_NOPE", blob: Array(repeating: 0, count: 40)), with: l1)
        }
    }

    @Test func operationsFailAsTheKeystoreDoes() async throws {
        let token = InMemoryToken()
        let l1 = token.addKey("l1")
        let wrapped = try await token.wrap(SecretBytes(count: 32), with: l1)
        token.inject(.unavailable)
        await #expect(throws: KeystoreError(.unavailable, "")) { try await token.unwrap(wrapped, with: l1) }
        #expect(await token.status().state == .unavailable)
        token.clearFaults()
        token.inject(.permissionDenied(.unwrap))
        await #expect(throws: KeystoreError(.permissionDenied, "")) { try await token.unwrap(wrapped, with: l1) }
        #expect(try await token.wrap(SecretBytes(count: 32), with: l1).blob.count == 40, "wrapping is still allowed")
        token.clearFaults()
        token.removeObjects(labelled: "l1")
        await #expect(throws: KeystoreError(.notFound, "")) { try await token.unwrap(wrapped, with: l1) }
    }

    @Test func generatedKeysExistOnlyWrappedAndDiffer() async throws {
        let token = InMemoryToken()
        let l1 = token.addKey("l1")
        let before = token.objectList
        let first = try await token.generateWrappedKey(with: l1)
        let second = try await token.generateWrappedKey(with: l1)
        #expect(first.blob != second.blob)
        #expect(try await token.unwrap(first, with: l1).count == 32)
        #expect(token.objectList == before, "nothing was stored")
    }

    @Test func keyListingMarksUsableL1Keys() async throws {
        let token = InMemoryToken()
        token.addKey("l1", id: [0x01])
        token.addKey("nowrap", canWrap: false)
        let keys = try await token.keys()
        #expect(keys.map(\.label) == ["l1", "nowrap"])
        #expect(keys[0].usableAsL1 && !keys[1].usableAsL1)
        #expect(try PKCS11URI(parsing: keys[0].uri).id == [0x01])
    }
}

/// The software key wrap the in-memory token uses, against the RFCs' test vectors.
struct AESKeyWrapTests {
    static func bytes(_ hex: String) -> [UInt8] { Hex.decode(hex.replacingOccurrences(of: " ", with: "").lowercased())! }

    /// RFC 3394 §4.1 and §4.6.
    @Test func rfc3394Vectors() throws {
        let kek128 = SymmetricKey(data: Self.bytes("000102030405060708090A0B0C0D0E0F"))
        let data128 = Self.bytes("00112233445566778899AABBCCDDEEFF")
        let wrapped128 = Self.bytes("1FA68B0A8112B447 AEF34BD8FB5A7B82 9D3E862371D2CFE5")
        #expect(try AESKeyWrap.wrap(data128, kek: kek128) == wrapped128)
        #expect(try AESKeyWrap.unwrap(wrapped128, kek: kek128) == data128)

        let kek256 = SymmetricKey(data: Self.bytes("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F"))
        let data256 = Self.bytes("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F")
        let wrapped256 = Self.bytes("28C9F404C4B810F4 CBCCB35CFB87F826 3F5786E2D80ED326 CBC7F0E71A99F43B FB988B9B7A02DD21")
        #expect(try AESKeyWrap.wrap(data256, kek: kek256) == wrapped256)
        #expect(try AESKeyWrap.unwrap(wrapped256, kek: kek256) == data256)
        var tampered = wrapped256
        tampered[0] ^= 1
        #expect(throws: AESKeyWrap.Failure.self) { try AESKeyWrap.unwrap(tampered, kek: kek256) }
    }

    /// RFC 5649 §6: a 20-byte key (wrapped in blocks) and a 7-byte key (one AES block).
    @Test func rfc5649Vectors() throws {
        let kek = SymmetricKey(data: Self.bytes("5840df6e29b02af1 ab493b705bf16ea1 ae8338f4dcc176a8"))
        let twenty = Self.bytes("c37b7e6492584340 bed1220780894115 5068f738")
        let twentyWrapped = Self.bytes("138bdeaa9b8fa7fc 61f97742e72248ee 5ae6ae5360d1ae6a 5f54f373fa543b6a")
        #expect(try AESKeyWrap.wrapPadded(twenty, kek: kek) == twentyWrapped)
        #expect(try AESKeyWrap.unwrapPadded(twentyWrapped, kek: kek) == twenty)
        let seven = Self.bytes("466f7250617369")
        let sevenWrapped = Self.bytes("afbeb0f07dfbf541 9200f2ccb50bb24f")
        #expect(try AESKeyWrap.wrapPadded(seven, kek: kek) == sevenWrapped)
        #expect(try AESKeyWrap.unwrapPadded(sevenWrapped, kek: kek) == seven)
    }

    @Test func rfc5649RefusesWhatFailsItsChecks() throws {
        let kek = SymmetricKey(size: .bits256)
        let other = SymmetricKey(size: .bits256)
        for length in [1, 7, 8, 9, 16, 20, 32] {
            let data = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            let blob = try AESKeyWrap.wrapPadded(data, kek: kek)
            #expect(blob.count == (length + 7) / 8 * 8 + 8)
            #expect(try AESKeyWrap.unwrapPadded(blob, kek: kek) == data)
            #expect(throws: AESKeyWrap.Failure.self) { try AESKeyWrap.unwrapPadded(blob, kek: other) }
            var tampered = blob
            tampered[tampered.count - 1] ^= 0x80
            #expect(throws: AESKeyWrap.Failure.self) { try AESKeyWrap.unwrapPadded(tampered, kek: kek) }
        }
        // An RFC 3394 blob is not an RFC 5649 one (the initial value differs).
        let unpadded = try AESKeyWrap.wrap(Array(repeating: 7, count: 32), kek: kek)
        #expect(throws: AESKeyWrap.Failure.self) { try AESKeyWrap.unwrapPadded(unpadded, kek: kek) }
    }
}
