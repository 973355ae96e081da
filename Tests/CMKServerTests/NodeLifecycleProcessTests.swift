import Foundation
import Testing
import TestSupport

/// Nodes authorised, not only authenticated (issue 15): disabled, enabled, re-keyed and removed
/// by a platform operator, with real `cmk serve` and `cmk node` processes.
@Suite(.serialized) struct NodeLifecycleProcessTests: ChildProcessTests {
    let fixture = SoftHSMFixture.shared

    func operatorCall(_ server: ChildServer, _ method: String, _ path: String) throws -> HTTPResult {
        try http(["-H", "Authorization: Bearer \(try server.operatorToken())", "-X", method, "\(server.base)\(path)"])
    }

    func decrypt(_ node: ChildNode, _ tenant: String, _ ciphertext: String) throws -> HTTPResult {
        try application(node, tenant, "decrypt", #"{"ciphertext":"\#(ciphertext)"}"#)
    }

    @Test func aDisabledNodeDropsItsKeysIsNotAwaitedAndServesAgainOnceEnabled() async throws {
        let server = try ChildServer(token: "orbital", fixture: fixture, logLevel: "info")
        var nodes: [ChildNode] = []
        defer { for node in nodes { node.child.stop(SIGKILL) }; server.stopAndRemove() }
        try await waitUntilUp(server.base)
        try server.logIn()
        let link = try linkedTenant(server, "fenced")
        nodes.append(try await startNode(server, region: "eu-west-1", name: "kept"))
        nodes.append(try await startNode(server, region: "eu-west-1", name: "suspect"))
        let (kept, suspect) = (nodes[0], nodes[1])
        let sealed = try application(suspect, "fenced", "encrypt", #"{"plaintext":"c2VjcmV0"}"#)
        let ciphertext = try #require(sealed.json["ciphertext"] as? String, "\(sealed.body)")
        let suspectID = try #require(try status(suspect)["node"] as? String)

        // Security administrators cannot; the platform operator can, at once.
        #expect(try admin(server, "POST", "/api/v1/nodes/\(suspectID)/disable").status == 403)
        let disabled = try operatorCall(server, "POST", "/api/v1/nodes/\(suspectID)/disable")
        #expect(disabled.status == 200 && disabled.json["disabledAt"] as? String != nil, "\(disabled.body)")
        try await eventually(10, "the disabled node to drop its key") {
            let refused = try decrypt(suspect, "fenced", ciphertext)
            return refused.status == 503 && suspect.log.contains("the gateway refuses this node")
        }
        // A revocation does not wait for it: LOCKED on the other node's proof alone.
        #expect(try admin(server, "POST", "/api/v1/tenants/fenced/l1-links/\(link)/revoke").status == 200)
        try await eventually(10, "the link to lock without the disabled node") {
            let progress = try admin(server, "GET", "/api/v1/tenants/fenced/l1-links/\(link)/revocation").json
            return progress["state"] as? String == "LOCKED" && (progress["nodes"] as? [[String: Any]])?.count == 1
        }
        // Enabling needs a person with a fresh code (tokens cannot).
        #expect(try operatorCall(server, "POST", "/api/v1/nodes/\(suspectID)/enable").status == 403)
        let olga = try server.person("olga", role: "platform-operator")
        #expect(try call(olga, server, "POST", "/api/v1/nodes/\(suspectID)/enable").status == 200)
        try await eventually(10, "the enabled node to reconnect") { try status(suspect)["connected"] as? Bool == true }
        _ = kept
    }

    @Test func aNodeReKeysItselfAndARemovedNodeIsRefusedForGood() async throws {
        let server = try ChildServer(token: "orbital", fixture: fixture, logLevel: "info")
        var nodes: [ChildNode] = []
        defer { for node in nodes { node.child.stop(SIGKILL) }; server.stopAndRemove() }
        try await waitUntilUp(server.base)
        try server.logIn()
        _ = try linkedTenant(server, "rotating")
        let first = try await startNode(server, region: "eu-west-1", name: "rekeyed")
        nodes.append(first)
        let sealed = try application(first, "rotating", "encrypt", #"{"plaintext":"a2V5cw=="}"#)
        let ciphertext = try #require(sealed.json["ciphertext"] as? String)
        let nodeID = try #require(try status(first)["node"] as? String)
        let oldKey = try String(contentsOfFile: "\(first.directory)/signing.key", encoding: .utf8)
        first.child.stop(SIGTERM)

        // Started again with --rekey: new keys at the gateway and on disk; it unseals with them.
        let port = try #require(URL(string: first.base)?.port)
        let rekeyed = try ChildNode(gateway: server.base, region: "eu-west-1", enrolmentToken: nil, in: server.directory, name: "rekeyed",
                                    port: port, extraArguments: ["--rekey"], issuer: server)
        nodes.append(rekeyed)
        try await waitUntilUp(rekeyed.base)
        #expect(try String(contentsOfFile: "\(rekeyed.directory)/signing.key", encoding: .utf8) != oldKey)
        #expect(!FileManager.default.fileExists(atPath: "\(rekeyed.directory)/signing.key.new"))
        try await eventually(10, "the re-keyed node to decrypt") { try decrypt(rekeyed, "rotating", ciphertext).status == 200 }
        let listed = try admin(server, "GET", "/api/v1/nodes").json["items"] as? [[String: Any]] ?? []
        #expect(listed.first { $0["id"] as? String == nodeID }?["rekeyedAt"] as? String != nil)
        let audit = try admin(server, "GET", "/api/v1/audit?operation=node.rekey&limit=10").json["items"] as? [[String: Any]] ?? []
        #expect(audit.count == 1 && audit.first?["target"] as? String == nodeID)

        // Removed: refused for good; its keys go; removing again is a clear 409.
        let olga = try server.person("olga", role: "platform-operator")
        #expect(try call(olga, server, "DELETE", "/api/v1/nodes/\(nodeID)").status == 200)
        try await eventually(10, "the removed node to drop its key") { try decrypt(rekeyed, "rotating", ciphertext).status == 503 }
        #expect(try call(olga, server, "DELETE", "/api/v1/nodes/\(nodeID)").status == 409)
        #expect(try call(olga, server, "POST", "/api/v1/nodes/\(nodeID)/enable").status == 409)
    }
}
