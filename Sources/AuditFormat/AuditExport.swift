import CMKCore
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

