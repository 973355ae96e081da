/// A PKCS#11 mechanism code (`CK_MECHANISM_TYPE`). Constants drop `CKM_` and read in
/// lowerCamelCase; the description prints the spec name.
public struct MechanismType: RawRepresentable, Hashable, Sendable, Comparable, CustomStringConvertible {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }

    public static let rsaPKCSKeyPairGen = MechanismType(rawValue: 0x0)
    public static let rsaPKCS = MechanismType(rawValue: 0x1)
    public static let rsaPKCSOAEP = MechanismType(rawValue: 0x9)
    public static let sha1 = MechanismType(rawValue: 0x220)
    public static let sha256 = MechanismType(rawValue: 0x250)
    public static let sha384 = MechanismType(rawValue: 0x260)
    public static let sha512 = MechanismType(rawValue: 0x270)
    public static let genericSecretKeyGen = MechanismType(rawValue: 0x350)
    public static let ecEdwardsKeyPairGen = MechanismType(rawValue: 0x1055)
    public static let eddsa = MechanismType(rawValue: 0x1057)
    public static let aesKeyGen = MechanismType(rawValue: 0x1080)
    public static let aesECB = MechanismType(rawValue: 0x1081)
    public static let aesCBC = MechanismType(rawValue: 0x1082)
    public static let aesCBCPad = MechanismType(rawValue: 0x1085)
    public static let aesCTR = MechanismType(rawValue: 0x1086)
    public static let aesGCM = MechanismType(rawValue: 0x1087)
    /// RFC 3394 AES Key Wrap.
    public static let aesKeyWrap = MechanismType(rawValue: 0x2109)
    /// RFC 5649 AES Key Wrap with Padding in SoftHSM and most 2.40 modules. PKCS#11 3.0 gives
    /// RFC 5649 its own code, `aesKeyWrapKWP`; profiles map between them.
    public static let aesKeyWrapPad = MechanismType(rawValue: 0x210A)
    /// RFC 5649 as PKCS#11 3.0 names it.
    public static let aesKeyWrapKWP = MechanismType(rawValue: 0x210B)

    public var name: String {
        if let name = Self.names[rawValue] { return name }
        return rawValue >= 0x8000_0000 ? "CKM_VENDOR_DEFINED+0x\(String(rawValue - 0x8000_0000, radix: 16, uppercase: true))" : "CKM_0x\(String(rawValue, radix: 16, uppercase: true))"
    }

    public var description: String { name }

    public static func < (lhs: MechanismType, rhs: MechanismType) -> Bool { lhs.rawValue < rhs.rawValue }

    /// Parses `CKM_AES_KEY_WRAP_PAD`, `0x210A` or a decimal number.
    public init?(parsing text: String) {
        if let code = Self.codes[text] {
            self.init(rawValue: code)
            return
        }
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if let code = Self.codes[trimmed.uppercased()] {
            self.init(rawValue: code)
        } else if trimmed.lowercased().hasPrefix("0x"), let value = UInt(trimmed.dropFirst(2), radix: 16) {
            self.init(rawValue: value)
        } else if let value = UInt(trimmed) {
            self.init(rawValue: value)
        } else {
            return nil
        }
    }

    static let codes: [String: UInt] = Dictionary(uniqueKeysWithValues: names.map { ($0.value, $0.key) })

    static let names: [UInt: String] = [
        0x0: "CKM_RSA_PKCS_KEY_PAIR_GEN", 0x1: "CKM_RSA_PKCS", 0x3: "CKM_RSA_X_509",
        0x9: "CKM_RSA_PKCS_OAEP", 0xD: "CKM_RSA_PKCS_PSS", 0x40: "CKM_SHA256_RSA_PKCS",
        0x43: "CKM_SHA256_RSA_PKCS_PSS", 0x220: "CKM_SHA_1", 0x250: "CKM_SHA256",
        0x255: "CKM_SHA224", 0x260: "CKM_SHA384", 0x270: "CKM_SHA512",
        0x251: "CKM_SHA256_HMAC", 0x350: "CKM_GENERIC_SECRET_KEY_GEN",
        0x1040: "CKM_EC_KEY_PAIR_GEN", 0x1041: "CKM_ECDSA", 0x1050: "CKM_ECDH1_DERIVE",
        0x1055: "CKM_EC_EDWARDS_KEY_PAIR_GEN", 0x1057: "CKM_EDDSA",
        0x1080: "CKM_AES_KEY_GEN", 0x1081: "CKM_AES_ECB", 0x1082: "CKM_AES_CBC",
        0x1083: "CKM_AES_MAC", 0x1085: "CKM_AES_CBC_PAD", 0x1086: "CKM_AES_CTR",
        0x1087: "CKM_AES_GCM", 0x1088: "CKM_AES_CCM", 0x108A: "CKM_AES_CMAC",
        0x2109: "CKM_AES_KEY_WRAP", 0x210A: "CKM_AES_KEY_WRAP_PAD", 0x210B: "CKM_AES_KEY_WRAP_KWP",
        0x131: "CKM_DES3_KEY_GEN", 0x132: "CKM_DES3_ECB", 0x133: "CKM_DES3_CBC",
    ]
}

import Foundation

/// What a token says about one mechanism (`CK_MECHANISM_INFO`).
public struct MechanismInfo: Sendable, Hashable {
    public var minKeySize: UInt
    public var maxKeySize: UInt
    public var flags: UInt

    public init(minKeySize: UInt, maxKeySize: UInt, flags: UInt) {
        self.minKeySize = minKeySize
        self.maxKeySize = maxKeySize
        self.flags = flags
    }

    public var hardware: Bool { flags & 0x1 != 0 }
    public var canEncrypt: Bool { flags & 0x100 != 0 }
    public var canDecrypt: Bool { flags & 0x200 != 0 }
    public var canGenerate: Bool { flags & 0x8000 != 0 }
    public var canGenerateKeyPair: Bool { flags & 0x10000 != 0 }
    public var canWrap: Bool { flags & 0x20000 != 0 }
    public var canUnwrap: Bool { flags & 0x40000 != 0 }

    /// The capability words (`encrypt`, `wrap`, ...), for people and JSON.
    public var capabilities: [String] {
        var names: [String] = []
        if hardware { names.append("hw") }
        if canEncrypt { names.append("encrypt") }
        if canDecrypt { names.append("decrypt") }
        if canGenerate { names.append("generate") }
        if canGenerateKeyPair { names.append("generate-key-pair") }
        if canWrap { names.append("wrap") }
        if canUnwrap { names.append("unwrap") }
        return names
    }
}

/// Per-profile replacements of mechanism codes. Vendors disagree on codes, RFC 5649 above all:
/// `CKM_AES_KEY_WRAP_PAD` (0x210A) is RFC 5649 in SoftHSM, while PKCS#11 3.0 modules use
/// `CKM_AES_KEY_WRAP_KWP` (0x210B) and some use a vendor-defined code. The layer asks for the
/// standard mechanism; the table says which code to send this module.
public struct MechanismCodes: Sendable, Hashable {
    public var overrides: [MechanismType: MechanismType]

    public init(_ overrides: [MechanismType: MechanismType] = [:]) { self.overrides = overrides }

    public func code(for mechanism: MechanismType) -> MechanismType { overrides[mechanism] ?? mechanism }
}
