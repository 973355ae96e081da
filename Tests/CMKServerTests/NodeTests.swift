import AsyncHTTPClient
import Audit
import AuditFormat
import CMKCore
@testable import CMKServer
import ControlPlane
import Crypto
import Foundation
import Hummingbird
import HummingbirdTesting
import KSI
import NIOHTTP1
import NodeProtocol
import Orbital
import PKCS11
import Registry
import TestSupport
import Testing

/// A regional node played in process: its identity keys, and signed requests.
struct SimulatedNode {
    let signing = Curve25519.Signing.PrivateKey()
    let hpke = Curve25519.KeyAgreement.PrivateKey()
    var id = ""

    /// `sentHPKEKey` replaces the HPKE key after the proof is made (a forgery).
    func enrolBody(token: String, sentHPKEKey: Data? = nil) throws -> String {
        let signingKey = signing.publicKey.rawRepresentation, provenKey = hpke.publicKey.rawRepresentation
        let proof = try signing.signature(for: NodeProtocol.enrolmentProofMessage(token: token, signingKey: signingKey, hpkeKey: provenKey))
        let hpkeKey = sentHPKEKey ?? provenKey
        return String(decoding: try JSONSerialization.data(withJSONObject: [
            "token": token, "signingKey": signingKey.base64EncodedString(), "hpkeKey": hpkeKey.base64EncodedString(),
            "proof": proof.base64EncodedString(),
        ]), as: UTF8.self)
    }

    /// Headers for a signed request; `nonce` and `timestamp` can be forced to test replay and skew.
    func headers(_ method: String, _ path: String, body: String, nonce: String = UUID().uuidString,
                 timestamp: Int64 = Int64(Date().timeIntervalSince1970 * 1000), signer: Curve25519.Signing.PrivateKey? = nil) throws -> HTTPFields {
        let bodyHash = Hex.encode(SHA256.hash(data: Data(body.utf8)))
        let message = NodeProtocol.requestMessage(method: method, path: path, timestamp: String(timestamp), nonce: nonce, bodyHash: bodyHash)
        let signature = try (signer ?? signing).signature(for: message)
        return [.init("X-OpenKCM-Node")!: id, .init("X-OpenKCM-Timestamp")!: String(timestamp), .init("X-OpenKCM-Nonce")!: nonce,
                .init("X-OpenKCM-Signature")!: signature.base64EncodedString(), .contentType: "application/json"]
    }

    /// Opens an unseal response: the L2 bytes.
    func open(_ response: [String: Any], tenant: String) throws -> Data {
        let l2Ref = try #require(response["l2Ref"] as? String)
        guard let encapsulated = (response["encapsulatedKey"] as? String).flatMap({ Data(base64Encoded: $0) }),
              let ciphertext = (response["ciphertext"] as? String).flatMap({ Data(base64Encoded: $0) }) else {
            throw SoftHSMFixture.FixtureError(message: "not an unseal response: \(response)")
        }
        var recipient = try HPKE.Recipient(privateKey: hpke, ciphersuite: .Curve25519_SHA256_ChachaPoly,
                                           info: NodeProtocol.unsealInfo(tenant: tenant, l2Ref: l2Ref, node: id), encapsulatedKey: encapsulated)
        return try recipient.open(ciphertext)
    }
}

extension SimulatedNode {
    /// A signed purge acknowledgement for `event` (canonical JSON, as the gateway requires).
    func ack(event: String, link: String, keysDropped: Int, node: String? = nil, signer: Curve25519.Signing.PrivateKey? = nil) throws -> String {
        let statement = try JSONValue.object([
            "type": .string("openkcm-purge-ack/v1"), "event": .string(event), "link": .string(link), "node": .string(node ?? id),
            "keysDropped": .integer(Int64(keysDropped)), "time": .string(RFC3339.format(Date())),
        ]).canonicalBytes()
        let signature = try (signer ?? signing).signature(for: statement)
        return String(decoding: try JSONSerialization.data(withJSONObject: [
            "statement": String(decoding: statement, as: UTF8.self), "signature": signature.base64EncodedString(),
        ]), as: UTF8.self)
    }
}

@Suite(.serialized) struct NodeTests {
    /// Enrols a simulated node through the API.
    func enrolledNode(_ client: any TestClientProtocol, region: String = "eu-west-1") async throws -> SimulatedNode {
        let issued = try await client.execute(uri: "/api/v1/nodes/enrolments", method: .post, headers: ServerHarness.operatorAuth,
                                              body: ServerHarness.body(#"{"region":"\#(region)"}"#))
        let token = try #require(try issued.json()["token"] as? String)
        var node = SimulatedNode()
        let enrolled = try await client.execute(uri: "/node/v1/enrol", method: .post, headers: [.contentType: "application/json"],
                                                body: ServerHarness.body(try node.enrolBody(token: token)))
        node.id = try #require(try enrolled.json()["id"] as? String)
        return node
    }

    func signed(_ client: any TestClientProtocol, _ node: SimulatedNode, _ method: HTTPRequest.Method, _ uri: String,
                _ body: String = "") async throws -> TestResponse {
        try await client.execute(uri: uri, method: method, headers: try node.headers(method.rawValue, uri, body: body),
                                 body: ServerHarness.body(body))
    }

    /// Acknowledgements authenticate themselves: the statement is signed with the node's key.
    func postAck(_ client: any TestClientProtocol, _ body: String) async throws -> TestResponse {
        try await client.execute(uri: "/node/v1/acks", method: .post, headers: [.contentType: "application/json"], body: ServerHarness.body(body))
    }

    @Test func revocationIsLockedOnlyWhenEveryNodeHasSentAVerifiedAcknowledgement() async throws {
        let harness = try ServerHarness()
        try await harness.test { client, gateway in
            _ = try await client.execute(uri: "/api/v1/tenants", method: .post, headers: ServerHarness.auth,
                                         body: ServerHarness.body(#"{"id":"acks","name":"Acks"}"#))
            let created = try await client.execute(uri: "/api/v1/tenants/acks/l1-links", method: .post, headers: ServerHarness.auth,
                                                   body: ServerHarness.body(#"{"provider":"pkcs11","keystore":"hsm","key":"pkcs11:object=l1"}"#))
            let linkID = try #require(try created.json()["id"] as? String)
            let a = try await enrolledNode(client), b = try await enrolledNode(client, region: "us-west-2")
            for node in [a, b] {
                #expect(try await signed(client, node, .post, "/node/v1/unseal", #"{"tenant":"acks"}"#).status == .ok)
            }
            #expect(try await client.execute(uri: "/api/v1/tenants/acks/l1-links/\(linkID)/revocation", method: .get,
                                             headers: ServerHarness.auth).status == .notFound)
            #expect(try await client.execute(uri: "/api/v1/tenants/acks/l1-links/\(linkID)/revoke", method: .post,
                                             headers: ServerHarness.auth).status == .ok)
            func progress() async throws -> [String: Any] {
                try await client.execute(uri: "/api/v1/tenants/acks/l1-links/\(linkID)/revocation", method: .get,
                                         headers: ServerHarness.auth).json()
            }
            var state = try await progress()
            #expect(state["state"] as? String == "REVOKED")
            #expect(Set(state["missing"] as? [String] ?? []) == [a.id, b.id])
            #expect(state["exposureBound"] != nil)

            // The node catches up on the events it missed and finds the revocation.
            let events = try await signed(client, a, .get, "/node/v1/events?after=0")
            let items = try #require(try events.json()["items"] as? [[String: Any]])
            let event = try #require(items.first { $0["type"] as? String == "l1.revoked" && $0["link"] as? String == linkID })
            let eventID = try #require(event["id"] as? String)

            let first = try a.ack(event: eventID, link: linkID, keysDropped: 1)
            #expect(try await postAck(client, first).status == .created)
            // Replayed: the very same acknowledgement again, and a fresh one for the same event.
            #expect(try await postAck(client, first).status == .conflict)
            let replayed = try await postAck(client, try a.ack(event: eventID, link: linkID, keysDropped: 1))
            #expect(replayed.status == .conflict)
            // Forged: node b claims to be a; a statement signed by a key that is not b's; a
            // node nobody enrolled; not an acknowledgement at all.
            #expect(try await postAck(client, try b.ack(event: eventID, link: linkID, keysDropped: 1, node: a.id)).status == .unauthorized)
            #expect(try await postAck(client, try b.ack(event: eventID, link: linkID, keysDropped: 1, node: "no-such-node")).status == .unauthorized)
            #expect(try await postAck(client, #"{"statement":"{\"type\":\"other\"}","signature":"AAAA"}"#).status == .unprocessableContent)
            #expect(try await postAck(client, try b.ack(event: eventID, link: linkID, keysDropped: 1, signer: Curve25519.Signing.PrivateKey())).status == .unauthorized)
            state = try await progress()
            #expect(state["state"] as? String == "REVOKED" && state["missing"] as? [String] == [b.id])

            #expect(try await postAck(client, try b.ack(event: eventID, link: linkID, keysDropped: 1)).status == .created)
            state = try await progress()
            #expect(state["state"] as? String == "LOCKED")
            #expect((state["missing"] as? [String])?.isEmpty == true)
            // Every proof verifies offline with the node's key, as a third party would check it.
            for entry in try #require(state["nodes"] as? [[String: Any]]) {
                let key = try Curve25519.Signing.PublicKey(rawRepresentation: try #require(Data(base64Encoded: entry["signingKey"] as? String ?? "")))
                let statement = Data((entry["statement"] as? String ?? "").utf8)
                #expect(key.isValidSignature(try #require(Data(base64Encoded: entry["signature"] as? String ?? "")), for: statement))
            }
            let acks = try gateway.audit.store.records(AuditQuery(operation: "node.purge_ack")).records
            #expect(Set(acks.map(\.actor.id)) == [a.id, b.id] && acks.allSatisfy { $0.target == linkID })
        }
    }

    func json(_ response: TestResponse) throws -> [String: Any] { try response.json() }

    @Test func anEnrolledNodeUnsealsTheTenantsL2UntilRevocation() async throws {
        let harness = try ServerHarness()
        try await harness.test { client, gateway in
            func admin(_ uri: String, _ method: HTTPRequest.Method, _ body: String? = nil) async throws -> TestResponse {
                try await client.execute(uri: uri, method: method, headers: ServerHarness.auth, body: body.map(ServerHarness.body))
            }
            #expect(try await admin("/api/v1/tenants", .post, #"{"id":"nodes","name":"Nodes"}"#).status == .created)
            let created = try await admin("/api/v1/tenants/nodes/l1-links", .post, #"{"provider":"pkcs11","keystore":"hsm","key":"pkcs11:object=l1"}"#)
            let linkID = try #require(try created.json()["id"] as? String)

            // Enrolment: a one-time token from a platform operator (a security administrator may
            // not enrol the nodes that unseal: separation of duties); the node proves it holds its key.
            let notHis = try await admin("/api/v1/nodes/enrolments", .post, #"{"region":"eu-central-1"}"#)
            #expect(notHis.status == .forbidden)
            let issued = try await client.execute(uri: "/api/v1/nodes/enrolments", method: .post, headers: ServerHarness.operatorAuth,
                                                  body: ServerHarness.body(#"{"region":"eu-central-1"}"#))
            #expect(issued.status == .created)
            let token = try #require(try issued.json()["token"] as? String)
            var node = SimulatedNode()
            let enrolled = try await client.execute(uri: "/node/v1/enrol", method: .post, headers: [.contentType: "application/json"],
                                                    body: ServerHarness.body(try node.enrolBody(token: token)))
            #expect(enrolled.status == .created)
            node.id = try #require(try enrolled.json()["id"] as? String)
            // The token works once.
            let again = SimulatedNode()
            #expect(try await client.execute(uri: "/node/v1/enrol", method: .post, headers: [.contentType: "application/json"],
                                             body: ServerHarness.body(try again.enrolBody(token: token))).status == .unauthorized)

            // Unseal: the node opens what the gateway sealed to it, and finds the tenant's L2.
            let body = #"{"tenant":"nodes"}"#
            let unsealed = try await client.execute(uri: "/node/v1/unseal", method: .post,
                                                    headers: try node.headers("POST", "/node/v1/unseal", body: body), body: ServerHarness.body(body))
            #expect(unsealed.status == .ok, "\(unsealed.text)")
            let l2 = try node.open(try unsealed.json(), tenant: "nodes")
            let record = try #require(try await gateway.registry.l2Key(linkID: linkID))
            let sovereign = try await gateway.sovereignBinding(of: record)
            let expected = try await gateway.keystores["hsm"]!.token.unwrap(sovereign, with: try KeyReference(parsing: "pkcs11:token=server;object=l1"))
            #expect(l2 == expected.withUnsafeBytes { Data($0) })
            // The sealed L2 opens for this node only.
            var other = SimulatedNode()
            other.id = node.id
            #expect(throws: (any Error).self) { _ = try other.open(try unsealed.json(), tenant: "nodes") }

            // Heartbeat: the node reports how many keys it holds; the listing shows it and the lease.
            let beat = #"{"keysHeld":1}"#
            #expect(try await client.execute(uri: "/node/v1/heartbeat", method: .post, headers: try node.headers("POST", "/node/v1/heartbeat", body: beat),
                                             body: ServerHarness.body(beat)).status == .noContent)
            let listed = try await admin("/api/v1/nodes", .get)
            let items = try #require(try listed.json()["items"] as? [[String: Any]])
            #expect(items.count == 1 && items[0]["leaseExpiresAt"] != nil && items[0]["region"] as? String == "eu-central-1")
            #expect(items[0]["keysHeld"] as? Int == 1 && items[0]["lastHeartbeatAt"] != nil)

            // A node that dropped keys at the end of a lease says so: logged, audited, lease forgotten.
            let dropped = #"{"keysHeld":0,"leaseDrops":["nodes"]}"#
            #expect(try await client.execute(uri: "/node/v1/heartbeat", method: .post, headers: try node.headers("POST", "/node/v1/heartbeat", body: dropped),
                                             body: ServerHarness.body(dropped)).status == .noContent)
            #expect(try gateway.audit.store.records(AuditQuery(operation: "node.lease_expired")).records.map(\.tenant) == ["nodes"])
            #expect(await gateway.worstCaseExposure(tenantID: "nodes") == nil)

            // After the kill-switch: key_revoked.
            #expect(try await admin("/api/v1/tenants/nodes/l1-links/\(linkID)/revoke", .post).status == .ok)
            let refused = try await client.execute(uri: "/node/v1/unseal", method: .post,
                                                   headers: try node.headers("POST", "/node/v1/unseal", body: body), body: ServerHarness.body(body))
            #expect(refused.status == .conflict)
            #expect(refused.errorCode == "key_revoked")

            // The audit log names the node for each unseal, and no L2 byte is in it.
            let records = try gateway.audit.store.records(AuditQuery(operation: "l2.unseal")).records
            #expect(records.map(\.outcome) == [.success, .denied])
            #expect(records.allSatisfy { $0.actor.kind == .node && $0.actor.id == node.id && $0.actor.authMethod == "node-signature" })
            let files = try FileManager.default.contentsOfDirectory(atPath: harness.directory).filter { $0.hasPrefix("audit.sqlite") || $0.hasPrefix("cmk.sqlite") }
            for file in files {
                let data = try Data(contentsOf: URL(fileURLWithPath: harness.directory + "/" + file))
                #expect(data.range(of: l2) == nil, "L2 found in \(file)")
            }
        }
    }

    @Test func forgedReplayedSkewedAndUnknownRequestsAreRefused() async throws {
        let harness = try ServerHarness()
        try await harness.test { client, gateway in
            let issued = try await client.execute(uri: "/api/v1/nodes/enrolments", method: .post, headers: ServerHarness.operatorAuth,
                                                  body: ServerHarness.body(#"{"region":"us-east-1"}"#))
            let token = try #require(try issued.json()["token"] as? String)
            var node = SimulatedNode()
            // An enrolment whose proof is signed by another key is refused, and uses nothing up.
            let forgedBody = try node.enrolBody(token: token, sentHPKEKey: Curve25519.KeyAgreement.PrivateKey().publicKey.rawRepresentation)
            #expect(try await client.execute(uri: "/node/v1/enrol", method: .post, headers: [.contentType: "application/json"],
                                             body: ServerHarness.body(forgedBody)).status == .unauthorized)
            let enrolled = try await client.execute(uri: "/node/v1/enrol", method: .post, headers: [.contentType: "application/json"],
                                                    body: ServerHarness.body(try node.enrolBody(token: token)))
            #expect(enrolled.status == .created)
            node.id = try #require(try enrolled.json()["id"] as? String)

            let body = #"{"tenant":"nobody"}"#
            func unseal(_ headers: HTTPFields, _ payload: String = body) async throws -> TestResponse {
                try await client.execute(uri: "/node/v1/unseal", method: .post, headers: headers, body: ServerHarness.body(payload))
            }
            // A valid request reaches the handler (no such tenant: 404).
            let headers = try node.headers("POST", "/node/v1/unseal", body: body)
            #expect(try await unseal(headers).status == .notFound)
            // The same request again: replay.
            #expect(try await unseal(headers).status == .unauthorized)
            // Another key's signature; a body that is not the one signed; a stale timestamp; an unknown node; none.
            #expect(try await unseal(try node.headers("POST", "/node/v1/unseal", body: body, signer: Curve25519.Signing.PrivateKey())).status == .unauthorized)
            #expect(try await unseal(try node.headers("POST", "/node/v1/unseal", body: body), #"{"tenant":"other"}"#).status == .unauthorized)
            #expect(try await unseal(try node.headers("POST", "/node/v1/unseal", body: body,
                                                      timestamp: Int64(Date().timeIntervalSince1970 * 1000) - 120_000)).status == .unauthorized)
            var stranger = SimulatedNode()
            stranger.id = UUID().uuidString.lowercased()
            #expect(try await unseal(try stranger.headers("POST", "/node/v1/unseal", body: body)).status == .unauthorized)
            #expect(try await unseal([.contentType: "application/json"]).status == .unauthorized)
            // Separation: the administrators' token does not unseal, a node's signature does not administer.
            #expect(try await unseal(ServerHarness.auth).status == .unauthorized)
            let asNode = try await client.execute(uri: "/api/v1/tenants", method: .get, headers: try node.headers("GET", "/api/v1/tenants", body: ""))
            #expect(asNode.status == .unauthorized)
            _ = gateway
        }
    }

    /// The revocation reaches a connected node over its event stream as soon as it commits,
    /// with no polling on either side; a node that connects later gets it first.
    @Test func revocationIsPushedToConnectedNodes() async throws {
        let harness = try ServerHarness()
        try await harness.testLive { client, gateway, port in
            _ = try await client.execute(uri: "/api/v1/tenants", method: .post, headers: ServerHarness.auth,
                                         body: ServerHarness.body(#"{"id":"push","name":"Push"}"#))
            let created = try await client.execute(uri: "/api/v1/tenants/push/l1-links", method: .post, headers: ServerHarness.auth,
                                                   body: ServerHarness.body(#"{"provider":"pkcs11","keystore":"hsm","key":"pkcs11:object=l1"}"#))
            let linkID = try #require(try created.json()["id"] as? String)
            let node = try await enrolledNode(client)

            func open(after: Int64) async throws -> HTTPClientResponse {
                let path = "/node/v1/stream?after=\(after)"
                var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
                for field in try node.headers("GET", path, body: "") { request.headers.add(name: field.name.rawName, value: field.value) }
                let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
                #expect(response.status == .ok)
                return response
            }
            func firstEvent(_ response: HTTPClientResponse) async throws -> String {
                var text = ""
                for try await chunk in response.body {
                    text += String(buffer: chunk)
                    if let end = text.range(of: "\n\n"), text.hasPrefix("id:") { return String(text[..<end.lowerBound]) }
                    if text.hasPrefix(":"), let end = text.range(of: "\n\n") { text = String(text[end.upperBound...]) }
                }
                return text
            }
            let connected = try await open(after: 0)
            // Wait until the stream is subscribed, then revoke.
            try await waitUntil("the node's event stream to be subscribed", timeout: .seconds(5)) { gateway.orbital.dispatcher.connections > 0 }
            #expect(gateway.orbital.dispatcher.connections == 1)
            let listed = try await client.execute(uri: "/api/v1/nodes", method: .get, headers: ServerHarness.auth)
            let nodes = try #require(try listed.json()["items"] as? [[String: Any]])
            #expect(nodes.first { $0["id"] as? String == node.id }?["connected"] as? Bool == true)
            let revoke = Task {
                try await client.execute(uri: "/api/v1/tenants/push/l1-links/\(linkID)/revoke", method: .post, headers: ServerHarness.auth).status
            }
            let pushed = try await firstEvent(connected)
            #expect(try await revoke.value == .ok)
            #expect(pushed.contains("event: l1.revoked"), "\(pushed)")
            #expect(pushed.contains(linkID))
            // A node connecting afterwards (after=0) receives the event first.
            let late = try await firstEvent(try await open(after: 0))
            #expect(late.contains("event: l1.revoked") && late.contains(linkID))
            // The event carries its sequence number as its SSE id, for Last-Event-ID on reconnect.
            let idLine = pushed.split(separator: "\n").first.map(String.init) ?? ""
            #expect(idLine.hasPrefix("id: ") && (Int64(idLine.dropFirst(4)) ?? 0) > 0, "\(idLine)")
        }
    }
}
