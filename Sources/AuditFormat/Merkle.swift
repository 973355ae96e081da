import Crypto
import CSHA256
public import Foundation

/// A SHA-256 value.
public typealias Hash = [UInt8]

/// The Merkle tree hashing of RFC 9162 §2.1 (RFC 6962's): leaves and interior nodes hashed with
/// distinct one-byte prefixes, so that a leaf can never be passed off as a node.
public enum Merkle {
    public static let emptyRoot: Hash = bytes(SHA256.hash(data: [UInt8]()))

    public static func leafHash(_ data: some DataProtocol) -> Hash {
        Array(data).withUnsafeBufferPointer { leafHash($0) }
    }

    /// The leaf hash of bytes in place (the verifier's hot path).
    public static func leafHash(_ data: UnsafeBufferPointer<UInt8>) -> Hash {
        [UInt8](unsafeUninitializedCapacity: 32) { out, count in
            csha256_prefixed(0x00, data.baseAddress, data.count, out.baseAddress)
            count = 32
        }
    }

    public static func nodeHash(_ left: Hash, _ right: Hash) -> Hash {
        prefixed(0x01, left, right)
    }

    /// SHA-256(prefix ‖ a ‖ b) for two 32-byte values, in one 65-byte buffer.
    static func prefixed(_ prefix: UInt8, _ a: Hash, _ b: Hash) -> Hash {
        precondition(a.count == 32 && b.count == 32)
        return [UInt8](unsafeUninitializedCapacity: 32) { out, count in
            a.withUnsafeBufferPointer { a in
                b.withUnsafeBufferPointer { b in csha256_pair(prefix, a.baseAddress, b.baseAddress, out.baseAddress) }
            }
            count = 32
        }
    }

    /// A digest's bytes, copied once (iterating a digest byte by byte costs more than hashing).
    static func bytes(_ digest: SHA256Digest) -> Hash {
        digest.withUnsafeBytes { Array($0) }
    }

    /// The largest power of two strictly less than `n` (n > 1).
    package static func split(_ n: UInt64) -> UInt64 {
        precondition(n > 1)
        return 1 << (63 - UInt64((n - 1).leadingZeroBitCount))
    }

    // MARK: Proof generation (RFC 9162 §2.1.3.1, §2.1.4.1)

    /// The inclusion proof (audit path) of leaf `index` in the tree of the first `size` leaves.
    /// `subtree(start, end)` returns MTH(D[start:end]); every range asked for is either a
    /// perfect subtree aligned on its size or one ending at `size`.
    public static func inclusionProof(index: UInt64, size: UInt64,
                                      subtree: (UInt64, UInt64) throws -> Hash) throws -> [Hash] {
        precondition(index < size)
        var proof: [Hash] = []
        var (start, end, m) = (UInt64(0), size, index)
        var pending: [Hash] = []
        while end - start > 1 {
            let k = split(end - start)
            if m < k {
                pending.append(try subtree(start + k, end))
                end = start + k
            } else {
                pending.append(try subtree(start, start + k))
                start += k
                m -= k
            }
        }
        // The recursion appends the sibling found at each level on the way back up.
        proof = pending.reversed()
        return proof
    }

    /// The consistency proof between the trees of the first `old` and first `new` leaves
    /// (0 < old ≤ new).
    public static func consistencyProof(old: UInt64, new: UInt64,
                                        subtree: (UInt64, UInt64) throws -> Hash) throws -> [Hash] {
        precondition(old > 0 && old <= new)
        var pending: [Hash] = []
        var (start, end, m, whole) = (UInt64(0), new, old, true)
        while true {
            let n = end - start
            if m == n {
                if !whole { pending.append(try subtree(start, end)) }
                break
            }
            let k = split(n)
            if m <= k {
                pending.append(try subtree(start + k, end))
                end = start + k
            } else {
                pending.append(try subtree(start, start + k))
                start += k
                m -= k
                whole = false
            }
        }
        return pending.reversed()
    }

    // MARK: Verification (RFC 9162 §2.1.3.2, §2.1.4.2)

    public static func verifyInclusion(leafHash: Hash, index: UInt64, size: UInt64, proof: [Hash], root: Hash) -> Bool {
        guard index < size else { return false }
        var (fn, sn) = (index, size - 1)
        var r = leafHash
        for p in proof {
            guard sn != 0 else { return false }
            if fn & 1 == 1 || fn == sn {
                r = nodeHash(p, r)
                if fn & 1 == 0 {
                    repeat { fn >>= 1; sn >>= 1 } while fn & 1 == 0 && fn != 0
                }
            } else {
                r = nodeHash(r, p)
            }
            fn >>= 1
            sn >>= 1
        }
        return sn == 0 && r == root
    }

    public static func verifyConsistency(old: UInt64, oldRoot: Hash, new: UInt64, newRoot: Hash, proof: [Hash]) -> Bool {
        guard old > 0, old <= new else { return false }
        if old == new { return proof.isEmpty && oldRoot == newRoot }
        guard !proof.isEmpty else { return false }
        var path = proof
        if old & (old - 1) == 0 { path.insert(oldRoot, at: 0) }
        var (fn, sn) = (old - 1, new - 1)
        while fn & 1 == 1 { fn >>= 1; sn >>= 1 }
        var fr = path[0], sr = path[0]
        for c in path.dropFirst() {
            guard sn != 0 else { return false }
            if fn & 1 == 1 || fn == sn {
                fr = nodeHash(c, fr)
                sr = nodeHash(c, sr)
                if fn & 1 == 0 {
                    repeat { fn >>= 1; sn >>= 1 } while fn & 1 == 0 && fn != 0
                }
            } else {
                sr = nodeHash(sr, c)
            }
            fn >>= 1
            sn >>= 1
        }
        return fr == oldRoot && sr == newRoot && sn == 0
    }
}

/// The right edge of a tree grown from leaf 0: the roots of its perfect subtrees, largest
/// first (one per set bit of the size). Appending is O(1) amortised; the root is O(log n).
/// The store keeps one in memory, the verifier recomputes one from an export, and an export
/// that starts at a later record carries one to start from.
public struct MerkleFrontier: Sendable, Equatable {
    public private(set) var size: UInt64
    /// (level, hash): a perfect subtree of 2^level leaves.
    public private(set) var nodes: [(level: Int, hash: Hash)]

    public init() {
        size = 0
        nodes = []
    }

    /// Rebuilds the frontier of a tree of `size` leaves from its perfect subtree hashes,
    /// largest first, as `hashes(for: size)` lists them.
    public init(size: UInt64, hashes: [Hash]) throws {
        let levels = Self.levels(for: size)
        guard levels.count == hashes.count, hashes.allSatisfy({ $0.count == 32 }) else {
            throw AuditError(.invalidInput, "a frontier for \(size) leaves has \(levels.count) hashes of 32 bytes")
        }
        self.size = size
        nodes = zip(levels, hashes).map { (level: $0, hash: $1) }
    }

    /// The levels of the perfect subtrees that make up a tree of `size` leaves, largest first.
    public static func levels(for size: UInt64) -> [Int] {
        (0..<64).reversed().filter { size & (1 << UInt64($0)) != 0 }
    }

    /// Appends a leaf hash; calls `completed` with each perfect subtree of level ≥ 1 that the
    /// append completes (level, index among subtrees of that level, hash).
    public mutating func append(_ leaf: Hash, completed: (Int, UInt64, Hash) throws -> Void) rethrows {
        var hash = leaf
        var level = 0
        let index = size
        while let last = nodes.last, last.level == level {
            nodes.removeLast()
            hash = Merkle.nodeHash(last.hash, hash)
            level += 1
            try completed(level, index >> UInt64(level), hash)
        }
        nodes.append((level, hash))
        size += 1
    }

    public mutating func append(_ leaf: Hash) { append(leaf) { _, _, _ in } }

    public var root: Hash {
        guard var root = nodes.last?.hash else { return Merkle.emptyRoot }
        for node in nodes.dropLast().reversed() { root = Merkle.nodeHash(node.hash, root) }
        return root
    }

    public var hashes: [Hash] { nodes.map(\.hash) }

    public static func == (a: MerkleFrontier, b: MerkleFrontier) -> Bool {
        a.size == b.size && a.nodes.map(\.hash) == b.nodes.map(\.hash)
    }
}
