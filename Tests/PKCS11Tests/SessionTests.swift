import CMKCore
import Foundation
@testable import PKCS11
import Testing
import TestSupport

/// Key generation, wrapping and encryption on the `crypto` token, through a real SoftHSM.
@Suite(.serialized) struct SessionTests {
    let fixture = SoftHSMFixture.shared

    func withCryptoSession<T: Sendable>(codes: MechanismCodes = MechanismCodes(), _ body: @escaping @Sendable (Session, SessionPool) throws -> T) async throws -> T {
        let pool = try fixture.pool("crypto", codes: codes)
        do {
            let result = try await pool.withSession { try body($0, pool) }
            await pool.shutdown()
            return result
        } catch {
            await pool.shutdown()
            throw error
        }
    }

    /// Encrypts one block with each key and compares: equal keys without reading either.
    static func sameKey(_ session: Session, _ a: ObjectHandle, _ b: ObjectHandle) throws -> Bool {
        let block = try session.generateRandom(count: 16)
        return try session.encrypt(block, with: a, mechanism: .aesECB) == session.encrypt(block, with: b, mechanism: .aesECB)
    }

    @Test(arguments: [Mechanism.aesKeyWrapPad, .aesKeyWrap])
    func aesWrapUnwrapRoundTrip(mechanism: Mechanism) async throws {
        try await withCryptoSession { session, pool in
            let kek = try pool.resolve(ObjectQuery(label: "l1", objectClass: .secretKey), in: session)
            let key = try session.generateAESKey(bits: 256, usages: [.encrypt(true)], extractable: true)
            defer { try? session.destroyObject(key) }
            let blob = try session.wrapKey(key, with: kek, mechanism: mechanism)
            #expect(blob.count == 40)
            let copy = try session.unwrapKey(blob, with: kek, mechanism: mechanism,
                                             template: [.class(.secretKey), .keyType(.aes), .token(false), .encrypt(true)])
            defer { try? session.destroyObject(copy) }
            #expect(try Self.sameKey(session, key, copy))
        }
    }

    @Test func rsaOAEPWrapUnwrap() async throws {
        try await withCryptoSession { session, _ in
            let (publicKey, privateKey) = try session.generateRSAKeyPair(
                bits: 2048, publicTemplate: [.token(false), .wrap(true), .encrypt(true)],
                privateTemplate: [.token(false), .private(true), .unwrap(true), .decrypt(true), .sensitive(true)])
            defer {
                try? session.destroyObject(publicKey)
                try? session.destroyObject(privateKey)
            }
            let key = try session.generateAESKey(bits: 256, usages: [.encrypt(true)], extractable: true)
            defer { try? session.destroyObject(key) }
            // SoftHSM implements OAEP with SHA-1/MGF1-SHA1 only.
            let mechanism = Mechanism.rsaOAEP(hash: .sha1, label: [])
            let blob = try session.wrapKey(key, with: publicKey, mechanism: mechanism)
            #expect(blob.count == 256)
            let copy = try session.unwrapKey(blob, with: privateKey, mechanism: mechanism,
                                             template: [.class(.secretKey), .keyType(.aes), .token(false), .encrypt(true)])
            defer { try? session.destroyObject(copy) }
            #expect(try Self.sameKey(session, key, copy))
        }
    }

    @Test func aesGCMEncryptDecryptAndTamperDetection() async throws {
        try await withCryptoSession { session, _ in
            let key = try session.generateAESKey(bits: 256, usages: [.encrypt(true), .decrypt(true)])
            defer { try? session.destroyObject(key) }
            let iv = try session.generateRandom(count: 12)
            let aad = Array("tenant-a".utf8)
            let plaintext = Array("application data".utf8)
            let mechanism = Mechanism.aesGCM(iv: iv, aad: aad, tagBits: 128)
            let ciphertext = try session.encrypt(plaintext, with: key, mechanism: mechanism)
            #expect(ciphertext.count == plaintext.count + 16)
            #expect(try session.decrypt(ciphertext, with: key, mechanism: mechanism) == plaintext)
            var tampered = ciphertext
            tampered[0] ^= 0x01
            #expect(throws: PKCS11Error.self) { try session.decrypt(tampered, with: key, mechanism: mechanism) }
            #expect(throws: PKCS11Error.self) {
                try session.decrypt(ciphertext, with: key, mechanism: .aesGCM(iv: iv, aad: Array("tenant-b".utf8), tagBits: 128))
            }
        }
    }

    @Test func tokenAndSessionKeysAreCreatedAndDestroyed() async throws {
        try await withCryptoSession { session, _ in
            let label = "tmp-\(UInt32.random(in: 0...UInt32.max))"
            let tokenKey = try session.generateAESKey(bits: 128, token: true, label: label, id: [0x42], usages: [.encrypt(true)])
            let sessionKey = try session.generateAESKey(bits: 256, token: false, label: label + "-s")
            let found = try session.findObjects([.label(label)])
            #expect(found == [tokenKey])
            let info = try session.info(of: tokenKey)
            #expect(info.isTokenObject && info.valueLength == 16 && info.idHex == "42" && info.sensitive == true)
            #expect(try session.info(of: sessionKey).isTokenObject == false)
            try session.destroyObject(tokenKey)
            try session.destroyObject(sessionKey)
            #expect(try session.findObjects([.label(label)]).isEmpty)
        }
    }

    @Test func sensitiveValuesAreNotReadable() async throws {
        try await withCryptoSession { session, _ in
            let key = try session.generateAESKey(bits: 256, sensitive: true, extractable: false)
            defer { try? session.destroyObject(key) }
            let values = try session.attributes([.value, .valueLen], of: key)
            #expect(values.bytes(.value) == nil, "CKA_VALUE of a sensitive key is refused by the token")
            #expect(values.ulong(.valueLen) == 32)
            #expect(throws: PKCS11Error(.returnValue(.attributeSensitive))) { try session.secretValue(of: key) }
        }
    }

    @Test func mechanismOverrideChangesTheCodeSent() async throws {
        // Map RFC 5649 to the PKCS#11 3.0 code, which SoftHSM lacks: the call must fail with
        // CKR_MECHANISM_INVALID, which proves the override reached the module.
        let codes = MechanismCodes([.aesKeyWrapPad: .aesKeyWrapKWP])
        try await withCryptoSession(codes: codes) { session, pool in
            let kek = try pool.resolve(ObjectQuery(label: "l1", objectClass: .secretKey), in: session)
            let key = try session.generateAESKey(bits: 256, extractable: true)
            defer { try? session.destroyObject(key) }
            #expect(throws: PKCS11Error(.returnValue(.mechanismInvalid))) {
                try session.wrapKey(key, with: kek, mechanism: .aesKeyWrapPad)
            }
            // Mechanisms without an override are unaffected.
            #expect(try session.wrapKey(key, with: kek, mechanism: .aesKeyWrap).count == 40)
        }
    }

    @Test func importedKeyMatchesItsBytes() async throws {
        try await withCryptoSession { session, _ in
            let bytes = SecretBytes(copying: (0..<32).map { UInt8($0) })
            let key = try session.createSecretKey(value: bytes, template: [.class(.secretKey), .keyType(.aes), .token(false),
                                                                           .sensitive(false), .extractable(true), .encrypt(true)])
            defer { try? session.destroyObject(key) }
            #expect(try session.secretValue(of: key).isEqual(to: bytes))
        }
    }
}
