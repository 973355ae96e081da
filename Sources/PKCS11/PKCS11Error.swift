/// The error every API of the `PKCS11` target throws.
///
/// It carries a stable `code` (what went wrong), the `C_*` function that failed where there
/// was one, the module path, and a reason written for an HSM operator. Equality compares codes
/// only, so a test can build the error it expects: `PKCS11Error(.returnValue(.pinIncorrect))`.
public struct PKCS11Error: Error, Sendable, CustomStringConvertible {
    public enum Code: Hashable, Sendable, CustomStringConvertible {
        /// A `C_*` call returned something other than `CKR_OK`.
        case returnValue(ReturnValue)
        /// The module file does not exist or cannot be read.
        case moduleNotFound
        /// The file exists but is not a loadable PKCS#11 module (not a shared object, or no
        /// `C_GetFunctionList`).
        case notAModule
        /// No token matches the selector (label, serial, ...).
        case tokenNotFound
        /// More than one token matches and the caller must be more specific.
        case ambiguousToken
        /// No object matches the query.
        case objectNotFound
        /// More than one object matches the query.
        case ambiguousObject
        /// The PIN could not be read from its source (missing file, unset variable).
        case pinSourceUnavailable
        /// The token is marked unavailable after a device error and is waiting for its next
        /// re-initialisation attempt.
        case tokenUnavailable
        /// No session became free within the pool's wait timeout.
        case poolTimeout
        /// The pool has been shut down.
        case poolClosed
        /// A caller passed something the layer cannot express (bad length, bad URI field, ...).
        case invalidArgument

        public var description: String {
            switch self {
            case .returnValue(let rv): return rv.description
            case .moduleNotFound: return "module not found"
            case .notAModule: return "not a PKCS#11 module"
            case .tokenNotFound: return "token not found"
            case .ambiguousToken: return "token ambiguous"
            case .objectNotFound: return "object not found"
            case .ambiguousObject: return "object ambiguous"
            case .pinSourceUnavailable: return "PIN source unavailable"
            case .tokenUnavailable: return "token unavailable"
            case .poolTimeout: return "session pool timeout"
            case .poolClosed: return "session pool closed"
            case .invalidArgument: return "invalid argument"
            }
        }
    }

    public let code: Code
    /// The PKCS#11 function that failed, for `.returnValue` errors.
    public let function: PKCS11Function?
    /// The module path the error concerns, where known.
    public let module: String?
    /// Words an operator can act on. Never holds a PIN or key material.
    public let reason: String
    /// The token the error arose on (its label, or serial), where known: set by the session
    /// pool for everything that goes wrong in a borrow, so a log line names the HSM partition.
    public private(set) var token: String?

    public init(_ code: Code, function: PKCS11Function? = nil, module: String? = nil, reason: String = "") {
        self.code = code
        self.function = function
        self.module = module
        self.reason = reason
    }

    /// The return value when the error came from a `C_*` call.
    public var returnValue: ReturnValue? {
        if case .returnValue(let rv) = code { return rv }
        return nil
    }

    public var description: String {
        var text: String
        if let function {
            text = "\(function.rawValue) failed: \(code)"
        } else {
            text = code.description
        }
        if !reason.isEmpty { text += ": \(reason)" }
        switch (module, token) {
        case let (module?, token?): text += " [module \(module), token \"\(token)\"]"
        case let (module?, nil): text += " [module \(module)]"
        case let (nil, token?): text += " [token \"\(token)\"]"
        case (nil, nil): break
        }
        return text
    }

    /// This error, naming `token` as where it arose unless it names one already.
    public func on(token: String) -> PKCS11Error {
        var located = self
        if located.token == nil { located.token = token }
        return located
    }

    /// The recovery this error calls for (see `Docs/PKCS11Recovery.md`).
    public var recovery: Recovery {
        switch code {
        case .returnValue(let rv): return rv.recovery
        case .tokenUnavailable: return .reinitializeToken
        default: return .report
        }
    }
}

extension PKCS11Error: Equatable {
    public static func == (lhs: PKCS11Error, rhs: PKCS11Error) -> Bool { lhs.code == rhs.code }
}

/// The `C_*` functions this layer calls, named as in the specification.
public enum PKCS11Function: String, Sendable {
    case C_Initialize, C_Finalize, C_GetInfo, C_GetFunctionList, C_GetSlotList, C_GetSlotInfo
    case C_GetTokenInfo, C_GetMechanismList, C_GetMechanismInfo, C_OpenSession, C_CloseSession
    case C_CloseAllSessions, C_GetSessionInfo, C_Login, C_Logout, C_CreateObject, C_CopyObject
    case C_DestroyObject, C_GetAttributeValue, C_SetAttributeValue, C_FindObjectsInit
    case C_FindObjects, C_FindObjectsFinal, C_EncryptInit, C_Encrypt, C_DecryptInit, C_Decrypt
    case C_GenerateKey, C_GenerateKeyPair, C_WrapKey, C_UnwrapKey, C_GenerateRandom, C_SignInit, C_Sign
}
