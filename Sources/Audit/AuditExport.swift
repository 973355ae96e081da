import Crypto
import Foundation

/// The export file: JSON Lines, every line itself RFC 8785 JSON (Docs/AuditFormat.md §5).
///
///     {"header":{"format":"openkcm-audit-export/1","key":"<verifier key>","origin":"…","start":{"chain":"<hex>","frontier":["<hex>",…],"size":N}}}
///     {"chain":"<hex>","record":{…canonical record…}}
///     {"checkpoint":"<signed note>"}
///
/// A checkpoint line follows the record that brings the tree to its size (or the header, for a
/// checkpoint at the start size). `start` lets an export that begins after record 0 be verified
/// on its own: the frontier (perfect subtree roots) and chain value of the records before it,
/// authenticated by the first signed checkpoint that follows.
public enum AuditExport {
    public static let format = "openkcm-audit-export/1"
    /// The chain value before record 0.
    public static let initialChain: Hash = Array(repeating: 0, count: 32)

    public static let recordPrefix = Array(#"{"chain":""#.utf8)
    static let recordInfix = Array(#"","record":"#.utf8)
    public static let checkpointPrefix = Array(#"{"checkpoint":"#.utf8)
    static let headerPrefix = Array(#"{"header":"#.utf8)

    /// chain(k) = SHA-256(0x02 ‖ chain(k−1) ‖ leaf hash(k)): lets a verifier name the first
    /// altered record between two checkpoints.
    public static func chain(_ previous: Hash, _ leaf: Hash) -> Hash {
        Merkle.prefixed(0x02, previous, leaf)
    }

    public static func headerLine(origin: String, key: VerifierKey, start: MerkleFrontier, startChain: Hash) throws -> [UInt8] {
        let header: JSONValue = .object(["header": .object([
            "format": .string(format),
            "origin": .string(origin),
            "key": .string(key.description),
            "start": .object([
                "size": .integer(Int64(start.size)),
                "frontier": .array(start.hashes.map { .string(Hex.encode($0)) }),
                "chain": .string(Hex.encode(startChain)),
            ]),
        ])])
        return try header.canonicalBytes()
    }

    public static func recordLine(chain: Hash, body: [UInt8]) -> [UInt8] {
        recordPrefix + Array(Hex.encode(chain).utf8) + recordInfix + body + [UInt8(ascii: "}")]
    }

    public static func checkpointLine(_ checkpoint: SignedCheckpoint) throws -> [UInt8] {
        try JSONValue.object(["checkpoint": .string(checkpoint.text)]).canonicalBytes()
    }
}

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
    nonisolated(unsafe) static let nibbles: UnsafePointer<UInt8> = {
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
    static func decode(_ text: UnsafePointer<UInt8>, count: Int, into out: UnsafeMutableRawBufferPointer) -> Bool {
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
