import ArgumentParser
import AuditFormat
import CMKCore
import Foundation

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Verify audit log exports offline, and make checkpoint signing keys.",
        subcommands: [Verify.self, Keygen.self]
    )
}

extension AuditCommand {
    /// The command line only: what it checks, prints and exits with is `OfflineVerification`
    /// (AuditFormat), which `cmk-audit-verify` runs too.
    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: OfflineVerification.abstract,
            discussion: OfflineVerification.discussion(command: "cmk audit verify"))

        @Argument(help: .init(OfflineVerification.Help.files))
        var files: [String]

        @Flag(name: .long, help: .init(OfflineVerification.Help.consistency))
        var consistency = false

        @Option(name: .customLong("public-key"), help: .init(OfflineVerification.Help.publicKey))
        var publicKey: String?

        @Option(name: .customLong("checkpoint"), help: .init(OfflineVerification.Help.checkpoint))
        var checkpoints: [String] = []

        @Option(name: .long, help: .init(OfflineVerification.Help.proof))
        var proof: String?

        @OptionGroup var output: OutputOptions

        func run() async throws {
            let outcome = try OfflineVerification.run(.init(files: files, consistency: consistency, publicKey: publicKey,
                                                            checkpoints: checkpoints, proof: proof, json: output.json),
                                                      program: "cmk")
            outcome.write()
            if outcome.status != 0 { throw ExitCode(outcome.status) }
        }
    }

    struct Keygen: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make an Ed25519 checkpoint signing key (PKCS#8 PEM, mode 0600) and print its public key.")

        @Option(name: .long, help: "Where to write the private key (must not exist).")
        var out: String

        func run() async throws {
            do {
                let (_, publicPEM) = try Ed25519Keys.generate(path: out)
                try Data(publicPEM.utf8).write(to: URL(fileURLWithPath: out + ".pub"))
                print("wrote \(out) (private, mode 0600) and \(out).pub:\n\(publicPEM)", terminator: "")
            } catch let error as KeyFileError {
                FileHandle.standardError.write(Data("cmk: \(error.reason)\n".utf8))
                Foundation.exit(64)
            }
        }
    }
}
