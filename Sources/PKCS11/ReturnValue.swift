/// A PKCS#11 return value (`CK_RV`). Constants drop the `CKR_` prefix and read in
/// lowerCamelCase; `description` prints the spec's name and the hexadecimal value, the form
/// an HSM operator searches a vendor manual for (`CKR_PIN_INCORRECT (0xA0)`).
public struct ReturnValue: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt

    public init(rawValue: UInt) { self.rawValue = rawValue }

    public var name: String { Self.names[rawValue] ?? (rawValue >= 0x8000_0000 ? "CKR_VENDOR_DEFINED" : "CKR_UNKNOWN") }

    public var description: String { "\(name) (0x\(String(rawValue, radix: 16, uppercase: true)))" }

    public static let ok = ReturnValue(rawValue: 0x0)
    public static let cancel = ReturnValue(rawValue: 0x1)
    public static let hostMemory = ReturnValue(rawValue: 0x2)
    public static let slotIDInvalid = ReturnValue(rawValue: 0x3)
    public static let generalError = ReturnValue(rawValue: 0x5)
    public static let functionFailed = ReturnValue(rawValue: 0x6)
    public static let argumentsBad = ReturnValue(rawValue: 0x7)
    public static let attributeReadOnly = ReturnValue(rawValue: 0x10)
    public static let attributeSensitive = ReturnValue(rawValue: 0x11)
    public static let attributeTypeInvalid = ReturnValue(rawValue: 0x12)
    public static let attributeValueInvalid = ReturnValue(rawValue: 0x13)
    public static let dataInvalid = ReturnValue(rawValue: 0x20)
    public static let dataLenRange = ReturnValue(rawValue: 0x21)
    public static let deviceError = ReturnValue(rawValue: 0x30)
    public static let deviceMemory = ReturnValue(rawValue: 0x31)
    public static let deviceRemoved = ReturnValue(rawValue: 0x32)
    public static let encryptedDataInvalid = ReturnValue(rawValue: 0x40)
    public static let encryptedDataLenRange = ReturnValue(rawValue: 0x41)
    public static let functionCanceled = ReturnValue(rawValue: 0x50)
    public static let functionNotSupported = ReturnValue(rawValue: 0x54)
    public static let keyHandleInvalid = ReturnValue(rawValue: 0x60)
    public static let keySizeRange = ReturnValue(rawValue: 0x62)
    public static let keyTypeInconsistent = ReturnValue(rawValue: 0x63)
    public static let keyFunctionNotPermitted = ReturnValue(rawValue: 0x68)
    public static let keyNotWrappable = ReturnValue(rawValue: 0x69)
    public static let keyUnextractable = ReturnValue(rawValue: 0x6A)
    public static let mechanismInvalid = ReturnValue(rawValue: 0x70)
    public static let mechanismParamInvalid = ReturnValue(rawValue: 0x71)
    public static let objectHandleInvalid = ReturnValue(rawValue: 0x82)
    public static let operationActive = ReturnValue(rawValue: 0x90)
    public static let operationNotInitialized = ReturnValue(rawValue: 0x91)
    public static let pinIncorrect = ReturnValue(rawValue: 0xA0)
    public static let pinInvalid = ReturnValue(rawValue: 0xA1)
    public static let pinLenRange = ReturnValue(rawValue: 0xA2)
    public static let pinExpired = ReturnValue(rawValue: 0xA3)
    public static let pinLocked = ReturnValue(rawValue: 0xA4)
    public static let sessionClosed = ReturnValue(rawValue: 0xB0)
    public static let sessionCount = ReturnValue(rawValue: 0xB1)
    public static let sessionHandleInvalid = ReturnValue(rawValue: 0xB3)
    public static let sessionParallelNotSupported = ReturnValue(rawValue: 0xB4)
    public static let sessionReadOnly = ReturnValue(rawValue: 0xB5)
    public static let sessionExists = ReturnValue(rawValue: 0xB6)
    public static let sessionReadOnlyExists = ReturnValue(rawValue: 0xB7)
    public static let sessionReadWriteSOExists = ReturnValue(rawValue: 0xB8)
    public static let templateIncomplete = ReturnValue(rawValue: 0xD0)
    public static let templateInconsistent = ReturnValue(rawValue: 0xD1)
    public static let tokenNotPresent = ReturnValue(rawValue: 0xE0)
    public static let tokenNotRecognized = ReturnValue(rawValue: 0xE1)
    public static let tokenWriteProtected = ReturnValue(rawValue: 0xE2)
    public static let unwrappingKeyHandleInvalid = ReturnValue(rawValue: 0xF0)
    public static let unwrappingKeySizeRange = ReturnValue(rawValue: 0xF1)
    public static let unwrappingKeyTypeInconsistent = ReturnValue(rawValue: 0xF2)
    public static let userAlreadyLoggedIn = ReturnValue(rawValue: 0x100)
    public static let userNotLoggedIn = ReturnValue(rawValue: 0x101)
    public static let userPinNotInitialized = ReturnValue(rawValue: 0x102)
    public static let userTypeInvalid = ReturnValue(rawValue: 0x103)
    public static let userAnotherAlreadyLoggedIn = ReturnValue(rawValue: 0x104)
    public static let userTooManyTypes = ReturnValue(rawValue: 0x105)
    public static let wrappedKeyInvalid = ReturnValue(rawValue: 0x110)
    public static let wrappedKeyLenRange = ReturnValue(rawValue: 0x112)
    public static let wrappingKeyHandleInvalid = ReturnValue(rawValue: 0x113)
    public static let wrappingKeySizeRange = ReturnValue(rawValue: 0x114)
    public static let wrappingKeyTypeInconsistent = ReturnValue(rawValue: 0x115)
    public static let randomNoRNG = ReturnValue(rawValue: 0x121)
    public static let domainParamsInvalid = ReturnValue(rawValue: 0x130)
    public static let bufferTooSmall = ReturnValue(rawValue: 0x150)
    public static let informationSensitive = ReturnValue(rawValue: 0x170)
    public static let stateUnsaveable = ReturnValue(rawValue: 0x180)
    public static let cryptokiNotInitialized = ReturnValue(rawValue: 0x190)
    public static let cryptokiAlreadyInitialized = ReturnValue(rawValue: 0x191)
    public static let mutexBad = ReturnValue(rawValue: 0x1A0)
    public static let mutexNotLocked = ReturnValue(rawValue: 0x1A1)
    public static let functionRejected = ReturnValue(rawValue: 0x200)

    static let names: [UInt: String] = [
        0x0: "CKR_OK", 0x1: "CKR_CANCEL", 0x2: "CKR_HOST_MEMORY", 0x3: "CKR_SLOT_ID_INVALID",
        0x5: "CKR_GENERAL_ERROR", 0x6: "CKR_FUNCTION_FAILED", 0x7: "CKR_ARGUMENTS_BAD",
        0x8: "CKR_NO_EVENT", 0x9: "CKR_NEED_TO_CREATE_THREADS", 0xA: "CKR_CANT_LOCK",
        0x10: "CKR_ATTRIBUTE_READ_ONLY", 0x11: "CKR_ATTRIBUTE_SENSITIVE",
        0x12: "CKR_ATTRIBUTE_TYPE_INVALID", 0x13: "CKR_ATTRIBUTE_VALUE_INVALID",
        0x1B: "CKR_ACTION_PROHIBITED", 0x20: "CKR_DATA_INVALID", 0x21: "CKR_DATA_LEN_RANGE",
        0x30: "CKR_DEVICE_ERROR", 0x31: "CKR_DEVICE_MEMORY", 0x32: "CKR_DEVICE_REMOVED",
        0x40: "CKR_ENCRYPTED_DATA_INVALID", 0x41: "CKR_ENCRYPTED_DATA_LEN_RANGE",
        0x50: "CKR_FUNCTION_CANCELED", 0x51: "CKR_FUNCTION_NOT_PARALLEL",
        0x54: "CKR_FUNCTION_NOT_SUPPORTED", 0x60: "CKR_KEY_HANDLE_INVALID",
        0x62: "CKR_KEY_SIZE_RANGE", 0x63: "CKR_KEY_TYPE_INCONSISTENT",
        0x64: "CKR_KEY_NOT_NEEDED", 0x65: "CKR_KEY_CHANGED", 0x66: "CKR_KEY_NEEDED",
        0x67: "CKR_KEY_INDIGESTIBLE", 0x68: "CKR_KEY_FUNCTION_NOT_PERMITTED",
        0x69: "CKR_KEY_NOT_WRAPPABLE", 0x6A: "CKR_KEY_UNEXTRACTABLE",
        0x70: "CKR_MECHANISM_INVALID", 0x71: "CKR_MECHANISM_PARAM_INVALID",
        0x82: "CKR_OBJECT_HANDLE_INVALID", 0x90: "CKR_OPERATION_ACTIVE",
        0x91: "CKR_OPERATION_NOT_INITIALIZED", 0xA0: "CKR_PIN_INCORRECT",
        0xA1: "CKR_PIN_INVALID", 0xA2: "CKR_PIN_LEN_RANGE", 0xA3: "CKR_PIN_EXPIRED",
        0xA4: "CKR_PIN_LOCKED", 0xB0: "CKR_SESSION_CLOSED", 0xB1: "CKR_SESSION_COUNT",
        0xB3: "CKR_SESSION_HANDLE_INVALID", 0xB4: "CKR_SESSION_PARALLEL_NOT_SUPPORTED",
        0xB5: "CKR_SESSION_READ_ONLY", 0xB6: "CKR_SESSION_EXISTS",
        0xB7: "CKR_SESSION_READ_ONLY_EXISTS", 0xB8: "CKR_SESSION_READ_WRITE_SO_EXISTS",
        0xC0: "CKR_SIGNATURE_INVALID", 0xC1: "CKR_SIGNATURE_LEN_RANGE",
        0xD0: "CKR_TEMPLATE_INCOMPLETE", 0xD1: "CKR_TEMPLATE_INCONSISTENT",
        0xE0: "CKR_TOKEN_NOT_PRESENT", 0xE1: "CKR_TOKEN_NOT_RECOGNIZED",
        0xE2: "CKR_TOKEN_WRITE_PROTECTED", 0xF0: "CKR_UNWRAPPING_KEY_HANDLE_INVALID",
        0xF1: "CKR_UNWRAPPING_KEY_SIZE_RANGE", 0xF2: "CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT",
        0x100: "CKR_USER_ALREADY_LOGGED_IN", 0x101: "CKR_USER_NOT_LOGGED_IN",
        0x102: "CKR_USER_PIN_NOT_INITIALIZED", 0x103: "CKR_USER_TYPE_INVALID",
        0x104: "CKR_USER_ANOTHER_ALREADY_LOGGED_IN", 0x105: "CKR_USER_TOO_MANY_TYPES",
        0x110: "CKR_WRAPPED_KEY_INVALID", 0x112: "CKR_WRAPPED_KEY_LEN_RANGE",
        0x113: "CKR_WRAPPING_KEY_HANDLE_INVALID", 0x114: "CKR_WRAPPING_KEY_SIZE_RANGE",
        0x115: "CKR_WRAPPING_KEY_TYPE_INCONSISTENT", 0x120: "CKR_RANDOM_SEED_NOT_SUPPORTED",
        0x121: "CKR_RANDOM_NO_RNG", 0x130: "CKR_DOMAIN_PARAMS_INVALID",
        0x140: "CKR_CURVE_NOT_SUPPORTED", 0x150: "CKR_BUFFER_TOO_SMALL",
        0x160: "CKR_SAVED_STATE_INVALID", 0x170: "CKR_INFORMATION_SENSITIVE",
        0x180: "CKR_STATE_UNSAVEABLE", 0x190: "CKR_CRYPTOKI_NOT_INITIALIZED",
        0x191: "CKR_CRYPTOKI_ALREADY_INITIALIZED", 0x1A0: "CKR_MUTEX_BAD",
        0x1A1: "CKR_MUTEX_NOT_LOCKED", 0x1B0: "CKR_NEW_PIN_MODE", 0x1B1: "CKR_NEXT_OTP",
        0x1B5: "CKR_EXCEEDED_MAX_ITERATIONS", 0x1B6: "CKR_FIPS_SELF_TEST_FAILED",
        0x1B7: "CKR_LIBRARY_LOAD_FAILED", 0x1B8: "CKR_PIN_TOO_WEAK",
        0x1B9: "CKR_PUBLIC_KEY_INVALID", 0x200: "CKR_FUNCTION_REJECTED",
    ]
}
