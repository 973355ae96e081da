public import Crypto
import _CryptoExtras

/// AES key wrap as PKCS#11 tokens do it, in software, for `InMemoryToken`: RFC 3394
/// (`CKM_AES_KEY_WRAP`) and RFC 5649, key wrap with padding (`CKM_AES_KEY_WRAP_PAD` on SoftHSM).
/// Built on swift-crypto's AES block function; swift-crypto's own `AES.KeyWrap` does RFC 3394
/// only, and the tests hold this one against it and against both RFCs' vectors.
public enum AESKeyWrap {
    public struct Failure: Error, Equatable, CustomStringConvertible {
        public let description: String
    }

    /// RFC 3394 §2.2.3.1: the default initial value.
    static let defaultIV: [UInt8] = Array(repeating: 0xA6, count: 8)
    /// RFC 5649 §3: the alternative initial value's constant half; the other half is the length.
    static let paddedIVPrefix: [UInt8] = [0xA6, 0x59, 0x59, 0xA6]

    /// RFC 3394: `plaintext` is 16 bytes or more, a multiple of 8.
    public static func wrap(_ plaintext: [UInt8], kek: SymmetricKey) throws -> [UInt8] {
        guard plaintext.count >= 16, plaintext.count % 8 == 0 else {
            throw Failure(description: "RFC 3394 wraps 16 bytes or more in 8-byte blocks, not \(plaintext.count) bytes")
        }
        return try wrapBlocks(iv: defaultIV, plaintext, kek: kek)
    }

    public static func unwrap(_ blob: [UInt8], kek: SymmetricKey) throws -> [UInt8] {
        guard blob.count >= 24, blob.count % 8 == 0 else {
            throw Failure(description: "an RFC 3394 blob is 24 bytes or more in 8-byte blocks, not \(blob.count) bytes")
        }
        let (iv, plaintext) = try unwrapBlocks(blob, kek: kek)
        guard iv == defaultIV else { throw Failure(description: "integrity check failed: the blob is corrupt or was wrapped by another key") }
        return plaintext
    }

    /// RFC 5649: any length from 1 byte.
    public static func wrapPadded(_ plaintext: [UInt8], kek: SymmetricKey) throws -> [UInt8] {
        guard !plaintext.isEmpty, plaintext.count <= Int(UInt32.max) else {
            throw Failure(description: "RFC 5649 wraps 1 byte or more")
        }
        let length = UInt32(plaintext.count)
        let iv = paddedIVPrefix + [UInt8(length >> 24), UInt8((length >> 16) & 0xFF), UInt8((length >> 8) & 0xFF), UInt8(length & 0xFF)]
        let padded = plaintext + Array(repeating: 0, count: (8 - plaintext.count % 8) % 8)
        if padded.count == 8 {
            // §4.1: a single block is encrypted once with AES in ECB mode.
            var block = iv + padded
            try AES.permute(&block, key: kek)
            return block
        }
        return try wrapBlocks(iv: iv, padded, kek: kek)
    }

    public static func unwrapPadded(_ blob: [UInt8], kek: SymmetricKey) throws -> [UInt8] {
        guard blob.count >= 16, blob.count % 8 == 0 else {
            throw Failure(description: "an RFC 5649 blob is 16 bytes or more in 8-byte blocks, not \(blob.count) bytes")
        }
        let iv: [UInt8], padded: [UInt8]
        if blob.count == 16 {
            var block = blob
            try AES.inversePermute(&block, key: kek)
            (iv, padded) = (Array(block[0..<8]), Array(block[8...]))
        } else {
            (iv, padded) = try unwrapBlocks(blob, kek: kek)
        }
        // §3: the constant, a length that the padded data can hold with fewer than 8 bytes
        // of padding, and padding bytes that are zero.
        let corrupt = Failure(description: "integrity check failed: the blob is corrupt or was wrapped by another key")
        guard Array(iv[0..<4]) == paddedIVPrefix else { throw corrupt }
        let length = iv[4..<8].reduce(0) { $0 << 8 | Int($1) }
        guard length > padded.count - 8, length <= padded.count else { throw corrupt }
        guard padded[length...].allSatisfy({ $0 == 0 }) else { throw corrupt }
        return Array(padded[..<length])
    }

    /// RFC 3394 §2.2.1, the index-based form, with initial value `iv`.
    static func wrapBlocks(iv: [UInt8], _ plaintext: [UInt8], kek: SymmetricKey) throws -> [UInt8] {
        var a = iv
        var r = stride(from: 0, to: plaintext.count, by: 8).map { Array(plaintext[$0..<$0 + 8]) }
        let n = r.count
        for j in 0..<6 {
            for i in 0..<n {
                var block = a + r[i]
                try AES.permute(&block, key: kek)
                a = xor(Array(block[0..<8]), counter: UInt64(n * j + i + 1))
                r[i] = Array(block[8..<16])
            }
        }
        return a + r.flatMap { $0 }
    }

    /// RFC 3394 §2.2.2: the initial value found and the plaintext; the caller checks the value.
    static func unwrapBlocks(_ blob: [UInt8], kek: SymmetricKey) throws -> (iv: [UInt8], plaintext: [UInt8]) {
        var a = Array(blob[0..<8])
        var r = stride(from: 8, to: blob.count, by: 8).map { Array(blob[$0..<$0 + 8]) }
        let n = r.count
        for j in (0..<6).reversed() {
            for i in (0..<n).reversed() {
                var block = xor(a, counter: UInt64(n * j + i + 1)) + r[i]
                try AES.inversePermute(&block, key: kek)
                a = Array(block[0..<8])
                r[i] = Array(block[8..<16])
            }
        }
        return (a, r.flatMap { $0 })
    }

    /// `value` XOR the big-endian 64-bit `counter` (RFC 3394's `A ^ t`).
    static func xor(_ value: [UInt8], counter: UInt64) -> [UInt8] {
        (0..<8).map { value[$0] ^ UInt8(truncatingIfNeeded: counter >> (56 - 8 * UInt64($0))) }
    }
}
