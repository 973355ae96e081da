import CMKCore
import PKCS11

extension PKCS11Token {
    /// What a known-answer test said about one wrap mechanism on this token.
    enum KnownAnswer: Sendable, Equatable {
        /// The module produced the standard's bytes.
        case matches
        /// The module produced other bytes: the code is not the algorithm its name says.
        case differs(blobLength: Int)
        /// The test could not run (the token refuses to import a key of known value, or to wrap
        /// with a session key); the mechanism is taken on the profile's word.
        case notVerifiable(String)

        /// Words for the probe's `mechanism` check, after the mechanism's name.
        var summary: String {
            switch self {
            case .matches: return "passed the known-answer test"
            case .differs(let length): return "failed the known-answer test (a \(length)-byte blob that differs from the standard's)"
            case .notVerifiable(let why): return "not verified by a known-answer test: \(why)"
            }
        }
    }

    /// A fixed KEK and key, and the blobs RFC 3394 and RFC 5649 make of them. The RFC 3394 blob
    /// is the one in RFC 3394 §4.6; the RFC 5649 blob of the same 32-byte key was computed with
    /// OpenSSL's `id-aes256-wrap-pad` and is held against SoftHSM's 0x210A and NSS's 0x210B by
    /// the tests. Neither key is a secret: they exist only to recognise the algorithm.
    static let knownAnswerKEK: [UInt8] = Array(0x00...0x1F)
    static let knownAnswerKey: [UInt8] = [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF]
        + Array(0x00...0x0F)
    static let knownAnswerBlobs: [MechanismType: [UInt8]] = [
        .aesKeyWrap: hexBytes("28c9f404c4b810f4cbccb35cfb87f8263f5786e2d80ed326cbc7f0e71a99f43bfb988b9b7a02dd21"),
        .aesKeyWrapPad: hexBytes("4a8029243027353b0694cf1bd8fc745bb0ce8a739b19b1960b12426d4c39cfeda926d103ab34e9f6"),
    ]

    private static func hexBytes(_ text: String) -> [UInt8] {
        var bytes: [UInt8] = []
        var index = text.startIndex
        while index < text.endIndex {
            let next = text.index(index, offsetBy: 2)
            bytes.append(UInt8(text[index..<next], radix: 16)!)
            index = next
        }
        return bytes
    }

    /// Wraps the known key with the known KEK using `type` (sent as the profile's code for it)
    /// and compares with the standard's blob. This is what keeps a module whose `0x210A` is
    /// another algorithm (NSS: PKCS #7-style padding to a multiple of 8 bytes then RFC 3394,
    /// 48 bytes for a 32-byte key) from being taken for RFC 5649: its blobs would round-trip on
    /// that module and be unreadable on every other. Both keys are session objects, destroyed
    /// before returning.
    static func knownAnswer(_ type: MechanismType, in session: Session) -> KnownAnswer {
        guard let expected = knownAnswerBlobs[type] else { return .notVerifiable("no known answer for \(type)") }
        let template: [Attribute] = sessionKeyTemplate
        let kek: ObjectHandle
        do {
            kek = try session.createSecretKey(value: SecretBytes(copying: knownAnswerKEK),
                                              template: template + [.sensitive(true), .wrap(true), .unwrap(true), .encrypt(true)])
        } catch {
            return .notVerifiable("the token does not import a key of known value (\((error as? PKCS11Error)?.code.description ?? "error"))")
        }
        defer { destroy(kek, in: session) }
        let key: ObjectHandle
        do {
            key = try session.createSecretKey(value: SecretBytes(copying: knownAnswerKey),
                                              template: template + [.sensitive(false), .extractable(true), .encrypt(true)])
        } catch {
            return .notVerifiable("the token does not import a key of known value (\((error as? PKCS11Error)?.code.description ?? "error"))")
        }
        defer { destroy(key, in: session) }
        let blob: [UInt8]
        do {
            blob = try session.wrapKey(key, with: kek, mechanism: try mechanism(type))
        } catch {
            return .notVerifiable("the token does not wrap with a session key (\((error as? PKCS11Error)?.code.description ?? "error"))")
        }
        return blob == expected ? .matches : .differs(blobLength: blob.count)
    }
}
