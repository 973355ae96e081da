import Foundation
import NIOConcurrencyHelpers
public import PKCS11

/// Turns a PKCS#11 URI (and optionally a profile) into the `PKCS11Token` it names, one token
/// object per (module, token, PIN source), all sharing one `ModuleManager` so each module is
/// loaded once.
public final class PKCS11Keystore: Sendable {
    public let modules: ModuleManager
    private let tokens = NIOLockedValueBox<[PKCS11Token.Configuration: PKCS11Token]>([:])

    public init(modules: ModuleManager = .shared) {
        self.modules = modules
    }

    /// The token a profile describes.
    public func token(profile: HSMProfile) async throws -> PKCS11Token {
        profile.applyEnvironment()
        return try await token(configuration: PKCS11Token.Configuration(profile: profile))
    }

    /// The token a URI names. The URI's `module-path` and `pin-source` win where no profile is
    /// given; with a profile, the URI may not contradict it.
    public func token(for uri: PKCS11URI, profile: HSMProfile? = nil) async throws -> PKCS11Token {
        try PKCS11Token.checkUsable(uri)
        var configuration: PKCS11Token.Configuration
        if let profile {
            profile.applyEnvironment()
            configuration = try PKCS11Token.Configuration(profile: profile)
            if let modulePath = uri.modulePath, modulePath != profile.module {
                throw KeystoreError(.invalidInput, "the URI's module-path \(modulePath) differs from profile \(profile.name)'s module \(profile.module)")
            }
            if let label = uri.token, let configured = profile.token.label, label != configured {
                throw KeystoreError(.invalidInput, "the URI names token \"\(label)\" but profile \(profile.name) names \"\(configured)\"")
            }
            if let serial = uri.serial, let configured = profile.token.serial, serial != configured {
                throw KeystoreError(.invalidInput, "the URI names token serial \(serial) but profile \(profile.name) names \(configured)")
            }
            if let source = uri.pinSource, source != profile.pinSource {
                throw KeystoreError(.invalidInput, "the URI's pin-source differs from profile \(profile.name)'s; drop it from the URI or from the profile")
            }
            if let label = uri.token { configuration.token.label = label }
            if let serial = uri.serial { configuration.token.serial = serial }
        } else {
            guard let modulePath = try Self.modulePath(uri) else {
                throw KeystoreError(.invalidInput, "the URI names no module: add ?module-path=/path/to/module.so or pass a profile")
            }
            guard uri.token != nil || uri.serial != nil else {
                throw KeystoreError(.invalidInput, "the URI names no token: add token=LABEL or serial=SERIAL")
            }
            configuration = PKCS11Token.Configuration(
                name: uri.token ?? uri.serial ?? "token", modulePath: modulePath,
                token: TokenSelector(label: uri.token, serial: uri.serial),
                pinSource: try uri.pinSource.map(Self.pinSource))
        }
        configuration.token.manufacturer = uri.manufacturer ?? configuration.token.manufacturer
        configuration.token.model = uri.model ?? configuration.token.model
        let token = try await token(configuration: configuration)
        if uri.libraryManufacturer != nil || uri.libraryDescription != nil || uri.libraryVersion != nil {
            let module = token.pool.module
            try await ModuleManager.executor.run { try Self.checkLibrary(uri, module) }
        }
        return token
    }

    /// The URI's `library-*` attributes must describe the loaded module (`C_GetInfo`).
    static func checkLibrary(_ uri: PKCS11URI, _ module: Module) throws {
        let info: ModuleInfo
        do { info = try module.info() } catch let error as PKCS11Error { throw KeystoreError(error) }
        if let manufacturer = uri.libraryManufacturer, manufacturer != info.manufacturer {
            throw KeystoreError(.invalidInput, "the URI names library-manufacturer \"\(manufacturer)\" but \(module.path) reports \"\(info.manufacturer)\"")
        }
        if let description = uri.libraryDescription, description != info.libraryDescription {
            throw KeystoreError(.invalidInput, "the URI names library-description \"\(description)\" but \(module.path) reports \"\(info.libraryDescription)\"")
        }
        if let version = uri.libraryVersion {
            let matches = version.contains(".") ? version == info.libraryVersion : info.libraryVersion.hasPrefix(version + ".")
            if !matches {
                throw KeystoreError(.invalidInput, "the URI names library-version \(version) but \(module.path) reports \(info.libraryVersion)")
            }
        }
    }

    public func token(configuration: PKCS11Token.Configuration) async throws -> PKCS11Token {
        if let existing = tokens.withLockedValue({ $0[configuration] }) { return existing }
        let module: Module
        do {
            module = try await modules.load(configuration.modulePath, initArguments: configuration.initArguments)
        } catch let error as PKCS11Error {
            throw KeystoreError(error)
        }
        let created = PKCS11Token(configuration: configuration, module: module)
        return tokens.withLockedValue { tokens in
            if let existing = tokens[configuration] { return existing }
            tokens[configuration] = created
            return created
        }
    }

    static func pinSource(_ text: String) throws -> PINSource {
        do {
            return try PINSource(parsing: text)
        } catch {
            throw KeystoreError(.invalidInput, "pin-source must be file:/path or env:NAME")
        }
    }

    /// The module path from `module-path`, or `module-name` looked up in the usual directories.
    static func modulePath(_ uri: PKCS11URI) throws -> String? {
        if let path = uri.modulePath {
            guard path.hasPrefix("/") else {
                throw KeystoreError(.invalidInput, "module-path must be an absolute path, got \"\(path)\"")
            }
            return path
        }
        guard let name = uri.moduleName else { return nil }
        guard !name.contains("/"), !name.isEmpty else {
            throw KeystoreError(.invalidInput, "module-name is a bare library name such as softhsm2, got \"\(name)\"")
        }
        let directories = ["/usr/lib/x86_64-linux-gnu/pkcs11", "/usr/lib/aarch64-linux-gnu/pkcs11", "/usr/lib/pkcs11",
                           "/usr/lib/softhsm", "/usr/local/lib/softhsm", "/usr/lib/x86_64-linux-gnu", "/usr/lib"]
        for directory in directories {
            for file in ["lib\(name).so", "\(name).so"] {
                let path = "\(directory)/\(file)"
                if FileManager.default.fileExists(atPath: path) { return path }
            }
        }
        throw KeystoreError(.unavailable, "no module named \(name) in \(directories.joined(separator: ", ")); use module-path")
    }

    /// Every token made so far.
    public var all: [PKCS11Token] { tokens.withLockedValue { Array($0.values) } }

    /// Closes every pool, and finalises the modules when asked (at process exit: other
    /// components of the process may share them).
    public func shutdown(finalizingModules: Bool = false) async {
        let all = tokens.withLockedValue { tokens -> [PKCS11Token] in
            let all = Array(tokens.values)
            tokens.removeAll()
            return all
        }
        for token in all { await token.shutdown() }
        if finalizingModules {
            let modules = self.modules
            _ = try? await ModuleManager.executor.run { modules.shutdown() }
        }
    }
}
