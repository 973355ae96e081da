@testable import Audit
@testable import AuditFormat
import CMKCore
import Crypto
import Foundation
import Testing

/// The golden vectors in `Vectors/`, written by an independent implementation
/// (`Scripts/audit-vectors.py`: Python's hashlib, json and pyca/cryptography), run by one runner.
@Suite struct GoldenVectorTests {
    static func vectors(_ name: String) throws -> JSONValue {
        let url = try #require(Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Vectors"))
        return try LenientJSON.parse(Data(contentsOf: url))
    }

    static func hex(_ value: JSONValue?) throws -> [UInt8] { try #require(value?.stringValue.flatMap(Hex.decode)) }
    static func hashes(_ value: JSONValue?) throws -> [Hash] {
        guard case .array(let items)? = value else { throw AuditError(.invalidInput, "not an array") }
        return try items.map { try hex($0) }
    }
    static func int(_ value: JSONValue?) throws -> UInt64 { UInt64(try #require(value?.integerValue)) }

    @Test func merkleRootsAndProofsMatchTheVectors() throws {
        let v = try Self.vectors("merkle")
        guard case .array(let leafItems)? = v["leaves"] else { Issue.record("no leaves"); return }
        let leaves = try leafItems.map { try Self.hex($0) }
        let leafHashes = leaves.map { Merkle.leafHash($0) }
        #expect(leafHashes == (try Self.hashes(v["leafHashes"])))
        let roots = try Self.hashes(v["roots"])
        var frontier = MerkleFrontier()
        #expect(frontier.root == roots[0])
        for (i, leaf) in leafHashes.enumerated() {
            frontier.append(leaf)
            #expect(frontier.root == roots[i + 1], "root of \(i + 1) leaves")
        }
        func subtree(_ start: UInt64, _ end: UInt64) -> Hash {
            var f = MerkleFrontier()
            for leaf in leafHashes[Int(start)..<Int(end)] { f.append(leaf) }
            return f.root
        }
        guard case .array(let inclusion)? = v["inclusion"], case .array(let consistency)? = v["consistency"] else {
            Issue.record("no proofs"); return
        }
        for item in inclusion {
            let (index, size, proof) = (try Self.int(item["index"]), try Self.int(item["size"]), try Self.hashes(item["proof"]))
            #expect(try Merkle.inclusionProof(index: index, size: size, subtree: subtree) == proof, "inclusion \(index) in \(size)")
            #expect(Merkle.verifyInclusion(leafHash: leafHashes[Int(index)], index: index, size: size, proof: proof, root: roots[Int(size)]))
            // Every proof fails for another leaf, another index or a flipped bit.
            if size > 1 {
                #expect(!Merkle.verifyInclusion(leafHash: leafHashes[Int((index + 1) % size)], index: index, size: size, proof: proof, root: roots[Int(size)]))
                var bent = proof
                bent[0][0] ^= 1
                #expect(!Merkle.verifyInclusion(leafHash: leafHashes[Int(index)], index: index, size: size, proof: bent, root: roots[Int(size)]))
            }
        }
        for item in consistency {
            let (old, new, proof) = (try Self.int(item["old"]), try Self.int(item["new"]), try Self.hashes(item["proof"]))
            #expect(try Merkle.consistencyProof(old: old, new: new, subtree: subtree) == proof, "consistency \(old)→\(new)")
            #expect(Merkle.verifyConsistency(old: old, oldRoot: roots[Int(old)], new: new, newRoot: roots[Int(new)], proof: proof))
            if old < new {
                var otherRoot = roots[Int(old)]
                otherRoot[31] ^= 1
                #expect(!Merkle.verifyConsistency(old: old, oldRoot: otherRoot, new: new, newRoot: roots[Int(new)], proof: proof))
            }
        }
    }

    @Test func canonicalEncodingMatchesTheVectors() throws {
        let v = try Self.vectors("canonical")
        guard case .array(let valid)? = v["valid"], case .array(let invalid)? = v["invalid"] else { Issue.record("no cases"); return }
        for item in valid {
            let canonical = Array(try #require(item["canonical"]?.stringValue).utf8)
            let input = try #require(item["input"]?.stringValue)
            // The encoder sorts what the lenient reader gives it in any order.
            #expect(try LenientJSON.parse(Data(input.utf8)).canonicalBytes() == canonical, "\(input)")
            #expect(try CanonicalJSON.parse(canonical).canonicalBytes() == canonical)
            if Array(input.utf8) != canonical { #expect(throws: CanonicalJSONError.self) { try CanonicalJSON.parse(Array(input.utf8)) } }
        }
        for item in invalid {
            let input = try #require(item["input"]?.stringValue)
            #expect(throws: CanonicalJSONError.self, "\(input)") { try CanonicalJSON.parse(Array(input.utf8)) }
        }
    }

    @Test func recordsEncodeAndChainAsTheVectorsSay() throws {
        let v = try Self.vectors("records")
        guard case .array(let items)? = v["records"] else { Issue.record("no records"); return }
        var chain = AuditExport.initialChain
        for item in items {
            let canonical = Array(try #require(item["canonical"]?.stringValue).utf8)
            let record = try AuditRecord(json: try #require(item["record"]))
            #expect(try record.canonicalBytes() == canonical)
            #expect(Merkle.leafHash(canonical) == (try Self.hex(item["leafHash"])))
            chain = AuditExport.chain(chain, Merkle.leafHash(canonical))
        }
        #expect(chain == (try Self.hex(v["chain"])))
    }

    @Test func checkpointsAreSignedNotesAsTheVectorsSay() async throws {
        let v = try Self.vectors("checkpoints")
        let name = try #require(v["name"]?.stringValue)
        let signer = try Ed25519FileSigner(pem: try #require(v["privateKeyPEM"]?.stringValue), keyName: name)
        #expect(signer.verifierKey.publicKey == (try Self.hex(v["publicKey"])))
        #expect(signer.verifierKey.description == v["verifierKey"]?.stringValue)
        #expect(try VerifierKey(parsing: try #require(v["verifierKey"]?.stringValue)) == signer.verifierKey)
        guard case .array(let cases)? = v["checkpoints"] else { Issue.record("no checkpoints"); return }
        for item in cases {
            let note = try #require(item["note"]?.stringValue)
            let timeText = try #require(item["time"]?.stringValue)
            let time = try #require(RFC3339.parseMilliseconds(timeText))
            let checkpoint = Checkpoint(origin: name, size: try Self.int(item["size"]), root: try Self.hex(item["root"]), time: time)
            // Ed25519 is deterministic: the same key signs the same body to the same bytes.
            #expect(try await SignedCheckpoint.sign(checkpoint, with: signer).text == note)
            let parsed = try SignedCheckpoint(text: note)
            #expect(parsed.checkpoint == checkpoint)
            #expect(parsed.isSigned(by: signer.verifierKey))
            var forged = parsed
            forged.checkpoint.size += 1
            #expect(!forged.isSigned(by: signer.verifierKey))
        }
    }
}

/// Reads ordinary (non-canonical) JSON into a `JSONValue`, for the vector files and inputs.
/// Foundation's decoder keeps booleans and numbers apart, which `JSONSerialization` does not.
enum LenientJSON {
    static func parse(_ data: Data) throws -> JSONValue { try JSONDecoder().decode(Lenient.self, from: data).value }

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    struct Lenient: Decodable {
        var value: JSONValue
        init(from decoder: any Decoder) throws {
            if let object = try? decoder.container(keyedBy: Key.self) {
                var members: [String: JSONValue] = [:]
                for key in object.allKeys { members[key.stringValue] = try object.decode(Lenient.self, forKey: key).value }
                value = .object(members)
            } else if var array = try? decoder.unkeyedContainer() {
                var items: [JSONValue] = []
                while !array.isAtEnd { items.append(try array.decode(Lenient.self).value) }
                value = .array(items)
            } else {
                let single = try decoder.singleValueContainer()
                if single.decodeNil() { value = .null }
                else if let bool = try? single.decode(Bool.self) { value = .bool(bool) }
                else if let integer = try? single.decode(Int64.self) { value = .integer(integer) }
                else { value = .string(try single.decode(String.self)) }
            }
        }
    }
}
