import CPKCS11
import Foundation
import NIOConcurrencyHelpers

/// A PKCS#11 module loaded with `dlopen` and initialised with OS locking.
///
/// One instance per module path (see `ModuleManager`): PKCS#11 allows one `C_Initialize` per
/// process, so two owners of the same library would finalise each other. The instance owns
/// the library handle and finalises the module in `finalize()`.
public final class Module: @unchecked Sendable {
    /// The path the module was loaded from, as given.
    public let path: String
    let handle: UnsafeMutableRawPointer
    let functions: UnsafeMutablePointer<CK_FUNCTION_LIST>
    private let state = NIOLockedValueBox(State.initialized)
    /// False when another component of the process had initialised the module already: then
    /// finalising it is theirs to do.
    public var ownsInitialization: Bool { owns.withLockedValue { $0 } }
    private let owns = NIOLockedValueBox(true)

    private enum State { case initialized, finalized }

    init(path: String) throws {
        self.path = path
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw PKCS11Error(.moduleNotFound, module: path, reason: "no readable file at \(path); check the profile's module path and that the vendor package is installed")
        }
        // RTLD_NOW: an unresolved symbol fails here, naming the module, not later mid-operation.
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            let detail = dlerror().map { String(cString: $0) } ?? "unknown error"
            throw PKCS11Error(.notAModule, module: path, reason: "cannot load as a shared library: \(detail)")
        }
        guard let symbol = dlsym(handle, "C_GetFunctionList") else {
            dlclose(handle)
            throw PKCS11Error(.notAModule, module: path, reason: "the library has no C_GetFunctionList symbol; it is not a PKCS#11 module")
        }
        typealias GetFunctionList = @convention(c) (UnsafeMutablePointer<UnsafeMutablePointer<CK_FUNCTION_LIST>?>?) -> CK_RV
        let getFunctionList = unsafeBitCast(symbol, to: GetFunctionList.self)
        var list: UnsafeMutablePointer<CK_FUNCTION_LIST>?
        let rv = ReturnValue(rawValue: getFunctionList(&list))
        guard rv == .ok, let list else {
            dlclose(handle)
            throw PKCS11Error(.returnValue(rv == .ok ? .generalError : rv), function: .C_GetFunctionList, module: path,
                              reason: "the module returned no function list")
        }
        self.handle = handle
        self.functions = list
        do {
            owns.withLockedValue { $0 = true }
            let initialized = try Self.initialize(list, path: path)
            owns.withLockedValue { $0 = initialized }
        } catch {
            dlclose(handle)
            throw error
        }
    }

    /// Returns whether this call initialised the module (false: it already was).
    @discardableResult
    private static func initialize(_ list: UnsafeMutablePointer<CK_FUNCTION_LIST>, path: String) throws -> Bool {
        // CKF_OS_LOCKING_OK: the module may be called from several threads at once and uses
        // the operating system's locks; no mutex callbacks.
        var arguments = CK_C_INITIALIZE_ARGS(CreateMutex: nil, DestroyMutex: nil, LockMutex: nil, UnlockMutex: nil,
                                             flags: 0x2, pReserved: nil)
        let rv = ReturnValue(rawValue: list.pointee.C_Initialize?(&arguments) ?? ReturnValue.functionNotSupported.rawValue)
        // Already initialised by someone else in this process (p11-kit proxy, another library):
        // the module is usable and this instance simply shares it.
        guard rv == .ok || rv == .cryptokiAlreadyInitialized else {
            throw PKCS11Error(.returnValue(rv), function: .C_Initialize, module: path,
                              reason: "the module refused to initialise; its own log or configuration file usually says why")
        }
        return rv == .ok
    }

    /// Runs `C_Initialize` again after the module lost its initialisation
    /// (`CKR_CRYPTOKI_NOT_INITIALIZED`), as the recovery table asks.
    public func reinitialize() throws {
        let initialized = try Self.initialize(functions, path: path)
        owns.withLockedValue { $0 = initialized }
        state.withLockedValue { $0 = .initialized }
    }

    /// Calls `C_Finalize` once; later calls do nothing. Sessions become invalid.
    public func finalize() {
        let shouldFinalize = state.withLockedValue { state -> Bool in
            guard case .initialized = state else { return false }
            state = .finalized
            return true
        }
        if shouldFinalize && ownsInitialization {
            _ = functions.pointee.C_Finalize?(nil)
        }
    }

    /// Throws the error for a `C_*` return value other than `CKR_OK`.
    @inline(__always)
    func check(_ rv: CK_RV, _ function: PKCS11Function) throws {
        if rv != 0 { throw PKCS11Error(.returnValue(ReturnValue(rawValue: rv)), function: function, module: path) }
    }

    static let notSupported = ReturnValue.functionNotSupported.rawValue

    /// Library information (`C_GetInfo`).
    public func info() throws -> ModuleInfo {
        var info = CK_INFO()
        try check(functions.pointee.C_GetInfo?(&info) ?? Self.notSupported, .C_GetInfo)
        return ModuleInfo(
            path: path,
            cryptokiVersion: "\(info.cryptokiVersion.major).\(info.cryptokiVersion.minor)",
            manufacturer: paddedString(info.manufacturerID),
            libraryDescription: paddedString(info.libraryDescription),
            libraryVersion: "\(info.libraryVersion.major).\(info.libraryVersion.minor)")
    }
}

/// What `C_GetInfo` reports.
public struct ModuleInfo: Sendable, Hashable, Codable {
    public var path: String
    public var cryptokiVersion: String
    public var manufacturer: String
    public var libraryDescription: String
    public var libraryVersion: String
}

/// Loads each module once per path (after resolving symbolic links) and finalises them all at
/// shutdown. A module that fails to load does not affect the others.
public final class ModuleManager: Sendable {
    private let modules = NIOLockedValueBox<[String: Module]>([:])

    /// The process's manager. PKCS#11 allows one `C_Initialize`/`C_Finalize` pair per module
    /// per process, so every component of a process should share this one.
    public static let shared = ModuleManager()

    public init() {}

    /// The module at `path`, loading and initialising it on first use.
    public func module(at path: String) throws -> Module {
        // Symbolic links resolved, so that two names of one library share one initialisation.
        let canonical = URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath().path
        // Loading happens under the lock: two callers racing for the same path must not both
        // call C_Initialize.
        let result: Result<Module, any Error> = modules.withLockedValue { modules in
            if let existing = modules[canonical] { return .success(existing) }
            do {
                let module = try Module(path: path)
                modules[canonical] = module
                return .success(module)
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    /// The thread on which modules are loaded and module-level calls (`C_Initialize`,
    /// `C_GetInfo`, slot and token listing) are made, off Swift's cooperative pool: a vendor's
    /// `C_Initialize` may connect to a network HSM and block for seconds.
    public static let executor = PKCS11Executor(name: "pkcs11-modules", threads: 1)

    /// `module(at:)` on `ModuleManager.executor`.
    public func load(_ path: String) async throws -> Module {
        try await Self.executor.run { try self.module(at: path) }
    }

    /// The modules loaded so far.
    public var loaded: [Module] { modules.withLockedValue { Array($0.values) } }

    /// Finalises every module (`C_Finalize`). Sessions of those modules become invalid.
    public func shutdown() {
        let all = modules.withLockedValue { modules -> [Module] in
            let all = Array(modules.values)
            modules.removeAll()
            return all
        }
        for module in all { module.finalize() }
    }
}

/// PKCS#11 pads fixed-width text fields with spaces.
func paddedString<T>(_ tuple: T) -> String {
    withUnsafeBytes(of: tuple) { raw in
        var end = raw.count
        while end > 0, raw[end - 1] == 0x20 || raw[end - 1] == 0 { end -= 1 }
        return String(decoding: raw[0..<end], as: UTF8.self)
    }
}
