import ArgumentParser
import CMKServer
import ControlPlane
import Foundation
import KSI

/// `cmk kms …`: the cloud and KMIP keystores of the gateway's configuration, from the command line.
struct KMSCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kms",
        abstract: "Cloud KMS keystores (AWS KMS, GCP Cloud KMS, Azure Key Vault) and KMIP servers as the gateway sees them.",
        subcommands: [Probe.self])

    struct Probe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the handshake probe on a cloud key with the credentials of a configured keystore; nothing is created.",
            discussion: """
            The key is an AWS KMS key ARN, alias ARN, alias/NAME or key id; a GCP CryptoKey name \
            (projects/P/locations/L/keyRings/R/cryptoKeys/K); or an Azure Key Vault key URI \
            (https://VAULT/keys/NAME[/VERSION]); or a KMIP key (kmip:UNIQUE-IDENTIFIER). The keystore is the configuration's keystore of that \
            provider (--keystore chooses when there are several).
            Example: cmk kms probe arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab --config cmk.json
            """)

        @Argument(help: "The key: ARN, alias or key id; CryptoKey name; key URI; or kmip:<unique identifier>.")
        var key: String

        @Option(name: .long, help: "The gateway's configuration file.")
        var config: String = ProcessInfo.processInfo.environment["CMK_CONFIG"] ?? "cmk.json"

        @Option(name: .long, help: "The keystore id, when the configuration has several of the key's provider.")
        var keystore: String?

        @OptionGroup var output: OutputOptions

        func run() async throws {
            let report: ProbeReport
            do {
                let reference = try KeyReference(parsing: key)
                guard reference.provider != .pkcs11 else {
                    throw KeystoreError(.invalidInput, "a PKCS#11 key: use cmk hsm probe")
                }
                let configuration = try ServerConfiguration.load(path: config)
                let candidates = configuration.keystores.filter { $0.provider == reference.provider && (keystore == nil || $0.id == keystore) }
                guard let chosen = candidates.first else {
                    throw KeystoreError(.notFound, "the configuration \(config) has no \(reference.provider.displayName) keystore"
                                        + (keystore.map { " with id \($0)" } ?? ""))
                }
                guard candidates.count == 1 else {
                    throw KeystoreError(.conflict, "several \(reference.provider.displayName) keystores are configured (\(candidates.map(\.id).joined(separator: ", "))): choose one with --keystore")
                }
                let opened = try await chosen.open(pkcs11: PKCS11Keystore())
                report = await opened.token.probe(reference)
            } catch {
                throw Output.fail(error, json: output.json)
            }
            try Output.probe(report, json: output.json)
        }
    }
}
