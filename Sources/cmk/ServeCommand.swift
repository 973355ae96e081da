import ArgumentParser
import CMKServer
import ControlPlane
import Foundation
import Hummingbird

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the CMK gateway: Management API, handshake, kill-switch state.",
        discussion: "Configuration: a JSON file (Docs/Configuration.md) with CMK_* environment overrides. Binds 127.0.0.1:8080 by default; stops gracefully on SIGTERM or SIGINT.")

    @Option(name: .long, help: "The configuration file.")
    var config: String = ProcessInfo.processInfo.environment["CMK_CONFIG"] ?? "cmk.json"

    @Option(name: .customLong("openapi"), help: "The OpenAPI document the server serves at /openapi.yaml.")
    var openAPI: String = "Docs/openapi.yaml"

    func run() async throws {
        let configuration: ServerConfiguration
        do {
            configuration = try ServerConfiguration.load(path: config)
        } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(ExitStatus.badInput.rawValue)
        }
        let application: any ApplicationProtocol
        do {
            application = try await buildApplication(configuration, openAPIPath: openAPI)
        } catch let error as ConfigurationError {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(ExitStatus.badInput.rawValue)
        }
        try await application.runService()
    }
}
