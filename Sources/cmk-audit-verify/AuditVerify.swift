import ArgumentParser
import AuditFormat

/// `cmk-audit-verify`: `cmk audit verify` on its own, for compliance teams. It links only the
/// audit format (records, tree, checkpoints, the verifier), not the gateway, its database, the
/// keystore drivers or PKCS#11, and prints and exits exactly as `cmk audit verify` does.
@main
struct AuditVerify: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cmk-audit-verify",
        abstract: OfflineVerification.abstract,
        discussion: OfflineVerification.discussion(command: "cmk-audit-verify"))

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

    @Flag(name: .long, help: .init(OfflineVerification.Help.json))
    var json = false

    func run() throws {
        let outcome = try OfflineVerification.run(.init(files: files, consistency: consistency, publicKey: publicKey,
                                                        checkpoints: checkpoints, proof: proof, json: json),
                                                  program: "cmk-audit-verify")
        outcome.write()
        if outcome.status != 0 { throw ExitCode(outcome.status) }
    }
}
