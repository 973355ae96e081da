import Foundation

/// A JSON value restricted to what audit records need, with the RFC 8785 (JCS) canonical
/// encoding and a parser that accepts canonical input only.
///
/// Numbers are integers in the I-JSON safe range (|n| ≤ 2^53 − 1): for those, JCS's number
/// serialisation (ECMAScript's `Number.prototype.toString`) is the plain decimal form, so every
/// conforming JCS implementation produces the same bytes as this one. Fractions and exponents
/// are refused rather than half-supported.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case integer(Int64)
    case string(String)
    case array([JSONValue])
    /// Members in any order; the encoding sorts them.
    case object([String: JSONValue])

    public static let maxSafeInteger: Int64 = (1 << 53) - 1

    public subscript(key: String) -> JSONValue? {
        if case .object(let members) = self { return members[key] }
        return nil
    }

    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    public var integerValue: Int64? { if case .integer(let i) = self { return i } else { return nil } }
}

public struct CanonicalJSONError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Byte offset in the input where the problem was found.
    public let offset: Int
    public let reason: String
    public var description: String { "not canonical JSON at byte \(offset): \(reason)" }

    package init(offset: Int, reason: String) {
        self.offset = offset
        self.reason = reason
    }
}

// MARK: - Encoding

extension JSONValue {
    /// The RFC 8785 encoding. Throws for an integer outside the safe range.
    public func canonicalBytes() throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        try Self.write(self, into: &out)
        return out
    }

    package static func write(_ value: JSONValue, into out: inout [UInt8]) throws {
        switch value {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .integer(let n):
            guard n >= -maxSafeInteger, n <= maxSafeInteger else {
                throw CanonicalJSONError(offset: out.count, reason: "integer \(n) is outside the I-JSON safe range")
            }
            out.append(contentsOf: String(n).utf8)
        case .string(let s): writeString(s, into: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                try write(item, into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            // JCS orders member names by their UTF-16 code units.
            let sorted = members.sorted { $0.key.utf16.lexicographicallyPrecedes($1.key.utf16) }
            for (i, member) in sorted.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                writeString(member.key, into: &out)
                out.append(UInt8(ascii: ":"))
                try write(member.value, into: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    package static func writeString(_ s: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in s.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: [0x5C, 0x22])
            case UInt8(ascii: "\\"): out.append(contentsOf: [0x5C, 0x5C])
            case 0x08: out.append(contentsOf: [0x5C, UInt8(ascii: "b")])
            case 0x09: out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
            case 0x0A: out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
            case 0x0C: out.append(contentsOf: [0x5C, UInt8(ascii: "f")])
            case 0x0D: out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
            case 0x00..<0x20:
                out.append(contentsOf: Array("\\u00".utf8))
                out.append(hexDigit(byte >> 4))
                out.append(hexDigit(byte & 0xF))
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    private static func hexDigit(_ nibble: UInt8) -> UInt8 {
        nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10
    }
}

// MARK: - Nesting

/// How deeply a JSON text nests, found in one pass without parsing it. Every body the gateway
/// and the node accept is checked before a recursive parser sees it: no document of ours nests
/// deeper than a few levels, and a deep one would exhaust the parser's stack.
public enum JSONNesting {
    public static let maxDepth = 32

    /// The deepest nesting of objects and arrays (brackets inside strings ignored); stops
    /// counting once past `maxDepth`.
    public static func depth(of bytes: some Sequence<UInt8>) -> Int {
        var depth = 0, deepest = 0
        var inString = false, escaped = false
        for byte in bytes {
            if inString {
                if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
                deepest = max(deepest, depth)
                if deepest > maxDepth { return deepest }
            case UInt8(ascii: "}"), UInt8(ascii: "]"): depth -= 1
            default: break
            }
        }
        return deepest
    }

    public static func isAcceptable(_ bytes: some Sequence<UInt8>) -> Bool { depth(of: bytes) <= maxDepth }
}

// MARK: - Strict parsing

public enum CanonicalJSON {
    /// Parses `bytes`, which must be exactly the canonical encoding of a value: no whitespace,
    /// members in JCS order without duplicates, minimal string escapes, safe-range integers.
    public static func parse(_ bytes: some Collection<UInt8>) throws -> JSONValue {
        let array = Array(bytes)
        return try array.withUnsafeBufferPointer { buffer in
            var scanner = CanonicalScanner(buffer)
            let value = try scanner.value()
            try scanner.expectEnd()
            return value
        }
    }
}

/// The strict scanner. `value()` builds a `JSONValue`; `skip()` only validates, for the
/// verifier's hot path, which reads two members of each record and hashes the rest as bytes.
package struct CanonicalScanner {
    package let bytes: UnsafeBufferPointer<UInt8>
    package var position = 0
    /// Objects and arrays open around the position: bounded, so that hostile input cannot
    /// exhaust the stack (the parser recurses once per level).
    package var depth = 0
    package static let maxDepth = JSONNesting.maxDepth

    package init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    package func error(_ reason: String) -> CanonicalJSONError { CanonicalJSONError(offset: position, reason: reason) }

    package mutating func expectEnd() throws {
        guard position == bytes.count else { throw error("unexpected bytes after the value") }
    }

    @inline(__always) func peek() -> UInt8? { position < bytes.count ? bytes[position] : nil }

    @inline(__always) mutating func expect(_ byte: UInt8) throws {
        guard peek() == byte else { throw error("expected '\(Character(Unicode.Scalar(byte)))'") }
        position += 1
    }

    package mutating func value() throws -> JSONValue {
        switch peek() {
        case UInt8(ascii: "{"):
            var members: [String: JSONValue] = [:]
            try object { scanner, key in members[key] = try scanner.value() }
            return .object(members)
        case UInt8(ascii: "["):
            var items: [JSONValue] = []
            try array { scanner in items.append(try scanner.value()) }
            return .array(items)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        default: return .integer(try integer())
        }
    }

    /// Validates one value without building it.
    package mutating func skip() throws {
        switch peek() {
        case UInt8(ascii: "{"): try object { scanner, _ in try scanner.skip() }
        case UInt8(ascii: "["): try array { scanner in try scanner.skip() }
        case UInt8(ascii: "\""): _ = try stringRange()
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        default: _ = try integer()
        }
    }

    /// Calls `member` for each member, positioned at its value, after checking that names
    /// ascend strictly in UTF-16 order.
    package mutating func object(_ member: (inout CanonicalScanner, String) throws -> Void) throws {
        try objectRanges { scanner, keyRange in
            try member(&scanner, scanner.decode(keyRange))
        }
    }

    /// As `object`, giving the name as a range of raw (escaped) bytes.
    package mutating func objectRanges(_ member: (inout CanonicalScanner, Range<Int>) throws -> Void) throws {
        try expect(UInt8(ascii: "{"))
        depth += 1
        defer { depth -= 1 }
        guard depth <= Self.maxDepth else { throw error("nested deeper than \(Self.maxDepth) levels") }
        if peek() == UInt8(ascii: "}") { position += 1; return }
        var previous: Range<Int>?
        var previousPlain = true
        while true {
            let keyStart = position
            let keyRange = try stringRange()
            let plain = lastStringPlain
            defer { previousPlain = plain }
            if let previous, !namesAscend(previous, keyRange, plain: plain && previousPlain) {
                position = keyStart
                throw error("member names are not in strictly ascending (JCS) order")
            }
            previous = keyRange
            try expect(UInt8(ascii: ":"))
            try member(&self, keyRange)
            switch peek() {
            case UInt8(ascii: ","): position += 1
            case UInt8(ascii: "}"): position += 1; return
            default: throw error("expected ',' or '}'")
            }
        }
    }

    package mutating func array(_ item: (inout CanonicalScanner) throws -> Void) throws {
        try expect(UInt8(ascii: "["))
        depth += 1
        defer { depth -= 1 }
        guard depth <= Self.maxDepth else { throw error("nested deeper than \(Self.maxDepth) levels") }
        if peek() == UInt8(ascii: "]") { position += 1; return }
        while true {
            try item(&self)
            switch peek() {
            case UInt8(ascii: ","): position += 1
            case UInt8(ascii: "]"): position += 1; return
            default: throw error("expected ',' or ']'")
            }
        }
    }

    package mutating func literal(_ word: StaticString) throws {
        let count = word.utf8CodeUnitCount
        guard position + count <= bytes.count else { throw error("truncated literal") }
        for i in 0..<count where bytes[position + i] != word.utf8Start[i] {
            throw error("invalid literal")
        }
        position += count
    }

    package mutating func integer() throws -> Int64 {
        let start = position
        var negative = false
        if peek() == UInt8(ascii: "-") { negative = true; position += 1 }
        guard let first = peek(), first >= UInt8(ascii: "0"), first <= UInt8(ascii: "9") else {
            throw error("expected a value")
        }
        var magnitude: Int64 = 0
        while let digit = peek(), digit >= UInt8(ascii: "0"), digit <= UInt8(ascii: "9") {
            magnitude = magnitude * 10 + Int64(digit - UInt8(ascii: "0"))
            guard magnitude <= JSONValue.maxSafeInteger else { throw error("integer outside the I-JSON safe range") }
            position += 1
        }
        if first == UInt8(ascii: "0"), position - start > (negative ? 2 : 1) {
            throw error("leading zero")
        }
        if negative, magnitude == 0 { throw error("negative zero") }
        if let next = peek(), next == UInt8(ascii: ".") || next == UInt8(ascii: "e") || next == UInt8(ascii: "E") {
            throw error("only integers are allowed")
        }
        return negative ? -magnitude : magnitude
    }

    package mutating func string() throws -> String { decode(try stringRange()) }

    /// Whether the last string scanned was plain ASCII without escapes, so that its raw bytes
    /// compare in UTF-16 order as they are.
    package var lastStringPlain = true

    /// Validates a string and returns the range of its raw content (between the quotes).
    package mutating func stringRange() throws -> Range<Int> {
        try expect(UInt8(ascii: "\""))
        let start = position
        let count = bytes.count
        let base = bytes.baseAddress!
        // Fast path: printable ASCII other than the quote and the backslash.
        while position < count {
            let byte = base[position]
            if byte >= 0x20 && byte < 0x80 && byte != 0x22 && byte != 0x5C {
                position += 1
            } else {
                break
            }
        }
        if position < count, base[position] == UInt8(ascii: "\"") {
            lastStringPlain = true
            let range = start..<position
            position += 1
            return range
        }
        lastStringPlain = false
        while position < bytes.count {
            let byte = bytes[position]
            switch byte {
            case UInt8(ascii: "\""):
                let range = start..<position
                position += 1
                return range
            case UInt8(ascii: "\\"):
                guard position + 1 < bytes.count else { throw error("truncated escape") }
                switch bytes[position + 1] {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "b"), UInt8(ascii: "t"),
                     UInt8(ascii: "n"), UInt8(ascii: "f"), UInt8(ascii: "r"):
                    position += 2
                case UInt8(ascii: "u"):
                    // Canonical form escapes with \u only the control characters that have no
                    // short form, in lowercase hex.
                    guard position + 6 <= bytes.count,
                          bytes[position + 2] == UInt8(ascii: "0"), bytes[position + 3] == UInt8(ascii: "0"),
                          let high = Self.lowerHex(bytes[position + 4]), let low = Self.lowerHex(bytes[position + 5]) else {
                        throw error("a \\u escape other than a lowercase control-character escape")
                    }
                    let scalar = high << 4 | low
                    guard scalar < 0x20, ![0x08, 0x09, 0x0A, 0x0C, 0x0D].contains(scalar) else {
                        throw error("\\u escape for a character that is written otherwise")
                    }
                    position += 6
                default: throw error("invalid escape")
                }
            case 0x00..<0x20: throw error("unescaped control character")
            case 0x80...:
                position += try utf8SequenceLength(at: position)
            default:
                position += 1
            }
        }
        throw error("unterminated string")
    }

    private func utf8SequenceLength(at i: Int) throws -> Int {
        let lead = bytes[i]
        let (length, minimum): (Int, UInt32) = switch lead {
        case 0xC2...0xDF: (2, 0x80)
        case 0xE0...0xEF: (3, 0x800)
        case 0xF0...0xF4: (4, 0x10000)
        default: throw error("invalid UTF-8")
        }
        guard i + length <= bytes.count else { throw error("truncated UTF-8") }
        var scalar = UInt32(lead) & (0xFF >> UInt32(length + 1))
        for k in 1..<length {
            let next = bytes[i + k]
            guard next & 0xC0 == 0x80 else { throw error("invalid UTF-8") }
            scalar = scalar << 6 | UInt32(next & 0x3F)
        }
        guard scalar >= minimum, scalar <= 0x10FFFF, !(0xD800...0xDFFF).contains(scalar) else {
            throw error("invalid UTF-8")
        }
        return length
    }

    private static func lowerHex(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        default: nil
        }
    }

    /// Decodes validated raw string content.
    package func decode(_ range: Range<Int>) -> String {
        if !bytes[range].contains(UInt8(ascii: "\\")) {
            return String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
        }
        var out: [UInt8] = []
        var i = range.lowerBound
        while i < range.upperBound {
            let byte = bytes[i]
            guard byte == UInt8(ascii: "\\") else { out.append(byte); i += 1; continue }
            switch bytes[i + 1] {
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "u"):
                out.append(Self.lowerHex(bytes[i + 4])! << 4 | Self.lowerHex(bytes[i + 5])!)
                i += 6
                continue
            default: out.append(bytes[i + 1])
            }
            i += 2
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Whether name `a` sorts strictly before `b` in UTF-16 code-unit order. Names are compared
    /// decoded, since an escape (`\n`) and the character it stands for sort by the character;
    /// plain ASCII names (both `plain`) compare as bytes.
    private func namesAscend(_ a: Range<Int>, _ b: Range<Int>, plain: Bool) -> Bool {
        if plain {
            let common = Swift.min(a.count, b.count)
            let order = memcmp(bytes.baseAddress! + a.lowerBound, bytes.baseAddress! + b.lowerBound, common)
            return order < 0 || (order == 0 && a.count < b.count)
        }
        return decode(a).utf16.lexicographicallyPrecedes(decode(b).utf16)
    }
}
