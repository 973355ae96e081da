import CMKCore
import CPKCS11

/// An object class (`CK_OBJECT_CLASS`).
public struct ObjectClass: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }
    public static let data = ObjectClass(rawValue: 0x0)
    public static let certificate = ObjectClass(rawValue: 0x1)
    public static let publicKey = ObjectClass(rawValue: 0x2)
    public static let privateKey = ObjectClass(rawValue: 0x3)
    public static let secretKey = ObjectClass(rawValue: 0x4)

    /// The RFC 7512 `type` word.
    public var uriName: String {
        switch self {
        case .data: return "data"
        case .certificate: return "cert"
        case .publicKey: return "public"
        case .privateKey: return "private"
        case .secretKey: return "secret-key"
        default: return "0x\(String(rawValue, radix: 16))"
        }
    }

    public var description: String {
        switch self {
        case .data: return "CKO_DATA"
        case .certificate: return "CKO_CERTIFICATE"
        case .publicKey: return "CKO_PUBLIC_KEY"
        case .privateKey: return "CKO_PRIVATE_KEY"
        case .secretKey: return "CKO_SECRET_KEY"
        default: return "CKO_0x\(String(rawValue, radix: 16, uppercase: true))"
        }
    }
}

/// A key type (`CK_KEY_TYPE`).
public struct KeyType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }
    public static let rsa = KeyType(rawValue: 0x0)
    public static let ec = KeyType(rawValue: 0x3)
    public static let genericSecret = KeyType(rawValue: 0x10)
    public static let des3 = KeyType(rawValue: 0x15)
    public static let aes = KeyType(rawValue: 0x1F)
    public static let ecEdwards = KeyType(rawValue: 0x40)

    public var description: String {
        switch self {
        case .rsa: return "CKK_RSA"
        case .ec: return "CKK_EC"
        case .genericSecret: return "CKK_GENERIC_SECRET"
        case .des3: return "CKK_DES3"
        case .aes: return "CKK_AES"
        case .ecEdwards: return "CKK_EC_EDWARDS"
        default: return "CKK_0x\(String(rawValue, radix: 16, uppercase: true))"
        }
    }
}

/// An attribute code (`CK_ATTRIBUTE_TYPE`).
public struct AttributeType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }
    public static let `class` = AttributeType(rawValue: 0x0)
    public static let token = AttributeType(rawValue: 0x1)
    public static let `private` = AttributeType(rawValue: 0x2)
    public static let label = AttributeType(rawValue: 0x3)
    public static let value = AttributeType(rawValue: 0x11)
    public static let keyType = AttributeType(rawValue: 0x100)
    public static let id = AttributeType(rawValue: 0x102)
    public static let sensitive = AttributeType(rawValue: 0x103)
    public static let encrypt = AttributeType(rawValue: 0x104)
    public static let decrypt = AttributeType(rawValue: 0x105)
    public static let wrap = AttributeType(rawValue: 0x106)
    public static let unwrap = AttributeType(rawValue: 0x107)
    public static let sign = AttributeType(rawValue: 0x108)
    public static let verify = AttributeType(rawValue: 0x10A)
    public static let derive = AttributeType(rawValue: 0x10C)
    public static let modulus = AttributeType(rawValue: 0x120)
    public static let modulusBits = AttributeType(rawValue: 0x121)
    public static let publicExponent = AttributeType(rawValue: 0x122)
    public static let ecParams = AttributeType(rawValue: 0x180)
    public static let ecPoint = AttributeType(rawValue: 0x181)
    public static let valueLen = AttributeType(rawValue: 0x161)
    public static let extractable = AttributeType(rawValue: 0x162)
    public static let local = AttributeType(rawValue: 0x163)
    public static let neverExtractable = AttributeType(rawValue: 0x164)
    public static let alwaysSensitive = AttributeType(rawValue: 0x165)
    public static let modifiable = AttributeType(rawValue: 0x170)
    public static let wrapWithTrusted = AttributeType(rawValue: 0x210)

    /// The value's size when the specification fixes it (`CK_ULONG` or `CK_BBOOL`).
    var fixedSize: Int? {
        switch self {
        case .class, .keyType, .valueLen, .modulusBits: return MemoryLayout<UInt>.size
        case .token, .private, .sensitive, .encrypt, .decrypt, .wrap, .unwrap, .sign, .verify, .derive,
             .extractable, .local, .neverExtractable, .alwaysSensitive, .modifiable, .wrapWithTrusted: return 1
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .class: return "CKA_CLASS"
        case .token: return "CKA_TOKEN"
        case .private: return "CKA_PRIVATE"
        case .label: return "CKA_LABEL"
        case .value: return "CKA_VALUE"
        case .keyType: return "CKA_KEY_TYPE"
        case .id: return "CKA_ID"
        case .sensitive: return "CKA_SENSITIVE"
        case .encrypt: return "CKA_ENCRYPT"
        case .decrypt: return "CKA_DECRYPT"
        case .wrap: return "CKA_WRAP"
        case .unwrap: return "CKA_UNWRAP"
        case .sign: return "CKA_SIGN"
        case .verify: return "CKA_VERIFY"
        case .derive: return "CKA_DERIVE"
        case .modulus: return "CKA_MODULUS"
        case .modulusBits: return "CKA_MODULUS_BITS"
        case .publicExponent: return "CKA_PUBLIC_EXPONENT"
        case .valueLen: return "CKA_VALUE_LEN"
        case .ecParams: return "CKA_EC_PARAMS"
        case .ecPoint: return "CKA_EC_POINT"
        case .extractable: return "CKA_EXTRACTABLE"
        case .local: return "CKA_LOCAL"
        case .neverExtractable: return "CKA_NEVER_EXTRACTABLE"
        case .alwaysSensitive: return "CKA_ALWAYS_SENSITIVE"
        case .modifiable: return "CKA_MODIFIABLE"
        case .wrapWithTrusted: return "CKA_WRAP_WITH_TRUSTED"
        default: return "CKA_0x\(String(rawValue, radix: 16, uppercase: true))"
        }
    }
}

/// A typed attribute for templates. Key values are deliberately absent: secret material only
/// travels as `SecretBytes` through dedicated calls.
public enum Attribute: Sendable, Hashable {
    case `class`(ObjectClass)
    case keyType(KeyType)
    case label(String)
    case id([UInt8])
    case token(Bool)
    case `private`(Bool)
    case sensitive(Bool)
    case extractable(Bool)
    case encrypt(Bool)
    case decrypt(Bool)
    case wrap(Bool)
    case unwrap(Bool)
    case sign(Bool)
    case verify(Bool)
    case derive(Bool)
    case modifiable(Bool)
    case valueLen(Int)
    case modulusBits(Int)
    case publicExponent([UInt8])
    /// DER-encoded curve parameters (an OID, or a PrintableString curve name).
    case ecParams([UInt8])

    public var type: AttributeType {
        switch self {
        case .class: return .class
        case .keyType: return .keyType
        case .label: return .label
        case .id: return .id
        case .token: return .token
        case .private: return .private
        case .sensitive: return .sensitive
        case .extractable: return .extractable
        case .encrypt: return .encrypt
        case .decrypt: return .decrypt
        case .wrap: return .wrap
        case .unwrap: return .unwrap
        case .sign: return .sign
        case .verify: return .verify
        case .derive: return .derive
        case .modifiable: return .modifiable
        case .valueLen: return .valueLen
        case .modulusBits: return .modulusBits
        case .publicExponent: return .publicExponent
        case .ecParams: return .ecParams
        }
    }

    /// The value's bytes as the module reads them (`CK_ULONG` native, `CK_BBOOL` one byte).
    var encoded: [UInt8] {
        switch self {
        case .class(let value): return Self.ulong(value.rawValue)
        case .keyType(let value): return Self.ulong(value.rawValue)
        case .label(let value): return Array(value.utf8)
        case .id(let value), .publicExponent(let value), .ecParams(let value): return value
        case .token(let value), .private(let value), .sensitive(let value), .extractable(let value),
             .encrypt(let value), .decrypt(let value), .wrap(let value), .unwrap(let value),
             .sign(let value), .verify(let value), .derive(let value), .modifiable(let value):
            return [value ? 1 : 0]
        case .valueLen(let value), .modulusBits(let value): return Self.ulong(UInt(value))
        }
    }

    static func ulong(_ value: UInt) -> [UInt8] { withUnsafeBytes(of: value) { Array($0) } }
}

/// Builds a `CK_ATTRIBUTE` array over one buffer for the duration of `body`. Values are
/// written straight into the buffer (this runs on every operation), each at an 8-byte aligned
/// offset so that modules reading a `CK_ULONG` in place read aligned memory.
func withCKTemplate<R>(
    _ attributes: [Attribute],
    extra: (AttributeType, SecretBytes)? = nil,
    _ body: (UnsafeMutablePointer<CK_ATTRIBUTE>?, UInt) throws -> R
) throws -> R {
    var total = 0
    for attribute in attributes { total += (attribute.encodedCount + 7) & ~7 }
    let count = attributes.count + (extra == nil ? 0 : 1)
    let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: Swift.max(total, 8), alignment: 8)
    defer { storage.deallocate() }
    let template = UnsafeMutablePointer<CK_ATTRIBUTE>.allocate(capacity: Swift.max(count, 1))
    defer { template.deallocate() }
    var offset = 0
    for (index, attribute) in attributes.enumerated() {
        let destination = storage.baseAddress! + offset
        let length = attribute.encode(into: destination)
        template[index] = CK_ATTRIBUTE(type: attribute.type.rawValue, pValue: length == 0 ? nil : destination, ulValueLen: UInt(length))
        offset += (length + 7) & ~7
    }
    guard let (type, secret) = extra else {
        return try body(template, UInt(count))
    }
    return try secret.withUnsafeMutableBytes { secretBuffer in
        template[attributes.count] = CK_ATTRIBUTE(type: type.rawValue, pValue: secretBuffer.baseAddress, ulValueLen: UInt(secretBuffer.count))
        return try body(template, UInt(count))
    }
}

extension Attribute {
    var encodedCount: Int {
        switch self {
        case .class, .keyType, .valueLen, .modulusBits: return MemoryLayout<UInt>.size
        case .label(let value): return value.utf8.count
        case .id(let value), .publicExponent(let value), .ecParams(let value): return value.count
        default: return 1
        }
    }

    /// Writes the value at `destination` (which has `encodedCount` bytes) and returns its length.
    func encode(into destination: UnsafeMutableRawPointer) -> Int {
        func ulong(_ value: UInt) -> Int {
            destination.storeBytes(of: value, as: UInt.self)
            return MemoryLayout<UInt>.size
        }
        func bytes<C: Collection>(_ value: C) -> Int where C.Element == UInt8 {
            var index = 0
            for byte in value {
                destination.storeBytes(of: byte, toByteOffset: index, as: UInt8.self)
                index += 1
            }
            return index
        }
        switch self {
        case .class(let value): return ulong(value.rawValue)
        case .keyType(let value): return ulong(value.rawValue)
        case .valueLen(let value), .modulusBits(let value): return ulong(UInt(value))
        case .label(let value): return bytes(value.utf8)
        case .id(let value), .publicExponent(let value), .ecParams(let value): return bytes(value)
        default: return bytes(encoded)
        }
    }
}

/// Attribute values read back from an object, with typed accessors. Absent means the token
/// refused (sensitive) or does not know the attribute.
public struct AttributeValues: Sendable {
    var values: [AttributeType: [UInt8]]

    public func bytes(_ type: AttributeType) -> [UInt8]? { values[type] }

    public func bool(_ type: AttributeType) -> Bool? {
        guard let bytes = values[type], let first = bytes.first else { return nil }
        return first != 0
    }

    public func ulong(_ type: AttributeType) -> UInt? {
        guard let bytes = values[type], bytes.count == MemoryLayout<UInt>.size else { return nil }
        return bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt.self) }
    }

    public func string(_ type: AttributeType) -> String? {
        guard let bytes = values[type] else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }
}
