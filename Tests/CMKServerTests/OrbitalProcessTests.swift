import Crypto
import Foundation
import Testing
import TestSupport

/// Orbital end to end with real processes: a `cmk serve` gateway on a SoftHSM token and
/// several `cmk node` processes on loopback, talking only through their HTTP APIs.
@Suite(.serialized) struct OrbitalProcessTests: ChildProcessTests {
    let fixture = SoftHSMFixture.shared

    func encrypt(_ node: ChildNode, _ tenant: String, _ text: String) throws -> HTTPResult {
        try application(node, tenant, "encrypt", #"{"plaintext":"\#(Data(text.utf8).base64EncodedString())"}"#)
    }

    func decrypt(_ node: ChildNode, _ tenant: String, _ ciphertext: String) throws -> HTTPResult {
        try application(node, tenant, "decrypt", #"{"ciphertext":"\#(ciphertext)"}"#)
    }

    func errorCode(_ result: HTTPResult) -> String? { (result.json["error"] as? [String: Any])?["code"] as? String }

    /// When the node's lease on `tenant`'s key ends, as its status reports it (whole seconds).
    func leaseEnd(_ node: ChildNode, _ tenant: String) throws -> Date? {
        let leases = try status(node)["leases"] as? [[String: Any]] ?? []
        return (leases.first { $0["tenant"] as? String == tenant }?["expiresAt"] as? String).flatMap { ISO8601DateFormatter().date(from: $0) }
    }

    func revocation(_ server: ChildServer, _ tenant: String, _ link: String) throws -> [String: Any] {
        try admin(server, "GET", "/api/v1/tenants/\(tenant)/l1-links/\(link)/revocation").json
    }

    func auditCount(_ server: ChildServer, operation: String, tenant: String? = nil) throws -> Int {
        let query = "operation=\(operation)" + (tenant.map { "&tenant=\($0)" } ?? "")
        return (try admin(server, "GET", "/api/v1/audit?\(query)&limit=500").json["items"] as? [[String: Any]])?.count ?? -1
    }

    @Test func everyNodePurgesOnRevocationAndTheLinkLocksWithEachNodesProof() async throws {
        let server = try ChildServer(token: "orbital", fixture: fixture, logLevel: "info")
        var nodes: [ChildNode] = []
        defer { for node in nodes { node.child.stop(SIGKILL) }; server.stopAndRemove() }
        try await waitUntilUp(server.base)
        try server.logIn()
        let link = try linkedTenant(server, "acme")
        for (index, region) in ["eu-west-1", "eu-west-1", "us-east-1"].enumerated() {
            nodes.append(try await startNode(server, region: region, name: "node-\(index)"))
        }
        // Each node encrypts; every node decrypts every other node's data (one L2 per tenant).
        var ciphertexts: [String] = []
        for node in nodes {
            let sealed = try encrypt(node, "acme", "card 4111-1111-1111-1111")
            try #require(sealed.status == 200, "encrypt: \(sealed.body)")
            ciphertexts.append(try #require(sealed.json["ciphertext"] as? String))
        }
        for node in nodes {
            for ciphertext in ciphertexts {
                let opened = try decrypt(node, "acme", ciphertext)
                #expect(opened.status == 200 && opened.json["plaintext"] as? String == Data("card 4111-1111-1111-1111".utf8).base64EncodedString())
            }
        }
        let listed = try #require(try admin(server, "GET", "/api/v1/nodes").json["items"] as? [[String: Any]])
        #expect(listed.count == 3 && listed.allSatisfy { $0["connected"] as? Bool == true })

        #expect(try admin(server, "POST", "/api/v1/tenants/acme/l1-links/\(link)/revoke").status == 200)
        try await eventually(10, "the link to lock") { try revocation(server, "acme", link)["state"] as? String == "LOCKED" }
        for node in nodes {
            let refused = try decrypt(node, "acme", ciphertexts[0])
            #expect(refused.status == 409 && errorCode(refused) == "key_revoked", "\(refused.body)")
            #expect(errorCode(try encrypt(node, "acme", "more")) == "key_revoked")
        }
        // Each proof names its node and the link, dropped the one key, and verifies offline.
        let progress = try revocation(server, "acme", link)
        let entries = try #require(progress["nodes"] as? [[String: Any]])
        #expect(entries.count == 3 && (progress["missing"] as? [String])?.isEmpty == true)
        let ids = Set(try nodes.map { try #require(try status($0)["node"] as? String) })
        #expect(Set(entries.compactMap { $0["node"] as? String }) == ids)
        for entry in entries {
            let key = try Curve25519.Signing.PublicKey(rawRepresentation: try #require(Data(base64Encoded: entry["signingKey"] as? String ?? "")))
            let statement = entry["statement"] as? String ?? ""
            #expect(key.isValidSignature(try #require(Data(base64Encoded: entry["signature"] as? String ?? "")), for: Data(statement.utf8)))
            let fields = try #require(try JSONSerialization.jsonObject(with: Data(statement.utf8)) as? [String: Any])
            #expect(fields["node"] as? String == entry["node"] as? String && fields["link"] as? String == link)
            #expect(fields["keysDropped"] as? Int == 1)
        }
        // The audit log holds the revocation and every acknowledgement.
        #expect(try auditCount(server, operation: "link.revoke", tenant: "acme") == 1)
        #expect(try auditCount(server, operation: "node.purge_ack", tenant: "acme") == 3)
        for node in nodes {
            #expect(node.log.contains("keys purged for a revoked link"))
            // No secret in a node's log (debug level): neither the data, nor its key files.
            #expect(!node.log.contains("4111"))
            for file in ["signing.key", "hpke.key"] {
                let pem = try String(contentsOfFile: "\(node.directory)/\(file)", encoding: .utf8)
                let body = pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
                #expect(!node.log.contains(body) && !node.log.contains(String(body.suffix(32))), "\(file) in the log")
            }
        }

        // A used enrolment token does not enrol a second node: the process says why and exits.
        let token = try enrolmentToken(server, region: "eu-west-1")
        let first = try ChildNode(gateway: server.base, region: "eu-west-1", enrolmentToken: token, in: server.directory, name: "first")
        nodes.append(first)
        try await waitUntilUp(first.base)
        let second = try ChildNode(gateway: server.base, region: "eu-west-1", enrolmentToken: token, in: server.directory, name: "second")
        second.child.process.waitUntilExit()
        #expect(second.child.process.terminationStatus == 65)
        #expect(second.log.contains("enrolment refused"))
        #expect(!FileManager.default.fileExists(atPath: "\(second.directory)/node.json"), "nothing recorded for a refused node")
    }

    @Test func aNodeStoppedDuringTheRevocationCatchesUpWhenRestarted() async throws {
        let server = try ChildServer(token: "orbital", fixture: fixture, logLevel: "info")
        var nodes: [ChildNode] = []
        defer { for node in nodes { node.child.stop(SIGKILL) }; server.stopAndRemove() }
        try await waitUntilUp(server.base)
        try server.logIn()
        let link = try linkedTenant(server, "globex")
        nodes.append(try await startNode(server, region: "eu-west-1", name: "staying"))
        nodes.append(try await startNode(server, region: "ap-south-1", name: "leaving"))
        let (staying, leaving) = (nodes[0], nodes[1])
        for node in nodes { #expect(try encrypt(node, "globex", "x").status == 200) }
        let leavingID = try #require(try status(leaving)["node"] as? String)

        leaving.child.stop(SIGTERM)
        #expect(try admin(server, "POST", "/api/v1/tenants/globex/l1-links/\(link)/revoke").status == 200)
        try await eventually(10, "the staying node's acknowledgement") {
            (try revocation(server, "globex", link)["nodes"] as? [[String: Any]])?.filter { $0["acknowledged"] as? Bool == true }.count == 1
        }
        let waiting = try revocation(server, "globex", link)
        #expect(waiting["state"] as? String == "REVOKED")
        #expect(waiting["missing"] as? [String] == [leavingID])
        #expect(waiting["exposureBound"] is String, "the stopped node's lease bounds the exposure")
        #expect(errorCode(try encrypt(staying, "globex", "y")) == "key_revoked")

        // Restarted on its data directory (no token needed): the missed event comes first.
        try leaving.child.start()
        try await waitUntilUp(leaving.base)
        try await eventually(15, "the link to lock") { try revocation(server, "globex", link)["state"] as? String == "LOCKED" }
        #expect(errorCode(try encrypt(leaving, "globex", "z")) == "key_revoked")
        // It held no key after the restart (memory only), and says so.
        let entry = try #require((try revocation(server, "globex", link)["nodes"] as? [[String: Any]])?.first { $0["node"] as? String == leavingID })
        #expect(entry["keysDropped"] as? Int == 0)
    }

    @Test func aNodeCutOffFromTheGatewayDropsItsKeysWhenTheLeaseEnds() async throws {
        let server = try ChildServer(token: "orbital", fixture: fixture, logLevel: "info", leaseSeconds: 5)
        var nodes: [ChildNode] = []
        defer { for node in nodes { node.child.stop(SIGKILL) }; server.stopAndRemove() }
        try await waitUntilUp(server.base)
        try server.logIn()
        _ = try linkedTenant(server, "initech")
        let node = try await startNode(server, region: "eu-west-1", name: "island")
        nodes.append(node)
        let sealed = try encrypt(node, "initech", "payroll")
        let ciphertext = try #require(sealed.json["ciphertext"] as? String)
        // Renewed while the gateway answers: still usable after the first lease's end. The node
        // is another process on the real clock, so real time must pass here; the test waits for
        // what it checks (the first lease over, a renewal seen) instead of a fixed time.
        let firstEnd = try #require(try leaseEnd(node, "initech"))
        try await eventually(15, "the first lease to end and a renewal to replace it") {
            guard Date() > firstEnd.addingTimeInterval(1), let end = try leaseEnd(node, "initech") else { return false }
            return end > firstEnd
        }
        #expect(try decrypt(node, "initech", ciphertext).status == 200)

        server.child.stop(SIGKILL)
        try await eventually(10, "the node to drop its key") { try status(node)["keysHeld"] as? Int == 0 }
        let refused = try decrypt(node, "initech", ciphertext)
        #expect(refused.status == 503 && errorCode(refused) == "key_unavailable", "\(refused.body)")
        #expect(node.log.contains("their lease ended without renewal (fail closed)"))
        #expect(try status(node)["connected"] as? Bool == false)

        // The gateway comes back: the node reconnects and reports the drop, which is audited.
        try server.child.start()
        try await waitUntilUp(server.base)
        try await eventually(15, "the lease drop to be audited") { try auditCount(server, operation: "node.lease_expired", tenant: "initech") == 1 }
        #expect(node.log.contains("reported keys dropped at lease end"))
        #expect(try decrypt(node, "initech", ciphertext).status == 200, "unsealed again once the gateway answers")
    }

    @Test func aGatewayKilledBetweenCommitAndDispatchDeliversTheEventAfterRestart() async throws {
        let server = try ChildServer(token: "orbital", fixture: fixture, logLevel: "info",
                                     environment: ["CMK_FAILPOINT": "revoke-before-dispatch"])
        var nodes: [ChildNode] = []
        defer { for node in nodes { node.child.stop(SIGKILL) }; server.stopAndRemove() }
        try await waitUntilUp(server.base)
        try server.logIn()
        let link = try linkedTenant(server, "umbrella")
        nodes.append(try await startNode(server, region: "eu-west-1", name: "a"))
        nodes.append(try await startNode(server, region: "us-east-1", name: "b"))
        var ciphertexts: [String] = []
        for node in nodes { ciphertexts.append(try #require(try encrypt(node, "umbrella", "s").json["ciphertext"] as? String)) }

        // The gateway dies after the commit, before the push: the client hears nothing.
        let revoked = try admin(server, "POST", "/api/v1/tenants/umbrella/l1-links/\(link)/revoke")
        #expect(revoked.status == 0)
        server.child.process.waitUntilExit()
        #expect(server.child.process.terminationReason == .uncaughtSignal)
        for (node, ciphertext) in zip(nodes, ciphertexts) {
            #expect(try decrypt(node, "umbrella", ciphertext).status == 200, "not dispatched: the node has not heard")
        }

        server.child.environment["CMK_FAILPOINT"] = nil
        try server.child.start()
        try await waitUntilUp(server.base)
        try await eventually(15, "the link to lock") { try revocation(server, "umbrella", link)["state"] as? String == "LOCKED" }
        for (node, ciphertext) in zip(nodes, ciphertexts) {
            #expect(errorCode(try decrypt(node, "umbrella", ciphertext)) == "key_revoked")
        }
        let entries = try #require(try revocation(server, "umbrella", link)["nodes"] as? [[String: Any]])
        #expect(entries.count == 2 && entries.allSatisfy { $0["keysDropped"] as? Int == 1 })
        // The crash came before the revocation's audit record; the restart wrote it, marked recovered.
        let records = try #require(try admin(server, "GET", "/api/v1/audit?operation=link.revoke&tenant=umbrella").json["items"] as? [[String: Any]])
        #expect(records.count == 1)
        #expect((records.first?["details"] as? [String: Any])?["recovered"] as? String == "true", "\(records)")
    }
}
