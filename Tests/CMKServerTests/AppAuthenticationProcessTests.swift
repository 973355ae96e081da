import Foundation
import Testing
import TestSupport

/// Applications authenticated on nodes, scoped to tenants (issue 15), with real processes.
/// Before: any process that could reach a node's port encrypted and decrypted every tenant's
/// data with no credential at all.
@Suite(.serialized) struct AppAuthenticationProcessTests: ChildProcessTests {
    let fixture = SoftHSMFixture.shared

    func call(_ node: ChildNode, _ tenant: String, bearer: String?) throws -> HTTPResult {
        try http((bearer.map { ["-H", "Authorization: Bearer \($0)"] } ?? []) + ["-d", #"{"plaintext":"aGk="}"#, "\(node.base)/v1/tenants/\(tenant)/encrypt"])
    }

    func code(_ result: HTTPResult) -> String? { (result.json["error"] as? [String: Any])?["code"] as? String }

    @Test func nodesDenyByDefaultScopeToTenantsAndLearnOfARevocationAtOnce() async throws {
        let server = try ChildServer(token: "orbital", fixture: fixture, logLevel: "info")
        var nodes: [ChildNode] = []
        defer { for node in nodes { node.child.stop(SIGKILL) }; server.stopAndRemove() }
        try await waitUntilUp(server.base)
        try server.logIn()
        _ = try linkedTenant(server, "alpha")
        _ = try linkedTenant(server, "beta")
        nodes.append(try await startNode(server, region: "eu-west-1", name: "node"))
        let node = nodes[0]

        let none = try call(node, "alpha", bearer: nil)
        #expect(none.status == 401 && code(none) == "unauthenticated", "\(none.body)")
        #expect(code(try call(node, "alpha", bearer: "okap_forged.signature")) == "invalid_credential")
        let issued = try admin(server, "POST", "/api/v1/app-credentials", #"{"name":"billing","tenants":["alpha"],"ttlSeconds":3600}"#)
        let credential = try #require(issued.json["credential"] as? String, "\(issued.body)")
        let id = try #require(issued.json["id"] as? String)
        #expect(try call(node, "alpha", bearer: credential).status == 200)
        let other = try call(node, "beta", bearer: credential)
        #expect(other.status == 403 && code(other) == "tenant_not_allowed")
        // Tokens cannot issue them (a person with a fresh code does).
        let token = try server.automationToken()
        #expect(try http(["-H", "Authorization: Bearer \(token)", "-H", "Content-Type: application/json",
                          "-d", #"{"name":"x","tenants":["alpha"]}"#, "\(server.base)/api/v1/app-credentials"]).status == 403)
        // No credential in the listing.
        #expect(!(try admin(server, "GET", "/api/v1/app-credentials").body.contains(credential)))

        // Revoked: the node hears of it over its stream and refuses it at once.
        #expect(try admin(server, "DELETE", "/api/v1/app-credentials/\(id)").status == 200)
        let revokedAt = Date()
        try await eventually(5, "the node to refuse the revoked credential") { code(try call(node, "alpha", bearer: credential)) == "invalid_credential" }
        #expect(Date().timeIntervalSince(revokedAt) < 2, "pushed, not polled")
        // Every refusal is counted.
        let metrics = try http(["\(node.base)/metrics"]).body
        for reason in ["missing", "invalid", "tenant_not_allowed", "revoked"] {
            #expect(metrics.contains(#"cmk_node_app_refusals_total{reason="\#(reason)"}"#), "\(reason) in \(metrics)")
        }
        // A node that starts later reads the revocations when it connects.
        nodes.append(try await startNode(server, region: "eu-west-1", name: "later"))
        try await eventually(5, "the late node to have the app credential state") { code(try call(nodes[1], "alpha", bearer: credential)) == "invalid_credential" }

        // The host's command line issues and revokes too; each lands in the audit log.
        let cli = try server.cmk(["app-credential", "issue", "--name", "batch", "--tenants", "beta", "--config", "\(server.directory)/cmk.json"])
        let hostCredential = cli.output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(cli.status == 0 && hostCredential.hasPrefix("okap_"), "\(cli.error)")
        #expect(try call(node, "beta", bearer: hostCredential).status == 200)
        #expect(try server.cmk(["app-credential", "issue", "--name", "x", "--tenants", "nope", "--config", "\(server.directory)/cmk.json"]).status != 0)
        try await eventually(15, "the host's issue in the audit log") {
            let records = try admin(server, "GET", "/api/v1/audit?operation=app_credential.issue&limit=10").json["items"] as? [[String: Any]] ?? []
            return records.count == 2
        }
    }
}
