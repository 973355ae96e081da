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
    /// The string passed to `C_Initialize` in `CK_C_INITIALIZE_ARGS.pReserved`, or nil. NSS's
    /// softoken reads its database directory from it; most modules want nil there.
    public let initArguments: String?
    let handle: UnsafeMutableRawPointer
    let functions: UnsafeMutablePointer<CK_FUNCTION_LIST>
    private let state = NIOLockedValueBox(State.initialized)
    /// False when another component of the process had initialised the module already: then
    /// finalising it is theirs to do.
    public var ownsInitialization: Bool { owns.withLockedValue { $0 } }
    private let owns = NIOLockedValueBox(true)

    private enum State { case initialized, finalized }

    init(path: String, initArguments: String? = nil) throws {
        self.path = path
        self.initArguments = initArguments
        if let initArguments { try Self.checkInitArguments(initArguments, module: path) }
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
            let initialized = try Self.initialize(list, path: path, arguments: initArguments)
            owns.withLockedValue { $0 = initialized }
        } catch {
            dlclose(handle)
            throw error
        }
    }

    /// Returns whether this call initialised the module (false: it already was).
    @discardableResult
    private static func initialize(_ list: UnsafeMutablePointer<CK_FUNCTION_LIST>, path: String, arguments text: String?) throws -> Bool {
        // CKF_OS_LOCKING_OK: the module may be called from several threads at once and uses
        // the operating system's locks; no mutex callbacks.
        func call(_ reserved: UnsafeMutableRawPointer?) -> CK_RV {
            var arguments = CK_C_INITIALIZE_ARGS(CreateMutex: nil, DestroyMutex: nil, LockMutex: nil, UnlockMutex: nil,
                                                 flags: 0x2, pReserved: reserved)
            return list.pointee.C_Initialize?(&arguments) ?? ReturnValue.functionNotSupported.rawValue
        }
        // The string lives only for the call: the module parses it inside C_Initialize (NSS
        // copies what it needs), so no pointer outlives this scope.
        let raw: CK_RV
        if let text {
            raw = text.withCString { call(UnsafeMutableRawPointer(mutating: $0)) }
        } else {
            raw = call(nil)
        }
        let rv = ReturnValue(rawValue: raw)
        // Already initialised by someone else in this process (p11-kit proxy, another library):
        // the module is usable and this instance simply shares it.
        guard rv == .ok || rv == .cryptokiAlreadyInitialized else {
            var reason = "the module refused to initialise; its own log or configuration file usually says why"
            if rv == .argumentsBad {
                // The one case the gateway can explain: the arguments are the profile's.
                reason = text == nil
                    ? "the module refused to initialise without arguments; some modules (NSS's softoken) need initArguments in the profile"
                    : "the module refused the profile's initArguments"
            }
            throw PKCS11Error(.returnValue(rv), function: .C_Initialize, module: path, reason: reason)
        }
        return rv == .ok
    }

    /// Runs `C_Initialize` again after the module lost its initialisation
    /// (`CKR_CRYPTOKI_NOT_INITIALIZED`), as the recovery table asks.
    public func reinitialize() throws {
        let initialized = try Self.initialize(functions, path: path, arguments: initArguments)
        owns.withLockedValue { $0 = initialized }
        state.withLockedValue { $0 = .initialized }
    }

    /// The longest initialise-arguments string accepted. NSS's own parameter strings are a few
    /// hundred bytes; the bound keeps a mistaken file's content from being handed to a module.
    public static let maxInitArgumentsLength = 4096

    /// Refuses what cannot be passed as a C string intact (a NUL byte would cut it short, so
    /// the module would read other arguments than the profile says) and what is unreasonably long.
    public static func checkInitArguments(_ text: String, module: String? = nil) throws {
        guard !text.utf8.contains(0) else {
            throw PKCS11Error(.invalidArgument, module: module, reason: "the initialise arguments contain a NUL byte; the module would read only the part before it")
        }
        guard text.utf8.count <= maxInitArgumentsLength else {
            throw PKCS11Error(.invalidArgument, module: module, reason: "the initialise arguments are \(text.utf8.count) bytes long; at most \(maxInitArgumentsLength) are accepted")
        }
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

    /// The module at `path`, loading and initialising it on first use with `initArguments` in
    /// `pReserved`. A module is initialised once per process, so a second caller asking for the
    /// same library with other arguments is refused: it would silently get a module configured
    /// for someone else (for NSS, another database directory).
    public func module(at path: String, initArguments: String? = nil) throws -> Module {
        // Symbolic links resolved, so that two names of one library share one initialisation.
        let canonical = URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath().path
        // Loading happens under the lock: two callers racing for the same path must not both
        // call C_Initialize.
        let result: Result<Module, any Error> = modules.withLockedValue { modules in
            if let existing = modules[canonical] {
                guard existing.initArguments == initArguments else {
                    return .failure(Self.conflict(path, loadedWith: existing.initArguments))
                }
                return .success(existing)
            }
            do {
                // Across managers too: a second manager's C_Initialize would get
                // CKR_CRYPTOKI_ALREADY_INITIALIZED and share the first one's configuration.
                try Self.claim(canonical, path: path, initArguments: initArguments)
                let module: Module
                do {
                    module = try Module(path: path, initArguments: initArguments)
                } catch {
                    Self.release(canonical)
                    throw error
                }
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
    public func load(_ path: String, initArguments: String? = nil) async throws -> Module {
        try await Self.executor.run { try self.module(at: path, initArguments: initArguments) }
    }

    /// The initialise arguments each module path is loaded with in this process, and by how
    /// many managers: the check must hold across managers, since `C_Initialize` is per process.
    private static let claims = NIOLockedValueBox<[String: (arguments: String?, holders: Int)]>([:])

    private static func claim(_ canonical: String, path: String, initArguments: String?) throws {
        try claims.withLockedValue { claims in
            if let held = claims[canonical] {
                guard held.arguments == initArguments else { throw conflict(path, loadedWith: held.arguments) }
                claims[canonical] = (held.arguments, held.holders + 1)
            } else {
                claims[canonical] = (initArguments, 1)
            }
        }
    }

    private static func release(_ canonical: String) {
        claims.withLockedValue { claims in
            guard let held = claims[canonical] else { return }
            claims[canonical] = held.holders > 1 ? (held.arguments, held.holders - 1) : nil
        }
    }

    /// The arguments are configuration, not secrets, but they stay out of the message anyway: a
    /// vendor might put a password there.
    private static func conflict(_ path: String, loadedWith arguments: String?) -> PKCS11Error {
        PKCS11Error(.invalidArgument, module: path, reason: "module \(path) is already loaded in this process with \(arguments == nil ? "no initialise arguments" : "other initialise arguments"); a module is initialised once per process, so every profile naming it must give the same initArguments (or run in its own process)")
    }

    /// The modules loaded so far.
    public var loaded: [Module] { modules.withLockedValue { Array($0.values) } }

    /// Finalises every module (`C_Finalize`). Sessions of those modules become invalid.
    public func shutdown() {
        let all = modules.withLockedValue { modules -> [Module] in
            let all = Array(modules.values)
            for canonical in modules.keys { Self.release(canonical) }
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
