import Foundation
@testable import Audit
@testable import AuditFormat
import Storage
import TestSupport
import Testing

/// One audit log for several gateway replicas: stores in different processes (here, different
/// pools) appending to one PostgreSQL database make one chain that the offline verifier accepts,
/// whatever happens to their connections.
@Suite(.serialized) struct AuditPostgresTests {
    static func freshDatabase() throws -> (settings: PostgresSettings, password: String) {
        let cluster = try PostgresCluster.shared()
        let name = try cluster.freshDatabase("audit")
        return (try PostgresSettings(url: cluster.url(database: name) + "?sslmode=disable&max_connections=4"), cluster.password)
    }

    static func replica(_ settings: PostgresSettings, _ password: String) async throws -> AuditLog {
        let store = try await AuditStore.open(postgres: settings, password: password, origin: "openkcm.test/audit", checkpointEvery: 64)
        return AuditLog(store: store, signer: try Ed25519FileSigner(pem: Sample.signerPEM, keyName: store.origin))
    }

    @Test func replicasAppendingTogetherMakeOneChainThatVerifies() async throws {
        let (settings, password) = try Self.freshDatabase()
        let a = try await Self.replica(settings, password), b = try await Self.replica(settings, password)
        #expect(a.store.origin == b.store.origin)
        async let first: Void = Sample.fill(a, count: 300, from: 0, concurrency: 8)
        async let second: Void = Sample.fill(b, count: 300, from: 1000, concurrency: 8)
        _ = try await (first, second)
        #expect(a.store.head == b.store.head && a.store.head.size == 600)
        let export = try Sample.export(b)
        let summary = try AuditVerifier(options: .init(publicKey: a.verifierKey)).verify(export)
        #expect(summary.records == 600 && summary.treeSize == 600)
        // Every record once: both replicas' targets, no position twice.
        let all = try (0..<600).map { try #require(try a.store.record(seq: UInt64($0))).record }
        #expect(Set(all.map(\.seq)).count == 600)
        #expect(Set(all.compactMap(\.target)) == Set((0..<300).map { "link-\($0)" } + (1000..<1300).map { "link-\($0)" }))
        // Proofs from either replica, against a checkpoint the other signed.
        let checkpoint = try await a.checkpoint()
        let proof = try b.store.inclusionProof(seq: 123, size: checkpoint.checkpoint.size)
        let (_, _, leaf) = try #require(try b.store.record(seq: 123))
        #expect(Merkle.verifyInclusion(leafHash: leaf, index: 123, size: checkpoint.checkpoint.size, proof: proof, root: checkpoint.checkpoint.root))
    }

    /// Connections cut mid-batch (as when a replica dies or the database fails over): appends
    /// in flight fail, none that succeeded is lost or doubled, and the store goes on by itself.
    @Test func aBatchCutOffMidwayLosesNothingAcknowledgedAndTheStoreRecovers() async throws {
        let cluster = try PostgresCluster.shared()
        let (settings, password) = try Self.freshDatabase()
        let log = try await Self.replica(settings, password)
        try await Sample.fill(log, count: 20)
        let outcomes = await withTaskGroup(of: (Int, AuditRecord?).self) { group in
            for i in 100..<400 { group.addTask { (i, try? await log.append(Sample.record(i))) } }
            group.addTask {
                try? cluster.terminateConnections(database: settings.database)
                return (-1, nil)
            }
            var outcomes: [(Int, AuditRecord?)] = []
            for await outcome in group where outcome.0 >= 0 { outcomes.append(outcome) }
            return outcomes
        }
        // Whatever failed, the store takes appends again without a restart.
        _ = try await log.append(Sample.record(999))
        try await log.checkpoint()
        let summary = try AuditVerifier(options: .init(publicKey: log.verifierKey)).verify(try Sample.export(log))
        let stored = try (0..<summary.records).map { try #require(try log.store.record(seq: $0)).record }
        let targets = stored.compactMap(\.target)
        #expect(targets.count == Set(targets).count, "no record twice")
        for case let (i, record?) in outcomes {
            #expect(stored[Int(record.seq)].target == "link-\(i)", "an acknowledged append is where it was said to be")
        }
        #expect(targets.last == "link-999")
    }

    @Test func whileTheDatabaseIsDownAppendsFailAndAfterItTheyWork() async throws {
        let cluster = try PostgresCluster.shared()
        let (settings, password) = try Self.freshDatabase()
        let log = try await Self.replica(settings, password)
        try await Sample.fill(log, count: 5)
        try cluster.stop()
        await #expect(throws: AuditError(.unavailable, "")) { _ = try await log.append(Sample.record(50)) }
        try cluster.restart()
        let record = try await log.append(Sample.record(51))
        #expect(record.seq == 5)
        _ = try AuditVerifier(options: .init(publicKey: log.verifierKey)).verify(try Sample.export(log))
    }
}
