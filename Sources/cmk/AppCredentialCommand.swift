import ArgumentParser
import CMKServer
import ControlPlane
import Foundation
import Logging
import Registry

/// `cmk app-credential issue|revoke`: applications' credentials for nodes, on the gateway's host.
struct AppCredentialCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "app-credential",
        abstract: "Issue or revoke an application's credential for nodes' API (also POST/DELETE /api/v1/app-credentials).",
        subcommands: [Issue.self, Revoke.self])

    struct Options: ParsableArguments {
        @Option(name: .long, help: "The gateway's configuration file.")
        var config: String = ProcessInfo.processInfo.environment["CMK_CONFIG"] ?? "cmk.json"

        func load() -> ServerConfiguration {
            do { return try ServerConfiguration.load(path: config) } catch { fail("\(error)") }
        }
    }

    struct Issue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a new credential once; it names the tenants the application may use.")

        @Option(name: .long, help: "What the credential is for.")
        var name: String

        @Option(name: .long, help: "Comma-separated tenant ids.")
        var tenants: String

        @Option(name: .customLong("ttl-hours"), help: "Hours until it expires.")
        var ttlHours: Int = 24

        @OptionGroup var options: Options

        func run() async throws {
            var logger = Logger(label: "cmk-app-credential")
            logger.logLevel = .warning
            do {
                let issued = try await HostAppCredentials.issue(options.load(), name: name, tenants: tenants.split(separator: ",").map(String.init),
                                                                ttl: TimeInterval(ttlHours) * 3600, logger: logger)
                print(issued.credential)
            } catch let error as RegistryError {
                fail(error.message, status: error.code == .invalidInput ? .badInput : .refused)
            } catch let error as ConfigurationError {
                fail(error.message)
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a credential; connected nodes refuse it within 5 s.")

        @Option(name: .long, help: "The credential's id.")
        var id: String

        @OptionGroup var options: Options

        func run() async throws {
            do {
                let revoked = try await HostAppCredentials.revoke(options.load(), id: id)
                print("revoked \(revoked.id) (\(revoked.name))")
            } catch let error as RegistryError {
                fail(error.message, status: error.code == .invalidInput ? .badInput : .refused)
            }
        }
    }
}
