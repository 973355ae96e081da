import Foundation
@testable import KMIP
import Testing

/// The TTLV codec against the KMIP specification's own encodings and a real PyKMIP answer
/// (golden vectors, `Fixtures/kmip-ttlv-vectors.json`), and against bytes no server should
/// send: every malformed message is a typed error, none a crash.
@Suite struct TTLVTests {
    struct Vectors: Decodable {
        struct Vector: Decodable, CustomTestStringConvertible {
            struct Value: Decodable { var type: String; var value: Int64?; var text: String?; var hex: String? }
            var name: String
            var hex: String
            var value: Value
            var testDescription: String { name }
        }
        struct Malformed: Decodable, CustomTestStringConvertible {
            var name: String
            var hex: String
            var error: String
            var testDescription: String { name }
        }
        var vectors: [Vector]
        var malformed: [Malformed]
    }

    static let vectors: Vectors = {
        let url = Bundle.module.url(forResource: "kmip-ttlv-vectors", withExtension: "json", subdirectory: "Fixtures")!
        return try! JSONDecoder().decode(Vectors.self, from: Data(contentsOf: url))
    }()

    static func bytes(_ hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            out.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        return out
    }

    static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    @Test(arguments: vectors.vectors)
    func decodesAndReencodesTheGoldenVector(_ vector: Vectors.Vector) throws {
        let decoded = try TTLV(decoding: Self.bytes(vector.hex))
        #expect(Self.hex(try decoded.encoded()) == vector.hex)
        let expected: TTLV.Value? = switch vector.value.type {
        case "integer": .integer(Int32(vector.value.value!))
        case "longInteger": .longInteger(vector.value.value!)
        case "bigInteger": .bigInteger(Self.bytes(vector.value.hex!))
        case "enumeration": .enumeration(UInt32(vector.value.value!))
        case "boolean": .boolean(vector.value.value! == 1)
        case "textString": .textString(vector.value.text!)
        case "byteString": .byteString(Self.bytes(vector.value.hex!))
        case "dateTime": .dateTime(vector.value.value!)
        case "interval": .interval(UInt32(vector.value.value!))
        default: nil
        }
        if let expected { #expect(decoded.value == expected && decoded.tag.rawValue == 0x42_0020) }
    }

    @Test func theSpecificationsStructureExampleIsBuiltByteForByte() throws {
        let built = TTLV.structure(KMIPTag(rawValue: 0x42_0020), [TTLV(KMIPTag(rawValue: 0x42_0004), .enumeration(254)),
                                                                  TTLV(KMIPTag(rawValue: 0x42_0005), .integer(255))])
        #expect(Self.hex(try built.encoded()) == "42002001000000204200040500000004000000fe000000004200050200000004000000ff00000000")
    }

    @Test func aPyKMIPLocateAnswerReadsAsOneIdentifier() throws {
        let vector = try #require(Self.vectors.vectors.first { $0.name == "PyKMIP Locate response" })
        let payload = try KMIPClient.responsePayload(try TTLV(decoding: Self.bytes(vector.hex)), for: .locate)
        #expect(payload.all(.uniqueIdentifier).compactMap(\.text) == ["1"])
        #expect(throws: KMIPError.self) { try KMIPClient.responsePayload(try TTLV(decoding: Self.bytes(vector.hex)), for: .encrypt) }
    }

    @Test(arguments: vectors.malformed)
    func refusesMalformedBytesWithATypedError(_ vector: Vectors.Malformed) {
        do {
            let decoded = try TTLV(decoding: Self.bytes(vector.hex))
            Issue.record("decoded \(decoded) from malformed bytes")
        } catch let error as TTLVError {
            #expect("\(error)".isEmpty == false)
            let kind = switch error {
            case .truncated: "truncated"
            case .tooLarge: "tooLarge"
            case .tooDeep: "tooDeep"
            case .notAStructure: "notAStructure"
            case .trailingBytes: "trailingBytes"
            case .badLength: "badLength"
            case .badPadding: "badPadding"
            case .badValue: "badValue"
            case .unknownType: "unknownType"
            }
            #expect(kind == vector.error, "\(error)")
        } catch {
            Issue.record("not a TTLVError: \(error)")
        }
    }

    @Test func refusesNestingDeeperThanTheLimit() throws {
        var item = TTLV(.uniqueIdentifier, .textString("x"))
        for _ in 0..<TTLV.Limits.maxDepth { item = .structure(.attribute, [item]) }
        #expect(throws: TTLVError.tooDeep) { try item.encoded() }
        // Built by hand, as a peer would send it: 17 nested structure headers.
        let depth = TTLV.Limits.maxDepth + 1
        var bytes: [UInt8] = []
        for level in 0..<depth {
            let length = (depth - level - 1) * 8
            bytes += [0x42, 0x00, 0x08, 0x01, 0, UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)]
        }
        #expect(throws: TTLVError.tooDeep) { try TTLV(decoding: bytes) }
    }

    @Test func refusesAMessageOverTheSizeLimit() throws {
        let big = TTLV(.data, .byteString([UInt8](repeating: 1, count: TTLV.Limits.maxMessageBytes)))
        #expect(throws: TTLVError.self) { try big.encoded() }
        // A frame header announcing more than the limit is refused before anything is read.
        #expect(throws: TTLVError.self) { try TTLV.messageLength(header: [0x42, 0x00, 0x7B, 0x01, 0x7F, 0xFF, 0xFF, 0xF8]) }
        #expect(throws: TTLVError.notAStructure) { try TTLV.messageLength(header: [0x42, 0x00, 0x7B, 0x02, 0, 0, 0, 4]) }
        #expect(try TTLV.messageLength(header: [0x42, 0x00, 0x7B, 0x01, 0, 0, 0, 0x90]) == 0x98)
    }

    /// Random bytes and every truncation of a real answer: a typed error or a value, never a trap.
    @Test func neverTrapsOnGarbage() {
        var generator = SystemRandomNumberGenerator()
        let answer = Self.bytes(Self.vectors.vectors.last!.hex)
        for cut in 0..<answer.count { _ = try? TTLV(decoding: Array(answer[0..<cut])) }
        for _ in 0..<2000 {
            var bytes = answer
            bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
            _ = try? TTLV(decoding: bytes)
            _ = try? TTLV(decoding: (0..<Int.random(in: 0..<64, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) })
        }
    }

    @Test func requestsCarryTheVersionAndOneBatchItem() throws {
        let request = KMIPClient.requestMessage(.getAttributes, [TTLV(.uniqueIdentifier, .textString("7"))], version: .init(1, 2))
        let decoded = try TTLV(decoding: try request.encoded())
        let header = try #require(decoded[.requestHeader])
        #expect(header[.protocolVersion]?[.protocolVersionMajor]?.integer == 1 && header[.protocolVersion]?[.protocolVersionMinor]?.integer == 2)
        #expect(header[.batchCount]?.integer == 1)
        #expect(decoded[.batchItem]?[.operation]?.enumeration == 0x0B)
        #expect(decoded[.batchItem]?[.requestPayload]?[.uniqueIdentifier]?.text == "7")
    }
}
