import CMKCore
import Foundation
@testable import KSI
import PKCS11
import Testing
import TestSupport

/// Wrap and unwrap through the KSI on the `crypto` token, and interoperability with the
/// standard mechanism outside the KSI.
@Suite(.serialized) struct TokenOperationTests {
    let fixture = SoftHSMFixture.shared
    let keystore = PKCS11Keystore()

    var l1: KeyReference { .pkcs11(fixture.l1URI("crypto")) }
    func token() async throws -> PKCS11Token { try await keystore.token(for: fixture.l1URI("crypto")) }

    @Test func wrapsAndUnwrapsKeyMaterial() async throws {
        let token = try await token()
        let material = SecretBytes(copying: (0..<32).map { UInt8(truncatingIfNeeded: $0 * 7 + 3) })
        let wrapped = try await token.wrap(material, with: l1)
        #expect(wrapped.mechanism == "CKM_AES_KEY_WRAP_PAD")
        #expect(wrapped.blob.count == 40)
        let unwrapped = try await token.unwrap(wrapped, with: l1)
        #expect(unwrapped.isEqual(to: material))
    }

    @Test func generatedKeysExistOnlyWrapped() async throws {
        let token = try await token()
        let before = try await fixture.objectList("crypto")
        let wrapped = try await token.generateWrappedKey(with: l1)
        try await token.verifyUnwrap(wrapped, with: l1)
        let other = try await token.generateWrappedKey(with: l1)
        #expect(wrapped.blob != other.blob)
        #expect(try await fixture.objectList("crypto") == before, "generated keys were destroyed after wrapping")
    }

    @Test func corruptBlobIsInvalidInputAndChangesNothing() async throws {
        let token = try await token()
        let before = try await fixture.objectList("crypto")
        var wrapped = try await token.generateWrappedKey(with: l1)
        wrapped.blob[5] ^= 0x40
        let error = await #expect(throws: KeystoreError(.invalidInput, "")) { try await token.unwrap(wrapped, with: l1) }
        #expect(error?.reason.contains("corrupt") == true)
        await #expect(throws: KeystoreError(.invalidInput, "")) { try await token.verifyUnwrap(wrapped, with: l1) }
        await #expect(throws: KeystoreError(.invalidInput, "")) {
            try await token.unwrap(WrappedKey(mechanism: "CKM_AES_KEY_WRAP_PAD", blob: [1, 2, 3]), with: l1)
        }
        await #expect(throws: KeystoreError(.invalidInput, "")) {
            try await token.unwrap(WrappedKey(mechanism: "CKM_NOPE", blob: Array(repeating: 0, count: 40)), with: l1)
        }
        #expect(try await fixture.objectList("crypto") == before)
        // The token keeps working.
        try await token.verifyUnwrap(try await token.generateWrappedKey(with: l1), with: l1)
    }

    @Test func keyListingMarksUsableL1Keys() async throws {
        let keys = try await token().keys()
        let l1 = try #require(keys.first { $0.label == "l1" })
        #expect(l1.usableAsL1)
        #expect(l1.keyType == "CKK_AES" && l1.bits == 256 && l1.canWrap == true)
        #expect(l1.uri.contains("token=crypto") && l1.uri.contains("object=l1"))
        #expect(try PKCS11URI(parsing: l1.uri).id == [0x01])
    }

    /// The script provisions L1 with pkcs11-tool; the KSI uses it. And a blob the KSI wraps
    /// unwraps with RFC 5649 outside it (Python's `cryptography`), and the reverse.
    /// A KEK on the `crypto` token whose value may be read, so that software outside the token
    /// can use it: its URI and its value.
    func interopKEK() async throws -> (KeyReference, [UInt8]) {
        let pool = try fixture.pool("crypto", maxSessions: 1)
        let kekLabel = "interop-kek"
        let kekValue = try await pool.withSession { session -> [UInt8] in
            let existing = try session.findObjects([.label(kekLabel)])
            let kek = try existing.first ?? session.generateAESKey(
                bits: 256, token: true, label: kekLabel, id: [0x09],
                usages: [.wrap(true), .unwrap(true), .encrypt(true)], sensitive: false, extractable: true)
            return try session.secretValue(of: kek).withUnsafeBytes { Array($0) }
        }
        await pool.shutdown()
        var uri = fixture.l1URI("crypto", key: kekLabel)
        uri.type = nil
        return (.pkcs11(uri), kekValue)
    }

    @Test func interoperatesWithStandardRFC5649() async throws {
        let (kek, kekValue) = try await interopKEK()
        let token = try await token()

        let material = (0..<32).map { UInt8(255 - $0) }
        let wrapped = try await token.wrap(SecretBytes(copying: material), with: kek)
        let hex = { (bytes: [UInt8]) in bytes.map { String(format: "%02x", $0) }.joined() }
        let script = """
        import sys
        from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding, aes_key_wrap_with_padding
        kek = bytes.fromhex(sys.argv[1])
        print(aes_key_unwrap_with_padding(kek, bytes.fromhex(sys.argv[2])).hex())
        print(aes_key_wrap_with_padding(kek, bytes.fromhex(sys.argv[3])).hex())
        """
        let result = try SoftHSMFixture.run("/usr/bin/env", ["python3", "-c", script, hex(kekValue), hex(wrapped.blob), hex(material.reversed())])
        #expect(result.status == 0, "python3 with cryptography: \(result.error)")
        let lines = result.output.split(separator: "\n").map(String.init)
        try #require(lines.count == 2)
        #expect(lines[0] == hex(material), "the KSI's blob unwraps with RFC 5649 outside the KSI")

        let outside = stride(from: 0, to: lines[1].count, by: 2).map { offset -> UInt8 in
            let start = lines[1].index(lines[1].startIndex, offsetBy: offset)
            return UInt8(lines[1][start..<lines[1].index(start, offsetBy: 2)], radix: 16)!
        }
        let unwrapped = try await token.unwrap(WrappedKey(mechanism: "CKM_AES_KEY_WRAP_PAD", blob: outside), with: kek)
        #expect(unwrapped.withUnsafeBytes { Array($0) } == material.reversed(), "a blob wrapped outside unwraps in the KSI")
    }

    /// The unit tests' in-memory token wraps as SoftHSM does: with the same KEK, the blobs are
    /// byte for byte the same (AES key wrap is deterministic), each unwraps the other's, and
    /// the two probes make the same checks.
    @Test func theInMemoryTokenWrapsAsSoftHSMDoes() async throws {
        let (kek, kekValue) = try await interopKEK()
        let token = try await token()
        let memory = InMemoryToken(label: "crypto")
        let memoryKEK = memory.addKey("interop-kek", material: kekValue)
        for length in [16, 24, 32] {
            let material = SecretBytes(copying: (0..<length).map { UInt8(truncatingIfNeeded: $0 * 3 + 1) })
            let fromHSM = try await token.wrap(material, with: kek)
            let fromMemory = try await memory.wrap(material, with: memoryKEK)
            #expect(fromHSM == fromMemory, "\(length)-byte key")
            #expect(try await memory.unwrap(fromHSM, with: memoryKEK).isEqual(to: material))
            #expect(try await token.unwrap(fromMemory, with: kek).isEqual(to: material))
        }
        let hsmReport = await token.probe(kek)
        let memoryReport = await memory.probe(memoryKEK)
        #expect(hsmReport.passed && memoryReport.passed)
        #expect(hsmReport.checks.map(\.name) == memoryReport.checks.map(\.name))
        #expect(hsmReport.mechanism == memoryReport.mechanism)
    }

    @Test func concurrentOperationsThroughTheKSI() async throws {
        let token = try await token()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<16 {
                group.addTask {
                    for _ in 0..<10 {
                        let wrapped = try await token.generateWrappedKey(with: l1)
                        try await token.verifyUnwrap(wrapped, with: l1)
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(token.pool.statistics.inUse == 0)
    }

    @Test func callersOnTheTokenExecutorRunInline() async throws {
        let token = try await token()
        let l1 = self.l1
        let wrapped = try await withTaskExecutorPreference(token.executor) {
            #expect(token.executor.isCurrent)
            return try await token.generateWrappedKey(with: l1)
        }
        try await token.verifyUnwrap(wrapped, with: l1)
    }
}

/// The Luna quirk switch: with it, `CKA_VALUE_LEN` reaches `C_UnwrapKey`, which SoftHSM refuses
/// (`CKR_ATTRIBUTE_READ_ONLY`); without it, unwrap works. The refusal proves the switch acts.
@Suite(.serialized) struct UnwrapQuirkTests {
    let fixture = SoftHSMFixture.shared

    @Test func valueLengthInUnwrapTemplatesFollowsTheProfile() async throws {
        let keystore = PKCS11Keystore()
        var profile = fixture.profile("crypto")
        profile.name = "luna-like"
        profile.unwrapTemplateValueLength = true
        let quirky = try await keystore.token(profile: profile)
        var uri = PKCS11URI()
        uri.token = "crypto"
        uri.object = "l1"
        let l1 = KeyReference.pkcs11(uri)
        let wrapped = try await quirky.generateWrappedKey(with: l1)
        let before = try await fixture.objectList("crypto")
        await #expect(throws: KeystoreError(.invalidInput, "")) { try await quirky.verifyUnwrap(wrapped, with: l1) }
        let report = await quirky.probe(l1)
        #expect(report.checks.last?.name == "unwrap" && !report.passed)
        #expect(try await fixture.objectList("crypto") == before, "a refused unwrap leaves nothing behind")

        let plain = try await keystore.token(profile: fixture.profile("crypto"))
        try await plain.verifyUnwrap(wrapped, with: l1)
    }
}
