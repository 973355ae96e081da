/// Lowercase hexadecimal, the one form used everywhere (audit chain hashes, fingerprints,
/// digests in responses); decoding refuses anything else.
public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var out: [UInt8] = []
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Each byte's value as a lowercase hex digit, or 0xFF. Built once and never written
    /// after (hence `nonisolated(unsafe)`); read through a pointer on the verifier's hot path.
    nonisolated(unsafe) package static let nibbles: UnsafePointer<UInt8> = {
        let table = UnsafeMutablePointer<UInt8>.allocate(capacity: 256)
        for c in 0..<256 {
            table[c] = switch UInt8(c) {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt8(c) - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt8(c) - UInt8(ascii: "a") + 10
            default: 0xFF
            }
        }
        return UnsafePointer(table)
    }()

    /// Decodes `text` (lowercase hex, an even count) into `out` (half as long); false if any
    /// character is not a lowercase hex digit.
    package static func decode(_ text: UnsafePointer<UInt8>, count: Int, into out: UnsafeMutableRawBufferPointer) -> Bool {
        let table = nibbles
        var invalid: UInt8 = 0
        for i in 0..<(count / 2) {
            let high = table[Int(text[2 * i])], low = table[Int(text[2 * i + 1])]
            invalid |= (high | low) & 0xF0
            out[i] = high << 4 | (low & 0x0F)
        }
        return invalid == 0
    }

    /// Lowercase hex only (the canonical form).
    public static func decode(_ text: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        guard text.count % 2 == 0 else { return nil }
        guard let base = text.baseAddress else { return [] }
        var valid = true
        let out = [UInt8](unsafeUninitializedCapacity: text.count / 2) { buffer, count in
            valid = decode(base, count: text.count, into: UnsafeMutableRawBufferPointer(buffer))
            count = text.count / 2
        }
        return valid ? out : nil
    }

    public static func decode(_ text: some Collection<UInt8>) -> [UInt8]? {
        Array(text).withUnsafeBufferPointer { decode($0) }
    }

    public static func decode(_ text: String) -> [UInt8]? { Array(text.utf8).withUnsafeBufferPointer { decode($0) } }
}
