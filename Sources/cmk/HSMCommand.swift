import ArgumentParser
import Foundation
import KSI
import PKCS11

struct HSM: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hsm",
        abstract: "Inspect PKCS#11 modules, tokens and keys, and run the handshake probe.",
        subcommands: [Modules.self, Tokens.self, Keys.self, Probe.self]
    )
}

/// Where a command finds its module: a profile file, or a module path (and PIN source) given directly.
struct ModuleOptions: ParsableArguments {
    @Option(name: .long, help: "An HSM profile (HSMConfig/*.json).")
    var profile: String?

    @Option(name: .long, help: "A PKCS#11 module path, when no profile is given.")
    var module: String?

    @Option(name: .customLong("pin-source"), help: "Where the PIN is (file:/path or env:NAME), when no profile is given.")
    var pinSource: String?

    func loadProfile() throws -> HSMProfile? {
        guard let profile else { return nil }
        return try HSMProfile.load(from: profile)
    }

    /// The module path from the profile or the option.
    func modulePath() throws -> String {
        if let profile = try loadProfile() {
            profile.applyEnvironment()
            return profile.module
        }
        guard let module else {
            throw KeystoreError(.invalidInput, "give --profile FILE or --module PATH")
        }
        return module
    }
}

extension HSM {
    struct Modules: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load modules and show what each reports (C_GetInfo) and how many tokens it has.",
            discussion: "With no option, every profile in the HSMConfig directory is tried; a module that fails to load does not stop the others.")

        @Option(name: .long, help: "An HSM profile to load (repeatable).")
        var profile: [String] = []

        @Option(name: .long, help: "A module path to load (repeatable).")
        var module: [String] = []

        @Option(name: .customLong("config-dir"), help: "The profiles directory used when nothing else is given.")
        var configDirectory = ProcessInfo.processInfo.environment["OPENKCM_HSMCONFIG"] ?? "HSMConfig"

        @OptionGroup var output: OutputOptions

        struct Row: Encodable {
            var source: String
            var path: String
            var loaded: Bool
            var info: ModuleInfo?
            var tokens: Int?
            var error: String?
            var errorCode: String?
        }

        func run() async throws {
            var sources: [(String, String, String?)] = []  // (source, module path, initialise arguments)
            var rows: [Row] = []
            var profiles = profile
            if profiles.isEmpty && module.isEmpty {
                let files = (try? FileManager.default.contentsOfDirectory(atPath: configDirectory)) ?? []
                profiles = files.filter { $0.hasSuffix(".json") }.sorted().map { "\(configDirectory)/\($0)" }
                if profiles.isEmpty { throw Output.fail(KeystoreError(.invalidInput, "no profiles in \(configDirectory); give --profile or --module"), json: output.json) }
            }
            for file in profiles {
                do {
                    let loaded = try HSMProfile.load(from: file)
                    loaded.applyEnvironment()
                    sources.append(("profile \(loaded.name)", loaded.module, loaded.initArguments))
                } catch {
                    let failure = error as? KeystoreError ?? KeystoreError(.invalidInput, "cannot read \(file)")
                    rows.append(Row(source: file, path: "", loaded: false, error: failure.reason, errorCode: failure.code.rawValue))
                }
            }
            sources += module.map { ("option", $0, nil) }
            let toLoad = sources
            // Module calls block (a vendor's C_Initialize may reach a network HSM): they run on
            // the module thread, not on Swift's cooperative pool.
            rows += try await ModuleManager.executor.run {
                let manager = ModuleManager()
                defer { manager.shutdown() }
                return toLoad.map { source, path, initArguments -> Row in
                    do {
                        let loaded = try manager.module(at: path, initArguments: initArguments)
                        let info = try loaded.info()
                        let tokens = try loaded.tokens().count
                        return Row(source: source, path: path, loaded: true, info: info, tokens: tokens)
                    } catch {
                        let failure = (error as? PKCS11Error).map { KeystoreError($0) } ?? KeystoreError(.internal, "unexpected error")
                        return Row(source: source, path: path, loaded: false, error: failure.reason, errorCode: failure.code.rawValue)
                    }
                }
            }
            if output.json {
                print(Output.json(rows))
            } else {
                for row in rows {
                    if let info = row.info {
                        print("\(row.path)  [\(row.source)]")
                        print("  \(info.manufacturer) — \(info.libraryDescription) \(info.libraryVersion), Cryptoki \(info.cryptokiVersion); \(row.tokens ?? 0) initialised token(s)")
                    } else {
                        print("\(row.path.isEmpty ? row.source : row.path)  [\(row.source)]")
                        print("  not loaded: \(row.error ?? "unknown error")")
                    }
                }
            }
            // Every module failed: that is the command's result; some failed: reported above.
            if !rows.isEmpty && rows.allSatisfy({ !$0.loaded }) {
                let allInvalid = rows.allSatisfy { $0.errorCode == KeystoreError.Code.invalidInput.rawValue }
                throw ExitCode((allInvalid ? ExitStatus.badInput : ExitStatus.unavailable).rawValue)
            }
        }
    }

    struct Tokens: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a module's initialised tokens (found by label and serial, never by slot id).")

        @OptionGroup var source: ModuleOptions

        @Flag(name: .long, help: "Also list each token's mechanisms and what they can do.")
        var mechanisms = false

        @OptionGroup var output: OutputOptions

        struct MechanismRow: Encodable {
            var name: String
            var code: String
            var minKeySize: UInt
            var maxKeySize: UInt
            var capabilities: [String]
        }

        struct Row: Encodable {
            var label: String
            var serial: String
            var manufacturer: String
            var model: String
            var loginRequired: Bool
            var userPinLocked: Bool
            var userPinCountLow: Bool
            var userPinFinalTry: Bool
            var maxSessions: UInt?
            var maxReadWriteSessions: UInt?
            var mechanisms: [MechanismRow]?
        }

        func run() async throws {
            do {
                let path = try source.modulePath()
                let initArguments = try source.loadProfile()?.initArguments
                let withMechanisms = mechanisms
                let rows = try await ModuleManager.executor.run { try Self.list(path, initArguments: initArguments, mechanisms: withMechanisms) }
                if output.json {
                    print(Output.json(rows))
                    return
                }
                if rows.isEmpty { print("no initialised token") }
                for row in rows {
                    var flags: [String] = []
                    if row.loginRequired { flags.append("login required") }
                    if row.userPinLocked { flags.append("USER PIN LOCKED") } else if row.userPinFinalTry { flags.append("user PIN: final try") } else if row.userPinCountLow { flags.append("user PIN: count low") }
                    print("\"\(row.label)\"  serial \(row.serial)  \(row.manufacturer) \(row.model)  \(flags.joined(separator: ", "))")
                    for mechanism in row.mechanisms ?? [] {
                        print("    \(mechanism.name.padding(toLength: 30, withPad: " ", startingAt: 0)) \(mechanism.code.padding(toLength: 8, withPad: " ", startingAt: 0)) \(mechanism.capabilities.joined(separator: ","))")
                    }
                }
            } catch {
                throw Output.fail(error, json: output.json)
            }
        }

        /// The token rows, made with blocking module calls (run on the module thread).
        static func list(_ path: String, initArguments: String? = nil, mechanisms: Bool) throws -> [Row] {
            let manager = ModuleManager()
            defer { manager.shutdown() }
            let loaded = try translate { try manager.module(at: path, initArguments: initArguments) }
            var rows: [Row] = []
            for (slot, info) in try translate({ try loaded.tokens() }) {
                var row = Row(label: info.label, serial: info.serial, manufacturer: info.manufacturer, model: info.model,
                              loginRequired: info.loginRequired, userPinLocked: info.userPinLocked,
                              userPinCountLow: info.userPinCountLow, userPinFinalTry: info.userPinFinalTry,
                              maxSessions: info.maxSessionCount, maxReadWriteSessions: info.maxRwSessionCount)
                if mechanisms {
                    row.mechanisms = try translate {
                        try loaded.mechanisms(slot).map { type in
                            let mechanismInfo = try loaded.mechanismInfo(type, slot: slot)
                            return MechanismRow(name: type.name, code: "0x" + String(type.rawValue, radix: 16, uppercase: true),
                                                minKeySize: mechanismInfo.minKeySize, maxKeySize: mechanismInfo.maxKeySize,
                                                capabilities: mechanismInfo.capabilities)
                        }
                    }
                }
                rows.append(row)
            }
            return rows
        }
    }

    struct Keys: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the keys on a token, with their URIs and whether each can serve as an L1 key.")

        @Argument(help: "The token: its label, or a PKCS#11 URI naming it (pkcs11:token=...).")
        var token: String

        @OptionGroup var source: ModuleOptions

        @OptionGroup var output: OutputOptions

        func run() async throws {
            let keystore = PKCS11Keystore()
            do {
                let tokenObject = try await resolve(keystore)
                let keys = try await tokenObject.keys()
                await keystore.shutdown(finalizingModules: true)
                if output.json {
                    print(Output.json(keys))
                    return
                }
                if keys.isEmpty { print("no objects on the token") }
                for key in keys {
                    let usage = [key.canWrap == true ? "wrap" : nil, key.canUnwrap == true ? "unwrap" : nil].compactMap { $0 }.joined(separator: ",")
                    let type = [key.keyType, key.bits.map { "\($0) bits" }].compactMap { $0 }.joined(separator: " ")
                    print("\(key.uri)")
                    print("    \(key.objectClass) \(type)  \(usage.isEmpty ? "" : "[\(usage)]")\(key.usableAsL1 ? "  usable as L1" : "")")
                }
            } catch {
                await keystore.shutdown(finalizingModules: true)
                throw Output.fail(error, json: output.json)
            }
        }

        func resolve(_ keystore: PKCS11Keystore) async throws -> PKCS11Token {
            var uri: PKCS11URI
            if token.lowercased().hasPrefix("pkcs11:") {
                do { uri = try PKCS11URI(parsing: token) } catch let error as PKCS11URI.ParseError {
                    throw KeystoreError(.invalidInput, "malformed PKCS#11 URI: \(error.message)")
                }
            } else {
                uri = PKCS11URI()
                uri.token = token
            }
            let profile = try source.loadProfile()
            if profile == nil {
                if uri.modulePath == nil, let module = source.module { uri.modulePath = module }
                if uri.pinSource == nil, let pinSource = source.pinSource { uri.pinSource = pinSource }
            }
            return try await keystore.token(for: uri, profile: profile)
        }
    }

    struct Probe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the noop handshake probe on a key: wrap and unwrap a random test key, leaving the token unchanged.",
            discussion: "Example: cmk hsm probe 'pkcs11:token=acme;object=root;type=secret-key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=env:HSM_PIN'")

        @Argument(help: "The L1 key's PKCS#11 URI (RFC 7512).")
        var uri: String

        @Option(name: .long, help: "An HSM profile; otherwise the URI's module-path and pin-source are used.")
        var profile: String?

        @OptionGroup var output: OutputOptions

        func run() async throws {
            let keystore = PKCS11Keystore()
            let report: ProbeReport
            do {
                let reference = try KeyReference(parsing: uri)
                guard case .pkcs11(let parsed) = reference else { throw KeystoreError(.invalidInput, "not a PKCS#11 URI") }
                let profileValue = try profile.map(HSMProfile.load(from:))
                let token = try await keystore.token(for: parsed, profile: profileValue)
                report = await token.probe(reference)
            } catch {
                await keystore.shutdown(finalizingModules: true)
                throw Output.fail(error, json: output.json)
            }
            await keystore.shutdown(finalizingModules: true)
            try Output.probe(report, json: output.json)
        }
    }
}

/// Translates PKCS#11 errors for the synchronous calls the CLI makes directly.
func translate<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as PKCS11Error {
        throw KeystoreError(error)
    }
}
