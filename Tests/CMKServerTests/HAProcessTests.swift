import Foundation
import Testing
import TestSupport

/// Several `cmk serve` replicas on one PostgreSQL database behind haproxy, as an HA deployment
/// runs them: any replica serves any request, a revocation committed on one reaches the nodes
/// connected to the others, and killing a replica or restarting the database loses nothing.
@Suite(.serialized) struct HAProcessTests: ChildProcessTests {
    let fixture = SoftHSMFixture.shared

    /// Three replicas (the first started alone, so that it makes the keys the others share)
    /// and haproxy in front of them.
    struct Deployment {
        let cluster: PostgresCluster
        let database: String
        let shared: String
        let replicas: [ChildServer]
        let proxy: HAProxy

        var first: ChildServer { replicas[0] }

        func stop() {
            proxy.stop()
            for replica in replicas { replica.stopAndRemove() }
            try? FileManager.default.removeItem(atPath: shared)
        }
    }

    func deploy(_ name: String) async throws -> Deployment {
        let cluster = try PostgresCluster.shared()
        let database = try cluster.freshDatabase("ha_\(name)")
        let shared = NSTemporaryDirectory() + "cmk-ha-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: shared, withIntermediateDirectories: true)
        // Every replica signs events, unseal answers and checkpoints with the same keys.
        let extra = #""appCredentialSigningKey": "\#(shared)/app-credential-signing.key", "audit": {"signingKey": "\#(shared)/audit-signing.key"}, "#
            + #""streamHeartbeatSeconds": 2, "databasePasswordFile": "\#(cluster.passwordFile)""#
        func replica() throws -> ChildServer {
            try ChildServer(token: "ha", fixture: fixture, logLevel: "info", extraConfiguration: extra, database: cluster.url(database: database) + "?sslmode=disable")
        }
        let first = try replica()
        try await waitUntilUp(first.base)
        let replicas = [first, try replica(), try replica()]
        for replica in replicas { try await waitUntilUp(replica.base) }
        let proxy = try HAProxy(backends: replicas.map(\.port))
        try await eventually(20, "every replica ready") { try replicas.allSatisfy { try http(["\($0.base)/readyz"]).status == 200 } }
        try first.logIn()
        return Deployment(cluster: cluster, database: database, shared: shared, replicas: replicas, proxy: proxy)
    }

    /// An administrator's call to `base` (a replica, or haproxy), with the first replica's session.
    func admin(_ deployment: Deployment, _ base: String, _ method: String, _ path: String, _ body: String? = nil) throws -> HTTPResult {
        try http(deployment.first.auth + ["-X", method] + (body.map { ["-d", $0] } ?? []) + ["\(base)\(path)"])
    }

    func link(_ deployment: Deployment, _ tenant: String, via base: String) throws -> HTTPResult {
        let created = try admin(deployment, base, "POST", "/api/v1/tenants", #"{"id":"\#(tenant)","name":"\#(tenant)"}"#)
        guard created.status == 201 else { return created }
        return try admin(deployment, base, "POST", "/api/v1/tenants/\(tenant)/l1-links", #"{"provider":"pkcs11","keystore":"hsm","key":"pkcs11:object=l1"}"#)
    }

    func node(_ deployment: Deployment, _ name: String) async throws -> ChildNode {
        let issued = try http(["-H", "Authorization: Bearer \(try deployment.first.operatorToken())", "-H", "Content-Type: application/json",
                               "-d", #"{"region":"eu-west-1"}"#, "\(deployment.proxy.base)/api/v1/nodes/enrolments"])
        let token = try #require(issued.json["token"] as? String, "\(issued.body)")
        let node = try ChildNode(gateway: deployment.proxy.base, region: "eu-west-1", enrolmentToken: token, in: deployment.shared,
                                 name: name, issuer: deployment.first)
        try await waitUntilUp(node.base)
        try await eventually(15, "\(name) to open its event stream") { try status(node)["connected"] as? Bool == true }
        return node
    }

    func errorCode(_ result: HTTPResult) -> String? { (result.json["error"] as? [String: Any])?["code"] as? String }

    /// Nodes connected to each replica, as that replica sees them.
    func connectedCounts(_ deployment: Deployment) throws -> [Int] {
        try deployment.replicas.map { replica in
            let items = try admin(deployment, replica.base, "GET", "/api/v1/nodes").json["items"] as? [[String: Any]] ?? []
            return items.filter { $0["connected"] as? Bool == true }.count
        }
    }

    @Test func aRevocationOnOneReplicaLocksThroughNodesOnTheOthersWhileOneIsKilled() async throws {
        let deployment = try await deploy("revoke")
        var nodes: [ChildNode] = []
        defer { for node in nodes { node.child.stop(SIGKILL) }; deployment.stop() }
        let created = try link(deployment, "acme", via: deployment.proxy.base)
        let linkID = try #require(created.json["id"] as? String, "\(created.body)")
        for index in 0..<4 { nodes.append(try await node(deployment, "node-\(index)")) }
        for node in nodes {
            let sealed = try application(node, "acme", "encrypt", #"{"plaintext":"\#(Data("x".utf8).base64EncodedString())"}"#)
            try #require(sealed.status == 200, "\(sealed.body)")
        }
        // The revocation goes to the first replica; the replica holding most of the other
        // nodes' streams is killed while it is under way.
        let counts = try connectedCounts(deployment)
        #expect(counts.reduce(0, +) == 4 && counts[1] + counts[2] >= 1, "some node streams on a replica other than the revoking one: \(counts)")
        let victim = counts[1] >= counts[2] ? 1 : 2
        print("HA revocation: node streams per replica \(counts), replica \(victim) killed")
        async let revoked = Task.detached { [self] in
            try admin(deployment, deployment.first.base, "POST", "/api/v1/tenants/acme/l1-links/\(linkID)/revoke")
        }.value
        deployment.replicas[victim].child.stop(SIGKILL)
        #expect(try await revoked.status == 200)

        let survivors = deployment.replicas.indices.filter { $0 != victim }.map { deployment.replicas[$0] }
        try await eventually(30, "the link to lock (nodes on the killed replica reconnect elsewhere)") {
            try admin(deployment, deployment.first.base, "GET", "/api/v1/tenants/acme/l1-links/\(linkID)/revocation").json["state"] as? String == "LOCKED"
        }
        // The same progress on every surviving replica.
        let views = try survivors.map { try admin(deployment, $0.base, "GET", "/api/v1/tenants/acme/l1-links/\(linkID)/revocation").json }
        for view in views {
            #expect(view["state"] as? String == "LOCKED" && (view["missing"] as? [String])?.isEmpty == true)
            #expect(Set((view["nodes"] as? [[String: Any]] ?? []).compactMap { $0["node"] as? String }).count == 4)
        }
        for node in nodes {
            #expect(errorCode(try application(node, "acme", "encrypt", #"{"plaintext":"eA=="}"#)) == "key_revoked")
        }
        // One audit log for the deployment: it verifies offline, and holds each node's
        // acknowledgement of this revocation once.
        let export = try admin(deployment, deployment.proxy.base, "GET", "/api/v1/audit/export")
        #expect(export.status == 200)
        let file = deployment.shared + "/export.jsonl"
        try Data(export.body.utf8).write(to: URL(fileURLWithPath: file))
        let verified = try SoftHSMFixture.run(try builtProduct("cmk"), ["audit", "verify", file, "--json"])
        #expect(verified.status == 0, "\(verified.output) \(verified.error)")
        let acks = try admin(deployment, deployment.proxy.base, "GET", "/api/v1/audit?operation=node.purge_ack&tenant=acme&limit=500")
            .json["items"] as? [[String: Any]] ?? []
        let acknowledged = acks.compactMap { ($0["details"] as? [String: Any])?["node"] as? String }
        #expect(acknowledged.count == 4 && Set(acknowledged).count == 4, "\(acknowledged)")
        // The database password is in no replica's log and not in the audit log.
        for replica in deployment.replicas {
            #expect(!String(decoding: replica.logs, as: UTF8.self).contains(deployment.cluster.password))
        }
        #expect(!export.body.contains(deployment.cluster.password))
    }

    @Test func killingAReplicaDuringABurstOfHandshakesFailsNoMoreThanWasInFlight() async throws {
        let deployment = try await deploy("burst")
        defer { deployment.stop() }
        let inFlight = 6, total = 36, killAfter = 12
        let outcomes = try await withThrowingTaskGroup(of: (String, Int).self) { group in
            var outcomes: [(String, Int)] = []
            var next = 0
            func add() {
                let tenant = "t\(next)"
                next += 1
                group.addTask { [self] in (tenant, try link(deployment, tenant, via: deployment.proxy.base).status) }
            }
            for _ in 0..<inFlight { add() }
            while let outcome = try await group.next() {
                outcomes.append(outcome)
                if outcomes.count == killAfter { deployment.replicas[1].child.stop(SIGKILL) }
                if next < total { add() }
            }
            return outcomes
        }
        let failed = outcomes.filter { $0.1 != 201 }
        print("HA burst: \(failed.count) of \(total) handshakes failed, \(inFlight) in flight when replica 1 was killed")
        #expect(failed.count <= inFlight, "\(failed)")
        #expect(outcomes.count == total)
        // No half-made handshake: a tenant has a linked key exactly when its handshake answered 201,
        // or (for one cut off mid-answer) has none or one linked key, never anything else.
        for (tenant, status) in outcomes {
            let links = try admin(deployment, deployment.proxy.base, "GET", "/api/v1/tenants/\(tenant)/l1-links").json["items"] as? [[String: Any]]
            let states = (links ?? []).compactMap { $0["state"] as? String }
            if status == 201 { #expect(states == ["LINKED"], "\(tenant): \(states)") } else { #expect(states.isEmpty || states == ["LINKED"], "\(tenant): \(states)") }
        }
        // The deployment goes on on two replicas.
        #expect(try link(deployment, "after", via: deployment.proxy.base).status == 201)
        // A retry with the same Idempotency-Key that lands on another replica gets the first answer.
        let body = #"{"id":"once","name":"Once"}"#
        let key = ["-H", "Idempotency-Key: create-once"]
        let first = try http(deployment.first.auth + key + ["-d", body, "\(deployment.replicas[0].base)/api/v1/tenants"])
        let retried = try http(deployment.first.auth + key + ["-i", "-d", body, "\(deployment.replicas[2].base)/api/v1/tenants"])
        #expect(first.status == 201 && retried.status == 201, "\(retried.body)")
        #expect(retried.body.lowercased().contains("idempotent-replayed: true"), "\(retried.body)")
    }

    @Test func aDatabaseRestartMakesReplicasNotReadyRefusingWritesAndTheyRecoverByThemselves() async throws {
        let deployment = try await deploy("restart")
        defer { deployment.stop() }
        #expect(try link(deployment, "before", via: deployment.proxy.base).status == 201)
        // Load through the balancer for the whole outage: reads and writes on every replica.
        let load = Task.detached { [self] () -> [Int] in
            var statuses: [Int] = []
            var index = 0
            while !Task.isCancelled {
                index += 1
                statuses.append(try admin(deployment, deployment.proxy.base, "POST", "/api/v1/tenants", #"{"id":"load-\#(index)","name":"load"}"#).status)
                statuses.append(try admin(deployment, deployment.proxy.base, "GET", "/api/v1/tenants?limit=5").status)
            }
            return statuses
        }
        try deployment.cluster.stop()
        let replica = deployment.replicas[2]
        try await eventually(10, "the replica to report not ready") {
            let ready = try http(["\(replica.base)/readyz"])
            return ready.status == 503 && (ready.json["reason"] as? String ?? "").contains("registry database")
        }
        let refused = try admin(deployment, replica.base, "POST", "/api/v1/tenants", #"{"id":"during","name":"during"}"#)
        #expect(refused.status == 503, "\(refused.body)")
        #expect(["storage_unavailable", "audit_unavailable"].contains(errorCode(refused) ?? ""), "\(refused.body)")
        try deployment.cluster.restart()
        try await eventually(20, "every replica ready again") {
            try deployment.replicas.allSatisfy { try http(["\($0.base)/readyz"]).status == 200 }
        }
        try await eventually(10, "writes through the balancer to succeed again") {
            try admin(deployment, deployment.proxy.base, "GET", "/api/v1/tenants?limit=1").status == 200
        }
        load.cancel()
        let statuses = try await load.value
        // Answered, or refused as unavailable (by a replica, or by the balancer with every
        // replica out): never a server error, never a hang (curl's 20 s limit would show as 0).
        #expect(Set(statuses).isSubset(of: [200, 201, 503]), "\(Dictionary(grouping: statuses, by: { $0 }).mapValues(\.count))")
        print("HA database restart: statuses under load \(Dictionary(grouping: statuses, by: { $0 }).mapValues(\.count))")
        #expect(try link(deployment, "after", via: deployment.proxy.base).status == 201)
        #expect(try admin(deployment, replica.base, "GET", "/api/v1/tenants/during").status == 404, "the refused write changed nothing")
        #expect(try admin(deployment, replica.base, "GET", "/api/v1/tenants/before").status == 200)
    }
}
