import Foundation
@testable import Audit
@testable import AuditFormat

/// A fresh directory for one test, removed afterwards.
func withTemporaryDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("audit-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    return try await body(directory.path)
}

enum Sample {
    static let signerPEM = """
        -----BEGIN PRIVATE KEY-----
        MC4CAQAwBQYDK2VwBCIEIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f
        -----END PRIVATE KEY-----
        """

    static func log(in directory: String, checkpointEvery: UInt64 = 16, witness: String? = nil) throws -> AuditLog {
        let store = try AuditStore(path: directory + "/audit.sqlite", origin: "openkcm.test/audit", checkpointEvery: checkpointEvery)
        return AuditLog(store: store, signer: try Ed25519FileSigner(pem: signerPEM, keyName: store.origin), witnessDirectory: witness)
    }

    static func record(_ i: Int, tenant: String = "acme") -> AuditRecord {
        AuditRecord(actor: AuditActor(kind: .user, id: "alice", session: "s-\(i % 3)", authMethod: "bootstrap-bearer"),
                    operation: i % 2 == 0 ? "l1.probe" : "l1.wrap", outcome: i % 5 == 0 ? .failure : .success,
                    tenant: tenant, keystore: "hsm", keyReference: "pkcs11:token=t;object=k\(i % 4)",
                    mechanism: "CKM_AES_KEY_WRAP_PAD", errorCode: i % 5 == 0 ? "permission_denied" : nil,
                    target: "link-\(i)", requestID: "req-\(i)", clientAddress: "127.0.0.1", latencyMicros: Int64(100 + i),
                    details: i % 7 == 0 ? ["check": "wrap \"quoted\"\n"] : [:])
    }

    /// Appends `count` records, `concurrency` at a time, then checkpoints.
    static func fill(_ log: AuditLog, count: Int, from start: Int = 0, concurrency: Int = 8) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = start
            for _ in 0..<min(concurrency, count) {
                let i = next
                next += 1
                group.addTask { _ = try await log.append(record(i)) }
            }
            while try await group.next() != nil {
                guard next < start + count else { continue }
                let i = next
                next += 1
                group.addTask { _ = try await log.append(record(i)) }
            }
        }
        try await log.checkpoint()
    }

    static func export(_ log: AuditLog, from: UInt64 = 0, to: UInt64? = nil) throws -> [UInt8] {
        var out: [UInt8] = []
        try log.store.export(from: from, to: to, key: log.verifierKey) { out += $0 + [0x0A] }
        return out
    }
}
