import ArgumentParser
import CMKCore
import CMKServer
import ControlPlane
import Foundation
import KSI
import Logging
import Registry

struct AdminCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "admin",
        abstract: "Administrators and automation tokens, on the gateway's registry (for the first administrator and for scripts).",
        discussion: """
        These commands work on the registry and platform token named in the configuration file, \
        like `cmk serve`. Later administrators are better created through the API by a logged-in \
        security administrator, where the action is audited.
        """,
        subcommands: [Create.self, Token.self, Unlock.self, Disable.self, Enable.self])

    struct Options: ParsableArguments {
        @Option(name: .long, help: "The gateway's configuration file.")
        var config: String = ProcessInfo.processInfo.environment["CMK_CONFIG"] ?? "cmk.json"

        @Option(name: .long, help: "security-admin, auditor or platform-operator (nodes and the IVK; see Docs/Authorization.md).")
        var role: String = "security-admin"

        @Option(name: .long, help: "Comma-separated tenant ids this identity is limited to (default: every tenant).")
        var tenants: String?

        var adminRole: AdminRole? {
            switch role {
            case "security-admin", "security_admin": .securityAdmin
            case "auditor": .auditor
            case "platform-operator", "platform_operator": .platformOperator
            default: nil
            }
        }

        var tenantList: [String]? { tenants.map { $0.split(separator: ",").map(String.init) } }

        func manager() async throws -> (SessionManager, PKCS11Keystore) {
            let configuration: ServerConfiguration
            do {
                configuration = try ServerConfiguration.load(path: config)
            } catch {
                fail("\(error)")
            }
            var logger = Logger(label: "cmk-admin")
            logger.logLevel = .warning
            let pkcs11 = PKCS11Keystore()
            return (try await Gateway.administration(configuration, pkcs11: pkcs11, logger: logger), pkcs11)
        }

        /// Runs `body` on the registry and platform token, then closes them. A refusal ends the
        /// process with its message: the session manager's `DomainError` with `status(code)`, a
        /// registry error (no such account, a rule of the registry) as refused.
        func withManager(failureStatus status: (ErrorCode) -> ExitStatus = { _ in .refused },
                         _ body: (SessionManager) async throws -> Void) async throws {
            let (manager, pkcs11) = try await manager()
            do {
                try await body(manager)
            } catch let failure as DomainError {
                await pkcs11.shutdown()
                fail(failure.message, status: status(failure.code))
            } catch let error as RegistryError {
                await pkcs11.shutdown()
                fail(error.message, status: .refused)
            }
            await pkcs11.shutdown()
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create an administrator; prints the TOTP secret once, as text and as an otpauth:// URI.",
            discussion: "The password comes from --password-file, else CMK_ADMIN_PASSWORD, else a prompt (not echoed). At least 12 characters.")

        @Option(name: .long, help: "The login name.")
        var username: String

        @Option(name: .customLong("password-file"), help: "A file holding the password.")
        var passwordFile: String?

        @OptionGroup var options: Options

        func run() async throws {
            guard let role = options.adminRole else { fail("--role is security-admin, auditor or platform-operator") }
            let password = try readPassword()
            try await options.withManager(failureStatus: { $0 == .conflict ? .refused : .badInput }) { manager in
                let created = try await manager.createAccount(username: username, password: password, role: role, tenants: options.tenantList,
                                                              createdBy: "cli:\(ProcessInfo.processInfo.environment["USER"] ?? "unknown")")
                try await manager.recordHostAction("user.create", target: username, details: ["role": role.rawValue])
                print("""
                    created \(role.rawValue) \(username) (\(options.tenantList?.joined(separator: ", ") ?? "every tenant"))
                    TOTP secret (shown once; add it to an authenticator app): \(created.totpSecret)
                    \(created.totpURI)
                    """)
            }
        }

        func readPassword() throws -> String {
            if let passwordFile {
                guard let text = try? String(contentsOfFile: passwordFile, encoding: .utf8) else { fail("cannot read \(passwordFile)") }
                return text.trimmingCharacters(in: .newlines)
            }
            if let value = ProcessInfo.processInfo.environment["CMK_ADMIN_PASSWORD"] { return value }
            guard let first = getpass("password for \(username): ").map({ String(cString: $0) }),
                  let second = getpass("again: ").map({ String(cString: $0) }), first == second else {
                fail("the passwords differ")
            }
            return first
        }
    }

    struct Token: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Issue an automation token (for CI/CD); prints it once. Tokens cannot revoke or restore links.")

        @Option(name: .long, help: "What the token is for.")
        var name: String

        @Option(name: .customLong("ttl-hours"), help: "Hours until it expires.")
        var ttlHours: Int = 24

        @OptionGroup var options: Options

        func run() async throws {
            guard let role = options.adminRole else { fail("--role is security-admin, auditor or platform-operator") }
            try await options.withManager(failureStatus: { _ in .badInput }) { manager in
                let created = try await manager.createToken(name: name, role: role, tenants: options.tenantList,
                                                            ttl: TimeInterval(ttlHours) * 3600, createdBy: "cli")
                try await manager.recordHostAction("token.create", target: name, details: ["role": role.rawValue, "token": created.token.id])
                print(created.secret)
            }
        }
    }
}

extension AdminCommand {
    struct Unlock: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "End an account's lockout after failed logins or wrong one-time codes (and reset its failure count).")

        @Option(name: .long, help: "The account.")
        var username: String

        @OptionGroup var options: Options

        func run() async throws {
            try await options.withManager { manager in
                let account = try await manager.unlock(username: username)
                try await manager.recordHostAction("user.unlock", target: account.username)
                print("unlocked \(account.username)")
            }
        }
    }
}

extension AdminCommand {
    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Disable an account now (no login, its sessions ended); the last enabled security administrator cannot be.")

        @Option(name: .long, help: "The account.")
        var username: String

        @OptionGroup var options: Options

        func run() async throws { try await AdminCommand.setDisabled(username, true, options) }
    }

    struct Enable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Enable a disabled account again.")

        @Option(name: .long, help: "The account.")
        var username: String

        @OptionGroup var options: Options

        func run() async throws { try await AdminCommand.setDisabled(username, false, options) }
    }

    static func setDisabled(_ username: String, _ disabled: Bool, _ options: Options) async throws {
        try await options.withManager { manager in
            guard let account = try await manager.registry.account(username: username) else { throw RegistryError(.notFound, "no user \(username)") }
            try await manager.registry.setAccountDisabled(id: account.id, disabled)
            try await manager.recordHostAction(disabled ? "user.disable" : "user.enable", target: username)
            print("\(disabled ? "disabled" : "enabled") \(username)")
        }
    }
}

func fail(_ message: String, status: ExitStatus = .badInput) -> Never {
    FileHandle.standardError.write(Data("error: \(message)\n".utf8))
    Foundation.exit(status.rawValue)
}
