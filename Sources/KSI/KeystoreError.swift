public import PKCS11

/// The one error type of the KSI: a small stable code that the HTTP layer and the CLI map to a
/// status or an exit code in one `switch`, a reason written for the operator, and the
/// underlying driver detail (`C_Login failed: CKR_PIN_INCORRECT (0xA0)`). Never holds a PIN or
/// key material. Equality compares codes.
public struct KeystoreError: Error, Sendable, CustomStringConvertible, Equatable {
    public enum Code: String, Sendable, Codable, CaseIterable {
        /// The request is malformed: bad URI, unknown profile key, corrupt blob.
        case invalidInput = "invalid_input"
        /// The token or key does not exist.
        case notFound = "not_found"
        /// The keystore refused: wrong PIN, locked PIN, key not allowed to wrap, policy.
        case permissionDenied = "permission_denied"
        /// The keystore cannot be reached: module missing, token absent, device error, pool exhausted.
        case unavailable
        /// The keystore cannot do what is asked: mechanism or key type not supported.
        case unsupported
        /// The request conflicts with the keystore's state (ambiguous names, duplicate objects).
        case conflict
        /// Anything unexpected.
        case `internal`
    }

    public let code: Code
    public let reason: String
    /// The driver-level cause, for logs and operators (`C_WrapKey failed: CKR_... (0x..)`).
    public let detail: String?

    public init(_ code: Code, _ reason: String, detail: String? = nil) {
        self.code = code
        self.reason = reason
        self.detail = detail
    }

    public var description: String {
        detail.map { "\(code.rawValue): \(reason) (\($0))" } ?? "\(code.rawValue): \(reason)"
    }

    public static func == (lhs: KeystoreError, rhs: KeystoreError) -> Bool { lhs.code == rhs.code }
}

extension KeystoreError {
    /// The translation of PKCS#11 errors, done once, here.
    public init(_ error: PKCS11Error, context: String? = nil) {
        let detail = error.description
        let prefix = context.map { "\($0): " } ?? ""
        switch error.code {
        case .returnValue(let rv) where error.function == .C_Initialize:
            // The generic words for a return value ("rejected the request's parameters") would
            // hide that it is the module's initialisation, and the module layer's reason says more.
            let (code, _) = Self.translate(rv, error: error)
            self.init(code, prefix + "\(error.module ?? "the module") failed C_Initialize with \(rv): \(error.reason)", detail: detail)
        case .returnValue(let rv):
            let (code, reason) = Self.translate(rv, error: error)
            self.init(code, prefix + reason, detail: detail)
        case .moduleNotFound:
            self.init(.unavailable, prefix + "the PKCS#11 module file is missing: \(error.module ?? "?")", detail: detail)
        case .notAModule:
            self.init(.unavailable, prefix + "\(error.module ?? "the file") is not a PKCS#11 module", detail: detail)
        case .tokenNotFound:
            self.init(.notFound, prefix + error.reason, detail: detail)
        case .ambiguousToken, .ambiguousObject:
            self.init(.conflict, prefix + error.reason, detail: detail)
        case .objectNotFound:
            self.init(.notFound, prefix + error.reason, detail: detail)
        case .pinSourceUnavailable:
            self.init(.invalidInput, prefix + error.reason, detail: detail)
        case .tokenUnavailable, .poolTimeout, .poolClosed:
            self.init(.unavailable, prefix + (error.reason.isEmpty ? error.code.description : error.reason), detail: detail)
        case .invalidArgument:
            self.init(.invalidInput, prefix + error.reason, detail: detail)
        }
    }

    private static func translate(_ rv: ReturnValue, error: PKCS11Error) -> (Code, String) {
        switch rv {
        case .pinIncorrect:
            return (.permissionDenied, "wrong PIN: the token refused the login; it was not retried, so the token's retry counter moved by one only")
        case .pinLocked:
            return (.permissionDenied, "the user PIN is locked on the token; the security officer must unlock it")
        case .pinExpired:
            return (.permissionDenied, "the user PIN has expired and must be changed on the token")
        case .pinInvalid, .pinLenRange:
            return (.permissionDenied, "the PIN has a form or length the token does not accept")
        case .userPinNotInitialized:
            return (.permissionDenied, "the token's user PIN is not initialised")
        case .userNotLoggedIn:
            return (.permissionDenied, "the operation needs a logged-in user and no PIN source is configured")
        case .keyFunctionNotPermitted:
            return (.permissionDenied, "the key's attributes do not permit this operation (CKA_WRAP/CKA_UNWRAP/CKA_ENCRYPT)")
        case .attributeSensitive:
            return (.permissionDenied, "the token refuses to reveal a sensitive attribute")
        case .keyUnextractable, .keyNotWrappable:
            return (.permissionDenied, "the key may not leave the token in this form (CKA_EXTRACTABLE or CKA_WRAP_WITH_TRUSTED)")
        case .mechanismInvalid, .mechanismParamInvalid, .functionNotSupported:
            return (.unsupported, "the token does not support this mechanism or its parameters")
        case .keySizeRange, .keyTypeInconsistent, .wrappingKeyTypeInconsistent, .unwrappingKeyTypeInconsistent,
             .wrappingKeySizeRange, .unwrappingKeySizeRange:
            return (.unsupported, "the key's type or size does not suit the mechanism")
        case .wrappedKeyInvalid, .wrappedKeyLenRange, .encryptedDataInvalid, .encryptedDataLenRange, .dataLenRange, .dataInvalid:
            return (.invalidInput, "the wrapped blob is malformed or was not wrapped by this key")
        case .argumentsBad, .templateInconsistent, .templateIncomplete, .attributeValueInvalid, .attributeTypeInvalid,
             .attributeReadOnly:
            return (.invalidInput, "the token rejected the request's parameters")
        case .deviceRemoved, .tokenNotPresent, .tokenNotRecognized:
            return (.unavailable, "the token is not present (device removed or slot empty)")
        case .deviceError, .deviceMemory, .cryptokiNotInitialized, .slotIDInvalid, .sessionCount:
            return (.unavailable, "the token or its module is not in a usable state")
        case .tokenWriteProtected, .sessionReadOnly:
            return (.permissionDenied, "the token is write-protected")
        default:
            return (.internal, "the token returned an unexpected error")
        }
    }
}

/// Runs `body`, translating PKCS#11 errors at this boundary.
func translating<T>(_ context: String? = nil, _ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as PKCS11Error {
        throw KeystoreError(error, context: context)
    } catch let error as PKCS11URI.ParseError {
        throw KeystoreError(.invalidInput, "malformed PKCS#11 URI: \(error.message)")
    }
}
