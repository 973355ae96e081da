/// One KMIP TTLV item (KMIP 1.x/2.0 §9.1, "Tag-Type-Length-Value"): a 3-byte tag, a 1-byte
/// type, a 4-byte length, and the value padded with zeros to a multiple of 8 bytes.
///
/// The decoder is strict and bounded, because it reads what a network peer sent: a message is
/// at most `Limits.maxMessageBytes`, structures nest at most `Limits.maxDepth` deep, every
/// length is checked against the bytes that remain and against its type's fixed size, padding
/// must be zero, text must be UTF-8. Anything else is a `TTLVError`, never a crash or a trap.
public struct TTLV: Sendable, Hashable {
    public enum Value: Sendable, Hashable {
        case structure([TTLV])
        case integer(Int32)
        case longInteger(Int64)
        /// Two's complement, big-endian, a multiple of 8 bytes (as on the wire).
        case bigInteger([UInt8])
        case enumeration(UInt32)
        case boolean(Bool)
        case textString(String)
        case byteString([UInt8])
        /// Seconds since the epoch (POSIX time), as KMIP's Date-Time.
        case dateTime(Int64)
        /// Seconds.
        case interval(UInt32)

        var typeCode: UInt8 {
            switch self {
            case .structure: return 0x01
            case .integer: return 0x02
            case .longInteger: return 0x03
            case .bigInteger: return 0x04
            case .enumeration: return 0x05
            case .boolean: return 0x06
            case .textString: return 0x07
            case .byteString: return 0x08
            case .dateTime: return 0x09
            case .interval: return 0x0A
            }
        }
    }

    public enum Limits {
        /// The largest message read or written: far above what the operations used here
        /// answer (a Locate of `KeyList.maxKeys` identifiers is under 100 KiB).
        public static let maxMessageBytes = 1 << 20
        /// Structures inside structures: KMIP messages used here nest 6 deep at most.
        public static let maxDepth = 16
    }

    public var tag: KMIPTag
    public var value: Value

    public init(_ tag: KMIPTag, _ value: Value) {
        self.tag = tag
        self.value = value
    }

    public static func structure(_ tag: KMIPTag, _ children: [TTLV]) -> TTLV { TTLV(tag, .structure(children)) }

    // MARK: Reading a decoded item

    /// The children of a structure (empty for any other type).
    public var children: [TTLV] {
        if case .structure(let children) = value { return children }
        return []
    }

    /// The first child with `tag`.
    public subscript(tag: KMIPTag) -> TTLV? { children.first { $0.tag == tag } }

    public func all(_ tag: KMIPTag) -> [TTLV] { children.filter { $0.tag == tag } }

    public var text: String? { if case .textString(let text) = value { return text } else { return nil } }
    public var bytes: [UInt8]? { if case .byteString(let bytes) = value { return bytes } else { return nil } }
    public var enumeration: UInt32? { if case .enumeration(let value) = value { return value } else { return nil } }
    public var integer: Int32? { if case .integer(let value) = value { return value } else { return nil } }
    public var boolean: Bool? { if case .boolean(let value) = value { return value } else { return nil } }

    // MARK: Encoding

    /// The item's wire form. Throws when it would exceed `Limits.maxMessageBytes`.
    public func encoded() throws -> [UInt8] {
        var out: [UInt8] = []
        try encode(into: &out, depth: 1)
        guard out.count <= Limits.maxMessageBytes else { throw TTLVError.tooLarge(out.count) }
        return out
    }

    private func encode(into out: inout [UInt8], depth: Int) throws {
        guard depth <= Limits.maxDepth else { throw TTLVError.tooDeep }
        out.append(UInt8(truncatingIfNeeded: tag.rawValue >> 16))
        out.append(UInt8(truncatingIfNeeded: tag.rawValue >> 8))
        out.append(UInt8(truncatingIfNeeded: tag.rawValue))
        out.append(value.typeCode)
        let lengthAt = out.count
        out.append(contentsOf: [0, 0, 0, 0])
        let start = out.count
        switch value {
        case .structure(let children):
            for child in children { try child.encode(into: &out, depth: depth + 1) }
        case .integer(let value): Self.append(UInt64(UInt32(bitPattern: value)), bytes: 4, to: &out)
        case .longInteger(let value): Self.append(UInt64(bitPattern: value), bytes: 8, to: &out)
        case .bigInteger(let bytes):
            guard !bytes.isEmpty, bytes.count % 8 == 0 else { throw TTLVError.badLength(tag: tag, type: 0x04, length: bytes.count) }
            out.append(contentsOf: bytes)
        case .enumeration(let value): Self.append(UInt64(value), bytes: 4, to: &out)
        case .boolean(let value): Self.append(value ? 1 : 0, bytes: 8, to: &out)
        case .textString(let text): out.append(contentsOf: Array(text.utf8))
        case .byteString(let bytes): out.append(contentsOf: bytes)
        case .dateTime(let seconds): Self.append(UInt64(bitPattern: seconds), bytes: 8, to: &out)
        case .interval(let value): Self.append(UInt64(value), bytes: 4, to: &out)
        }
        let length = out.count - start
        guard length <= Limits.maxMessageBytes else { throw TTLVError.tooLarge(length) }
        for index in 0..<4 { out[lengthAt + index] = UInt8(truncatingIfNeeded: length >> (8 * (3 - index))) }
        out.append(contentsOf: repeatElement(0, count: (8 - length % 8) % 8))
    }

    private static func append(_ value: UInt64, bytes: Int, to out: inout [UInt8]) {
        for index in (0..<bytes).reversed() { out.append(UInt8(truncatingIfNeeded: value >> (8 * UInt64(index)))) }
    }

    // MARK: Decoding

    /// Decodes exactly one item that fills `bytes` (a whole message).
    public init(decoding bytes: [UInt8]) throws {
        guard bytes.count <= Limits.maxMessageBytes else { throw TTLVError.tooLarge(bytes.count) }
        var offset = 0
        self = try Self.decode(bytes, at: &offset, end: bytes.count, depth: 1)
        guard offset == bytes.count else { throw TTLVError.trailingBytes(bytes.count - offset) }
    }

    /// The length of the message whose first 8 bytes are `header` (a frame reader's question):
    /// header plus value plus padding. Throws on a length over the limit.
    public static func messageLength(header: some Collection<UInt8>) throws -> Int {
        let header = Array(header.prefix(8))
        guard header.count == 8 else { throw TTLVError.truncated }
        guard header[3] == 0x01 else { throw TTLVError.notAStructure }
        let length = header[4..<8].reduce(0) { $0 << 8 | Int($1) }
        let total = 8 + length
        guard total <= Limits.maxMessageBytes else { throw TTLVError.tooLarge(total) }
        return total
    }

    private static func decode(_ bytes: [UInt8], at offset: inout Int, end: Int, depth: Int) throws -> TTLV {
        guard depth <= Limits.maxDepth else { throw TTLVError.tooDeep }
        guard end - offset >= 8 else { throw TTLVError.truncated }
        let tagValue = UInt32(bytes[offset]) << 16 | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2])
        let tag = KMIPTag(rawValue: tagValue)
        let type = bytes[offset + 3]
        let length = bytes[(offset + 4)..<(offset + 8)].reduce(0) { $0 << 8 | Int($1) }
        offset += 8
        let padded = length + (8 - length % 8) % 8
        guard padded <= end - offset else { throw TTLVError.truncated }
        let valueStart = offset
        let valueEnd = offset + length
        func fixed(_ expected: Int) throws {
            guard length == expected else { throw TTLVError.badLength(tag: tag, type: type, length: length) }
        }
        func number(_ count: Int) -> UInt64 {
            bytes[valueStart..<(valueStart + count)].reduce(0) { $0 << 8 | UInt64($1) }
        }
        let value: Value
        switch type {
        case 0x01:
            guard length % 8 == 0 else { throw TTLVError.badLength(tag: tag, type: type, length: length) }
            var children: [TTLV] = []
            var inner = valueStart
            while inner < valueEnd {
                children.append(try decode(bytes, at: &inner, end: valueEnd, depth: depth + 1))
            }
            value = .structure(children)
        case 0x02: try fixed(4); value = .integer(Int32(bitPattern: UInt32(number(4))))
        case 0x03: try fixed(8); value = .longInteger(Int64(bitPattern: number(8)))
        case 0x04:
            guard length > 0, length % 8 == 0 else { throw TTLVError.badLength(tag: tag, type: type, length: length) }
            value = .bigInteger(Array(bytes[valueStart..<valueEnd]))
        case 0x05: try fixed(4); value = .enumeration(UInt32(number(4)))
        case 0x06:
            try fixed(8)
            switch number(8) {
            case 0: value = .boolean(false)
            case 1: value = .boolean(true)
            default: throw TTLVError.badValue(tag: tag, "a Boolean is 0 or 1")
            }
        case 0x07:
            guard let text = String(validating: bytes[valueStart..<valueEnd], as: UTF8.self) else {
                throw TTLVError.badValue(tag: tag, "a Text String is not UTF-8")
            }
            value = .textString(text)
        case 0x08: value = .byteString(Array(bytes[valueStart..<valueEnd]))
        case 0x09: try fixed(8); value = .dateTime(Int64(bitPattern: number(8)))
        case 0x0A: try fixed(4); value = .interval(UInt32(number(4)))
        default: throw TTLVError.unknownType(tag: tag, type: type)
        }
        // Padding: zeros, and only as many as align the value (a structure needs none).
        if bytes[valueEnd..<(valueStart + padded)].contains(where: { $0 != 0 }) { throw TTLVError.badPadding(tag: tag) }
        offset = valueStart + padded
        return TTLV(tag, value)
    }
}

/// Why bytes are not a KMIP message. The descriptions name the tag and the problem, never
/// the bytes (they may hold key material).
public enum TTLVError: Error, Sendable, Equatable, CustomStringConvertible {
    case truncated
    case tooLarge(Int)
    case tooDeep
    case notAStructure
    case trailingBytes(Int)
    case badLength(tag: KMIPTag, type: UInt8, length: Int)
    case badPadding(tag: KMIPTag)
    case badValue(tag: KMIPTag, String)
    case unknownType(tag: KMIPTag, type: UInt8)

    public var description: String {
        switch self {
        case .truncated: return "the TTLV message ends inside an item"
        case .tooLarge(let count): return "the TTLV message is \(count) bytes, over the \(TTLV.Limits.maxMessageBytes)-byte limit"
        case .tooDeep: return "the TTLV message nests deeper than \(TTLV.Limits.maxDepth) structures"
        case .notAStructure: return "a KMIP message must be a structure"
        case .trailingBytes(let count): return "\(count) bytes follow the TTLV message"
        case .badLength(let tag, let type, let length): return "item \(tag) of type 0x\(String(type, radix: 16)) has an invalid length \(length)"
        case .badPadding(let tag): return "item \(tag) has non-zero padding"
        case .badValue(let tag, let why): return "item \(tag): \(why)"
        case .unknownType(let tag, let type): return "item \(tag) has an unknown type 0x\(String(type, radix: 16))"
        }
    }
}
