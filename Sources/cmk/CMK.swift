import ArgumentParser

@main
struct CMK: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cmk",
        abstract: "OpenKCM CMK: the customer-managed-key gateway and its tools.",
        discussion: """
        Exit codes: 0 success; 64 bad input (malformed URI, profile or option); 65 refused by the \
        keystore (wrong PIN, key not found, key lacks CKA_WRAP, mechanism unsupported); 69 keystore \
        unavailable (module missing, token absent, device error); 70 internal error.
        """,
        subcommands: [Serve.self, NodeCommand.self, AdminCommand.self, AppCredentialCommand.self, HSM.self, KMSCommand.self, AuditCommand.self]
    )
}
