import CMKCore
import CSHA256

/// A SHA-256 value held inline (no heap allocation): the verifier's hot path handles a few of
/// these per record, where `[UInt8]` hashes would cost an allocation each.
struct Digest32: Equatable, Sendable {
    var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    static func == (a: Digest32, b: Digest32) -> Bool {
        a.words.0 == b.words.0 && a.words.1 == b.words.1 && a.words.2 == b.words.2 && a.words.3 == b.words.3
    }

    init() {}

    init(_ hash: Hash) {
        precondition(hash.count == 32)
        withUnsafeMutableBytes(of: &words) { out in hash.withUnsafeBytes { out.copyMemory(from: $0) } }
    }

    var bytes: Hash { withUnsafeBytes(of: words) { Array($0) } }

    /// SHA-256(0x00 ‖ data): a Merkle leaf.
    static func leaf(_ data: UnsafeBufferPointer<UInt8>) -> Digest32 {
        var digest = Digest32()
        withUnsafeMutableBytes(of: &digest.words) { out in
            csha256_prefixed(0x00, data.baseAddress, data.count, out.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        return digest
    }

    /// SHA-256(prefix ‖ a ‖ b): a Merkle node (0x01) or a chain step (0x02).
    static func pair(_ prefix: UInt8, _ a: Digest32, _ b: Digest32) -> Digest32 {
        var digest = Digest32()
        withUnsafeBytes(of: a.words) { a in
            withUnsafeBytes(of: b.words) { b in
                withUnsafeMutableBytes(of: &digest.words) { out in
                    csha256_pair(prefix, a.baseAddress!.assumingMemoryBound(to: UInt8.self), b.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                 out.baseAddress!.assumingMemoryBound(to: UInt8.self))
                }
            }
        }
        return digest
    }

    /// 64 lowercase hex digits, or nil.
    static func hex(_ text: UnsafeBufferPointer<UInt8>) -> Digest32? {
        guard text.count == 64, let input = text.baseAddress else { return nil }
        var digest = Digest32()
        let valid = withUnsafeMutableBytes(of: &digest.words) { Hex.decode(input, count: 64, into: $0) }
        return valid ? digest : nil
    }
}

/// `MerkleFrontier` over inline digests, for the verifier.
struct DigestFrontier {
    private(set) var size: UInt64
    private var nodes: [(level: Int, hash: Digest32)]

    init(_ frontier: MerkleFrontier) {
        size = frontier.size
        nodes = frontier.nodes.map { ($0.level, Digest32($0.hash)) }
    }

    mutating func append(_ leaf: Digest32) {
        var hash = leaf
        var level = 0
        while let last = nodes.last, last.level == level {
            nodes.removeLast()
            hash = .pair(0x01, last.hash, hash)
            level += 1
        }
        nodes.append((level, hash))
        size += 1
    }

    var root: Hash {
        guard var root = nodes.last?.hash else { return Merkle.emptyRoot }
        for node in nodes.dropLast().reversed() { root = .pair(0x01, node.hash, root) }
        return root.bytes
    }
}
