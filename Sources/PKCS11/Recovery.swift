/// What the session pool does when a `C_*` call fails. This is the written recovery table;
/// `Docs/PKCS11Recovery.md` explains each row; `Tests/PKCS11Tests/FaultInjectionTests.swift`
/// exercises every row against a module that fails on purpose (SoftHSM under a fault shim).
public enum Recovery: Sendable, Hashable {
    /// The session is gone (closed behind our back, or by the module): discard it, open a new
    /// one and retry the operation once.
    case replaceSession
    /// The login state was lost (every session of the application closed): log in again from
    /// the PIN source on a fresh session and retry once. A refused PIN then stops everything.
    case loginAgain
    /// A cached object handle went stale (object deleted and re-created, token re-initialised):
    /// drop the handle cache, look the object up again and retry once.
    case refindObject
    /// The device or token went away, or the module lost its initialisation: mark the token
    /// unavailable, drop every session, re-initialise and find the token again, with backoff.
    case reinitializeToken
    /// A PIN problem. Never retried: every retry with a wrong PIN brings the token closer to
    /// locking. Reported at once, and the pool refuses to log in again until an operator resets
    /// it with corrected credentials.
    case neverRetry
    /// Anything else: the operation fails with the error; nothing is retried.
    case report
}

extension ReturnValue {
    public var recovery: Recovery {
        switch self {
        case .sessionHandleInvalid, .sessionClosed:
            return .replaceSession
        case .userNotLoggedIn:
            return .loginAgain
        case .objectHandleInvalid, .keyHandleInvalid, .wrappingKeyHandleInvalid, .unwrappingKeyHandleInvalid:
            return .refindObject
        case .deviceRemoved, .deviceError, .tokenNotPresent, .tokenNotRecognized,
             .cryptokiNotInitialized, .slotIDInvalid:
            return .reinitializeToken
        case .pinIncorrect, .pinInvalid, .pinLenRange, .pinExpired, .pinLocked, .userPinNotInitialized:
            return .neverRetry
        default:
            return .report
        }
    }
}
