import Foundation
import KSI
import PKCS11
import Registry
import Testing
import TestSupport

/// The key lifecycle with real processes: `cmk serve` on SoftHSM and `cmk node` processes, only
/// their HTTP APIs between them.
@Suite(.serialized) struct LifecycleProcessTests: ChildProcessTests {
    let fixture = SoftHSMFixture.shared

    func encrypt(_ node: ChildNode, _ tenant: String, _ text: String) throws -> String {
        let sealed = try application(node, tenant, "encrypt", #"{"plaintext":"\#(Data(text.utf8).base64EncodedString())"}"#)
        guard sealed.status == 200, let ciphertext = sealed.json["ciphertext"] as? String else {
            throw SoftHSMFixture.FixtureError(message: "encrypt: \(sealed.body)")
        }
        return ciphertext
    }

    func decrypt(_ node: ChildNode, _ tenant: String, _ ciphertext: String) throws -> HTTPResult {
        try application(node, tenant, "decrypt", #"{"ciphertext":"\#(ciphertext)"}"#)
    }

    func errorCode(_ result: HTTPResult) -> String? { (result.json["error"] as? [String: Any])?["code"] as? String }

    /// The administrator asks, `approver` approves; returns the request id.
    func approved(_ server: ChildServer, _ operation: String, _ tenant: String, _ link: String, by approver: Person) throws -> String {
        let requested = try admin(server, "POST", "/api/v1/approvals", #"{"operation":"\#(operation)","tenant":"\#(tenant)","link":"\#(link)"}"#)
        guard requested.status == 201, let id = requested.json["id"] as? String else {
            throw SoftHSMFixture.FixtureError(message: "approval request: \(requested.body)")
        }
        let vote = try call(approver, server, "POST", "/api/v1/approvals/\(id)/approve")
        guard vote.status == 200 else { throw SoftHSMFixture.FixtureError(message: "approve: \(vote.body)") }
        return id
    }

    func revocation(_ server: ChildServer, _ tenant: String, _ link: String) throws -> [String: Any] {
        try admin(server, "GET", "/api/v1/tenants/\(tenant)/l1-links/\(link)/revocation").json
    }

    @Test func dataEncryptedBeforeTheKillSwitchDecryptsOnEveryNodeAfterARestore() async throws {
        let server = try ChildServer(token: "orbital", fixture: fixture, logLevel: "info")
        var nodes: [ChildNode] = []
        defer { for node in nodes { node.child.stop(SIGKILL) }; server.stopAndRemove() }
        try await waitUntilUp(server.base)
        try server.logIn()
        let link = try linkedTenant(server, "sovereign")
        for (index, region) in ["eu-west-1", "eu-central-1", "us-east-1"].enumerated() {
            nodes.append(try await startNode(server, region: region, name: "node-\(index)"))
        }
        let ciphertexts = try nodes.map { try encrypt($0, "sovereign", "ledger of \($0.base)") }

        #expect(try admin(server, "POST", "/api/v1/tenants/sovereign/l1-links/\(link)/revoke").status == 200)
        try await eventually(10, "the link to lock") { try revocation(server, "sovereign", link)["state"] as? String == "LOCKED" }
        for node in nodes { #expect(errorCode(try decrypt(node, "sovereign", ciphertexts[0])) == "key_revoked") }

        // The four eyes: the requester alone is refused, the second administrator approves.
        let bob = try server.person("bob")
        let alone = try admin(server, "POST", "/api/v1/tenants/sovereign/l1-links/\(link)/restore", "{}")
        #expect(alone.status == 403 && errorCode(alone) == "approval_required")
        let id = try approved(server, "link.restore", "sovereign", link, by: bob)
        let restored = try admin(server, "POST", "/api/v1/tenants/sovereign/l1-links/\(link)/restore", #"{"approval":"\#(id)"}"#)
        #expect(restored.status == 200, "\(restored.body)")
        #expect((restored.json["link"] as? [String: Any])?["epoch"] as? Int == 2)

        // Every node, told by the l1.restored event, unseals the same L2 and opens every old ciphertext.
        for node in nodes {
            for (index, ciphertext) in ciphertexts.enumerated() {
                try await eventually(10, "\(node.base) to decrypt again") {
                    let opened = try decrypt(node, "sovereign", ciphertext)
                    return opened.status == 200 && opened.json["plaintext"] as? String == Data("ledger of \(nodes[index].base)".utf8).base64EncodedString()
                }
            }
            #expect(node.log.contains("link restored"))
        }

        // A second kill-switch on the restored link ends epoch 2 just as the first ended epoch 1.
        #expect(try admin(server, "POST", "/api/v1/tenants/sovereign/l1-links/\(link)/revoke").status == 200)
        try await eventually(10, "the second revocation to lock") {
            let progress = try revocation(server, "sovereign", link)
            return progress["state"] as? String == "LOCKED" && progress["event"] as? String != nil
        }
        for node in nodes { #expect(errorCode(try decrypt(node, "sovereign", ciphertexts[1])) == "key_revoked") }
        let records = try admin(server, "GET", "/api/v1/audit?operation=node.purge_ack&tenant=sovereign&limit=100").json["items"] as? [[String: Any]]
        #expect(records?.count == 6, "three nodes, two revocations")
        let restores = try admin(server, "GET", "/api/v1/audit?operation=link.restore&limit=100").json["items"] as? [[String: Any]]
        #expect(restores?.filter { $0["outcome"] as? String == "success" }.count == 1)
    }

    @Test func aRestoreCommittedJustBeforeACrashReachesTheNodesAndTheAuditLog() async throws {
        let server = try ChildServer(token: "orbital", fixture: fixture, logLevel: "info",
                                     environment: ["CMK_FAILPOINT": "restore-before-dispatch"])
        var nodes: [ChildNode] = []
        defer { for node in nodes { node.child.stop(SIGKILL) }; server.stopAndRemove() }
        try await waitUntilUp(server.base)
        try server.logIn()
        let link = try linkedTenant(server, "phoenix")
        nodes.append(try await startNode(server, region: "eu-west-1", name: "node"))
        let ciphertext = try encrypt(nodes[0], "phoenix", "rises")
        #expect(try admin(server, "POST", "/api/v1/tenants/phoenix/l1-links/\(link)/revoke").status == 200)
        let bob = try server.person("bob")
        let id = try approved(server, "link.restore", "phoenix", link, by: bob)
        // The gateway dies after the commit, before it pushes the event or writes the record.
        _ = try? admin(server, "POST", "/api/v1/tenants/phoenix/l1-links/\(link)/restore", #"{"approval":"\#(id)"}"#)
        try await eventually(10, "the gateway to die") { !server.child.isRunning }
        server.child.environment["CMK_FAILPOINT"] = nil
        try server.child.start()
        try await waitUntilUp(server.base)
        try server.logIn()
        // The node catches up on the event and serves the key again; the log names the restore.
        try await eventually(15, "the node to decrypt again") { try decrypt(nodes[0], "phoenix", ciphertext).status == 200 }
        let records = try admin(server, "GET", "/api/v1/audit?operation=link.restore&limit=10").json["items"] as? [[String: Any]] ?? []
        #expect(records.count == 1 && (records.first?["details"] as? [String: Any])?["recovered"] as? String == "true", "\(records)")
        #expect(try admin(server, "GET", "/api/v1/approvals/\(id)").json["state"] as? String == "EXECUTED")
    }

    @Test func aScheduledShredRunsAndNodesHearThatTheKeyIsGone() async throws {
        let server = try ChildServer(token: "orbital", fixture: fixture, logLevel: "info",
                                     environment: ["CMK_TEST_SHRED_WAITING_SECONDS": "2"],
                                     extraConfiguration: #""lifecycle": {"shredCheckSeconds": 1}"#)
        var nodes: [ChildNode] = []
        defer { for node in nodes { node.child.stop(SIGKILL) }; server.stopAndRemove() }
        try await waitUntilUp(server.base)
        try server.logIn()
        let link = try linkedTenant(server, "doomed")
        nodes.append(try await startNode(server, region: "eu-west-1", name: "node"))
        let ciphertext = try encrypt(nodes[0], "doomed", "to be forgotten")
        #expect(try admin(server, "POST", "/api/v1/tenants/doomed/l1-links/\(link)/revoke").status == 200)
        let bob = try server.person("bob")
        let id = try approved(server, "link.shred", "doomed", link, by: bob)
        let scheduled = try admin(server, "POST", "/api/v1/tenants/doomed/l1-links/\(link)/shred", #"{"approval":"\#(id)"}"#)
        #expect(scheduled.status == 202, "\(scheduled.body)")
        try await eventually(15, "the shred to run") {
            try admin(server, "GET", "/api/v1/tenants/doomed/l1-links/\(link)").json["state"] as? String == "SHREDDED"
        }
        try await eventually(10, "the node to refuse the key as shredded") {
            let refused = try decrypt(nodes[0], "doomed", ciphertext)
            return refused.status == 410 && errorCode(refused) == "key_shredded"
        }
        let proof = try admin(server, "GET", "/api/v1/audit?operation=l2.shred&limit=10").json["items"] as? [[String: Any]]
        #expect(proof?.count == 1 && (proof?.first?["target"] as? String) == link)
        #expect(errorCode(try admin(server, "POST", "/api/v1/tenants/doomed/l1-links/\(link)/restore", "{}")) == "link_shredded")
    }

    @Test func anL1RotationKilledHalfwayResumesAndTheDataStaysReadable() async throws {
        // The new key, on the token the server will use, before it starts.
        let pool = try fixture.pool("orbital", maxSessions: 1)
        try await pool.withSession { session in
            if try session.findObjects([.class(.secretKey), .label("l1-2027")]).isEmpty {
                _ = try session.generateAESKey(bits: 256, token: true, label: "l1-2027",
                                               usages: [.encrypt(true), .decrypt(true), .wrap(true), .unwrap(true)], sensitive: true, extractable: false)
            }
        }
        await pool.shutdown()
        let server = try ChildServer(token: "orbital", fixture: fixture, logLevel: "info",
                                     environment: ["CMK_FAILPOINT": "rotation-crash-after-2"])
        var nodes: [ChildNode] = []
        defer { for node in nodes { node.child.stop(SIGKILL) }; server.stopAndRemove() }
        try await waitUntilUp(server.base)
        try server.logIn()
        let tenants = ["rot-a", "rot-b", "rot-c", "rot-d"]
        var links: [String: String] = [:]
        for tenant in tenants { links[tenant] = try linkedTenant(server, tenant) }
        nodes.append(try await startNode(server, region: "eu-west-1", name: "node"))
        var ciphertexts: [String: String] = [:]
        for tenant in tenants { ciphertexts[tenant] = try encrypt(nodes[0], tenant, "records of \(tenant)") }

        let started = try admin(server, "POST", "/api/v1/l1-rotations",
                                #"{"keystore":"hsm","fromKey":"pkcs11:object=l1","toKey":"pkcs11:object=l1-2027"}"#)
        #expect(started.status == 202, "\(started.body)")
        let job = try #require(started.json["id"] as? String)
        // The failpoint kills the gateway after two links.
        try await eventually(20, "the gateway to die mid-rotation") { !server.child.isRunning }
        let rotatedBefore = try tenants.filter { tenant in
            try Registry.l1Version(at: "\(server.directory)/cmk.sqlite", link: links[tenant]!) == 2
        }
        #expect(rotatedBefore.count == 2, "two links done before the crash")

        server.child.environment["CMK_FAILPOINT"] = nil
        try server.child.start()
        try await waitUntilUp(server.base)
        try server.logIn()
        try await eventually(20, "the rotation to resume and finish") {
            try admin(server, "GET", "/api/v1/rotations/\(job)").json["state"] as? String == "COMPLETED"
        }
        let done = try admin(server, "GET", "/api/v1/rotations/\(job)").json
        #expect(done["done"] as? Int == 4 && done["failed"] as? Int == 0, "\(done)")
        for tenant in tenants {
            let link = try admin(server, "GET", "/api/v1/tenants/\(tenant)/l1-links/\(links[tenant]!)").json
            #expect(link["l1Version"] as? Int == 2 && (link["keyReference"] as? String)?.contains("l1-2027") == true)
        }
        // Still the same L2 everywhere: a revoke and a restore (which opens the binding with the
        // new L1) brings back data encrypted before the rotation.
        let tenant = "rot-c", link = links[tenant]!
        #expect(try admin(server, "POST", "/api/v1/tenants/\(tenant)/l1-links/\(link)/revoke").status == 200)
        let bob = try server.person("bob")
        let id = try approved(server, "link.restore", tenant, link, by: bob)
        #expect(try admin(server, "POST", "/api/v1/tenants/\(tenant)/l1-links/\(link)/restore", #"{"approval":"\#(id)"}"#).status == 200)
        for name in tenants {
            try await eventually(15, "\(name) readable after the rotation") {
                let opened = try decrypt(nodes[0], name, ciphertexts[name]!)
                return opened.status == 200 && opened.json["plaintext"] as? String == Data("records of \(name)".utf8).base64EncodedString()
            }
        }
    }
}

extension Registry {
    /// A link's L1 version read straight from a registry file (the server being down).
    static func l1Version(at path: String, link: String) throws -> Int {
        let result = try SoftHSMFixture.run("/usr/bin/env", ["python3", "-c", """
            import sqlite3, sys
            row = sqlite3.connect(sys.argv[1]).execute("SELECT l1_version FROM l1_link WHERE id = ?", (sys.argv[2],)).fetchone()
            print(row[0] if row else 0)
            """, path, link])
        return Int(result.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    }
}
