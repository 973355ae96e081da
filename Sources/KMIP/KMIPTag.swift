/// A KMIP tag (§9.1.3.1): three bytes, `0x42xxxx` for the standard ones. Only the tags this
/// driver writes or reads are named; any other decodes as its number.
public struct KMIPTag: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt32

    public init(rawValue: UInt32) { self.rawValue = rawValue & 0xFF_FFFF }

    public var description: String { Self.names[rawValue] ?? "0x" + String(rawValue, radix: 16, uppercase: true) }

    public static let activationDate = KMIPTag(rawValue: 0x42_0001)
    public static let attribute = KMIPTag(rawValue: 0x42_0008)
    public static let attributeIndex = KMIPTag(rawValue: 0x42_0009)
    public static let attributeName = KMIPTag(rawValue: 0x42_000A)
    public static let attributeValue = KMIPTag(rawValue: 0x42_000B)
    public static let batchCount = KMIPTag(rawValue: 0x42_000D)
    public static let batchItem = KMIPTag(rawValue: 0x42_000F)
    public static let blockCipherMode = KMIPTag(rawValue: 0x42_0011)
    public static let compromiseOccurrenceDate = KMIPTag(rawValue: 0x42_0021)
    public static let cryptographicAlgorithm = KMIPTag(rawValue: 0x42_0028)
    public static let cryptographicLength = KMIPTag(rawValue: 0x42_002A)
    public static let cryptographicParameters = KMIPTag(rawValue: 0x42_002B)
    public static let cryptographicUsageMask = KMIPTag(rawValue: 0x42_002C)
    public static let ivCounterNonce = KMIPTag(rawValue: 0x42_003D)
    public static let maximumItems = KMIPTag(rawValue: 0x42_004F)
    public static let maximumResponseSize = KMIPTag(rawValue: 0x42_0050)
    public static let name = KMIPTag(rawValue: 0x42_0053)
    public static let nameType = KMIPTag(rawValue: 0x42_0054)
    public static let nameValue = KMIPTag(rawValue: 0x42_0055)
    public static let objectType = KMIPTag(rawValue: 0x42_0057)
    public static let operation = KMIPTag(rawValue: 0x42_005C)
    public static let paddingMethod = KMIPTag(rawValue: 0x42_005F)
    public static let protocolVersion = KMIPTag(rawValue: 0x42_0069)
    public static let protocolVersionMajor = KMIPTag(rawValue: 0x42_006A)
    public static let protocolVersionMinor = KMIPTag(rawValue: 0x42_006B)
    public static let requestHeader = KMIPTag(rawValue: 0x42_0077)
    public static let requestMessage = KMIPTag(rawValue: 0x42_0078)
    public static let requestPayload = KMIPTag(rawValue: 0x42_0079)
    public static let responseHeader = KMIPTag(rawValue: 0x42_007A)
    public static let responseMessage = KMIPTag(rawValue: 0x42_007B)
    public static let responsePayload = KMIPTag(rawValue: 0x42_007C)
    public static let resultMessage = KMIPTag(rawValue: 0x42_007D)
    public static let resultReason = KMIPTag(rawValue: 0x42_007E)
    public static let resultStatus = KMIPTag(rawValue: 0x42_007F)
    public static let revocationMessage = KMIPTag(rawValue: 0x42_0080)
    public static let revocationReason = KMIPTag(rawValue: 0x42_0081)
    public static let revocationReasonCode = KMIPTag(rawValue: 0x42_0082)
    public static let state = KMIPTag(rawValue: 0x42_008D)
    public static let templateAttribute = KMIPTag(rawValue: 0x42_0091)
    public static let timeStamp = KMIPTag(rawValue: 0x42_0092)
    public static let uniqueBatchItemID = KMIPTag(rawValue: 0x42_0093)
    public static let uniqueIdentifier = KMIPTag(rawValue: 0x42_0094)
    public static let tagLength = KMIPTag(rawValue: 0x42_00CE)
    public static let data = KMIPTag(rawValue: 0x42_00C2)
    public static let randomIV = KMIPTag(rawValue: 0x42_00C5)
    /// KMIP 1.4.
    public static let authenticatedEncryptionAdditionalData = KMIPTag(rawValue: 0x42_00FE)
    /// KMIP 1.4.
    public static let authenticatedEncryptionTag = KMIPTag(rawValue: 0x42_00FF)

    static let names: [UInt32: String] = [
        0x42_0008: "Attribute", 0x42_000A: "Attribute Name", 0x42_000B: "Attribute Value", 0x42_000D: "Batch Count",
        0x42_000F: "Batch Item", 0x42_002B: "Cryptographic Parameters", 0x42_0053: "Name", 0x42_0057: "Object Type",
        0x42_005C: "Operation", 0x42_0069: "Protocol Version", 0x42_0077: "Request Header", 0x42_0078: "Request Message",
        0x42_0079: "Request Payload", 0x42_007A: "Response Header", 0x42_007B: "Response Message", 0x42_007C: "Response Payload",
        0x42_007D: "Result Message", 0x42_007E: "Result Reason", 0x42_007F: "Result Status", 0x42_008D: "State",
        0x42_0091: "Template-Attribute", 0x42_0092: "Time Stamp", 0x42_0094: "Unique Identifier", 0x42_00C2: "Data",
        0x42_003D: "IV/Counter/Nonce", 0x42_00FF: "Authenticated Encryption Tag",
    ]
}

/// The KMIP enumerations and masks this driver uses (KMIP 1.4 §9.1.3.2, the same values in 2.0).
public enum KMIP {
    public enum Operation: UInt32, Sendable, CustomStringConvertible {
        case create = 0x01
        case locate = 0x08
        case get = 0x0A
        case getAttributes = 0x0B
        case activate = 0x12
        case revoke = 0x13
        case destroy = 0x14
        case query = 0x18
        case discoverVersions = 0x1E
        case encrypt = 0x1F
        case decrypt = 0x20

        public var description: String {
            switch self {
            case .create: return "Create"
            case .locate: return "Locate"
            case .get: return "Get"
            case .getAttributes: return "Get Attributes"
            case .activate: return "Activate"
            case .revoke: return "Revoke"
            case .destroy: return "Destroy"
            case .query: return "Query"
            case .discoverVersions: return "Discover Versions"
            case .encrypt: return "Encrypt"
            case .decrypt: return "Decrypt"
            }
        }
    }

    public enum ResultStatus: UInt32, Sendable {
        case success = 0
        case operationFailed = 1
        case operationPending = 2
        case operationUndone = 3
    }

    /// Why an operation failed, in the server's enumeration (§9.1.3.2.29).
    public enum ResultReason: UInt32, Sendable, CustomStringConvertible {
        case itemNotFound = 0x01
        case responseTooLarge = 0x02
        case authenticationNotSuccessful = 0x03
        case invalidMessage = 0x04
        case operationNotSupported = 0x05
        case missingData = 0x06
        case invalidField = 0x07
        case featureNotSupported = 0x08
        case operationCanceledByRequester = 0x09
        case cryptographicFailure = 0x0A
        case illegalOperation = 0x0B
        case permissionDenied = 0x0C
        case objectArchived = 0x0D
        case indexOutOfBounds = 0x0E
        case applicationNamespaceNotSupported = 0x0F
        case keyFormatTypeNotSupported = 0x10
        case keyCompressionTypeNotSupported = 0x11
        case encodingOptionError = 0x12
        case keyValueNotPresent = 0x13
        case attestationRequired = 0x14
        case attestationFailed = 0x15
        case sensitive = 0x16
        case notExtractable = 0x17
        case objectAlreadyExists = 0x18
        case generalFailure = 0x100

        public var description: String {
            switch self {
            case .itemNotFound: return "Item Not Found"
            case .responseTooLarge: return "Response Too Large"
            case .authenticationNotSuccessful: return "Authentication Not Successful"
            case .invalidMessage: return "Invalid Message"
            case .operationNotSupported: return "Operation Not Supported"
            case .missingData: return "Missing Data"
            case .invalidField: return "Invalid Field"
            case .featureNotSupported: return "Feature Not Supported"
            case .operationCanceledByRequester: return "Operation Canceled By Requester"
            case .cryptographicFailure: return "Cryptographic Failure"
            case .illegalOperation: return "Illegal Operation"
            case .permissionDenied: return "Permission Denied"
            case .objectArchived: return "Object Archived"
            case .indexOutOfBounds: return "Index Out of Bounds"
            case .applicationNamespaceNotSupported: return "Application Namespace Not Supported"
            case .keyFormatTypeNotSupported: return "Key Format Type Not Supported"
            case .keyCompressionTypeNotSupported: return "Key Compression Type Not Supported"
            case .encodingOptionError: return "Encoding Option Error"
            case .keyValueNotPresent: return "Key Value Not Present"
            case .attestationRequired: return "Attestation Required"
            case .attestationFailed: return "Attestation Failed"
            case .sensitive: return "Sensitive"
            case .notExtractable: return "Not Extractable"
            case .objectAlreadyExists: return "Object Already Exists"
            case .generalFailure: return "General Failure"
            }
        }
    }

    public enum ObjectType: UInt32, Sendable {
        case certificate = 1
        case symmetricKey = 2
        case publicKey = 3
        case privateKey = 4
        case splitKey = 5
        case template = 6
        case secretData = 7
        case opaqueObject = 8
        case pgpKey = 9
    }

    public enum State: UInt32, Sendable, CustomStringConvertible {
        case preActive = 1
        case active = 2
        case deactivated = 3
        case compromised = 4
        case destroyed = 5
        case destroyedCompromised = 6

        public var description: String {
            switch self {
            case .preActive: return "Pre-Active"
            case .active: return "Active"
            case .deactivated: return "Deactivated"
            case .compromised: return "Compromised"
            case .destroyed: return "Destroyed"
            case .destroyedCompromised: return "Destroyed Compromised"
            }
        }
    }

    public static let aes: UInt32 = 0x03

    public enum BlockCipherMode: UInt32, Sendable {
        case cbc = 0x01
        case gcm = 0x09
    }

    public enum PaddingMethod: UInt32, Sendable {
        case none = 0x01
        case pkcs5 = 0x03
    }

    public enum RevocationReasonCode: UInt32, Sendable {
        case unspecified = 0x01
        case keyCompromise = 0x02
        case caCompromise = 0x03
        case affiliationChanged = 0x04
        case superseded = 0x05
        case cessationOfOperation = 0x06
        case privilegeWithdrawn = 0x07
    }

    /// Cryptographic Usage Mask bits (§9.1.3.3.1).
    public struct UsageMask: OptionSet, Sendable, Hashable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        public static let sign = UsageMask(rawValue: 0x01)
        public static let verify = UsageMask(rawValue: 0x02)
        public static let encrypt = UsageMask(rawValue: 0x04)
        public static let decrypt = UsageMask(rawValue: 0x08)
        public static let wrapKey = UsageMask(rawValue: 0x10)
        public static let unwrapKey = UsageMask(rawValue: 0x20)
    }

    /// A protocol version as the header carries it.
    public struct ProtocolVersion: Sendable, Hashable, Codable, Comparable, CustomStringConvertible {
        public var major: Int32
        public var minor: Int32

        public init(_ major: Int32, _ minor: Int32) {
            self.major = major
            self.minor = minor
        }

        /// `"1.2"` → 1.2; nil for anything else.
        public init?(text: String) {
            let parts = text.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count == 2, let major = Int32(parts[0]), let minor = Int32(parts[1]) else { return nil }
            self.init(major, minor)
        }

        public var description: String { "\(major).\(minor)" }

        public static func < (lhs: Self, rhs: Self) -> Bool { (lhs.major, lhs.minor) < (rhs.major, rhs.minor) }

        /// The versions whose encoding of the operations used here this driver writes: KMIP
        /// 1.0–1.4 share it (1.4 adds the authenticated-encryption fields). KMIP 2.0 changed
        /// attributes (no Template-Attribute, Attribute Reference in Get Attributes), which
        /// this driver does not write (Docs/KMIP.md).
        public static let supported: [ProtocolVersion] = [.init(1, 4), .init(1, 3), .init(1, 2), .init(1, 1), .init(1, 0)]
    }
}
