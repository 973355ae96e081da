public import CMKCore
import CPKCS11

/// An object handle (`CK_OBJECT_HANDLE`), valid within this process until the object is
/// destroyed or the token is re-initialised.
public struct ObjectHandle: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }
    public var description: String { "#\(rawValue)" }
}

/// One PKCS#11 session. Not thread-safe, by the specification: a session is used by one thread
/// at a time. It is deliberately not `Sendable`: the compiler keeps it inside the closure that
/// borrowed it (`SessionPool.withSession`, whose result must be `Sendable`), so it cannot be
/// stored, captured by another task or returned. Closed in `deinit`.
public final class Session {
    public let module: Module
    public let slot: SlotID
    let handle: CK_SESSION_HANDLE
    let codes: MechanismCodes
    private var closed = false
    /// Set when the session may hold an object that must not outlive the operation (a
    /// temporary key whose destruction failed): the pool closes it instead of reusing it, and
    /// the token destroys its session objects with it.
    public var mustClose = false

    init(module: Module, slot: SlotID, handle: CK_SESSION_HANDLE, codes: MechanismCodes) {
        self.module = module
        self.slot = slot
        self.handle = handle
        self.codes = codes
    }

    var functions: CK_FUNCTION_LIST { module.functions.pointee }

    @inline(__always)
    func check(_ rv: CK_RV, _ function: PKCS11Function) throws {
        try module.check(rv, function)
    }

    /// Logs the user in with `pin` (`C_Login`, `CKU_USER`). `CKR_USER_ALREADY_LOGGED_IN` counts
    /// as success: login state is shared by every session of the application on the token.
    public func login(pin: SecretBytes) throws {
        let rv = pin.withUnsafeMutableBytes { buffer in
            functions.C_Login?(handle, 1, buffer.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt(buffer.count)) ?? Module.notSupported
        }
        if ReturnValue(rawValue: rv) == .userAlreadyLoggedIn { return }
        guard rv == 0 else {
            let code = ReturnValue(rawValue: rv)
            let reason: String
            switch code {
            case .pinIncorrect: reason = "the token refused the PIN; it was not retried (each wrong attempt brings the token closer to locking)"
            case .pinLocked: reason = "the user PIN is locked; the security officer must unlock or reset it"
            case .pinExpired: reason = "the user PIN has expired and must be changed on the token"
            case .pinLenRange: reason = "the PIN length is outside what the token accepts"
            case .userPinNotInitialized: reason = "the token's user PIN has not been initialised"
            default: reason = "login failed"
            }
            throw PKCS11Error(.returnValue(code), function: .C_Login, module: module.path, reason: reason)
        }
    }

    public func logout() throws {
        try check(functions.C_Logout?(handle) ?? Module.notSupported, .C_Logout)
    }

    /// The session's state (`C_GetSessionInfo`): 0 RO public, 1 RO user, 2 RW public, 3 RW user, 4 RW SO.
    public func state() throws -> UInt {
        var info = CK_SESSION_INFO()
        try check(functions.C_GetSessionInfo?(handle, &info) ?? Module.notSupported, .C_GetSessionInfo)
        return info.state
    }

    public var isLoggedIn: Bool {
        guard let state = try? state() else { return false }
        return state == 1 || state == 3 || state == 4
    }

    /// Random bytes from the token's generator.
    public func generateRandom(count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let rv = bytes.withUnsafeMutableBufferPointer { buffer in
            functions.C_GenerateRandom?(handle, buffer.baseAddress, UInt(count)) ?? Module.notSupported
        }
        try check(rv, .C_GenerateRandom)
        return bytes
    }

    /// Closes the session now rather than at `deinit`. Errors are ignored: a session closed
    /// behind our back (`C_CloseAllSessions`) is closed either way.
    public func close() {
        guard !closed else { return }
        closed = true
        _ = functions.C_CloseSession?(handle)
    }

    deinit { close() }
}
