import Audit
import AuditFormat
import CMKCore
import Foundation

/// The audit log benchmark driver (Scripts/bench-audit runs it):
///
///     audit-bench append --dir DIR --records N --concurrency C   durable appends with checkpoint signing on
///     audit-bench export --dir DIR --out FILE                     the store's export, for `verify`
///     audit-bench verify --file FILE                              the offline verifier over an export
///
/// Prints one JSON object per run.
@main
struct AuditBench {
    static func main() async throws {
        let arguments = Array(CommandLine.arguments.dropFirst())
        func option(_ name: String) -> String? {
            arguments.firstIndex(of: "--\(name)").flatMap { arguments.indices.contains($0 + 1) ? arguments[$0 + 1] : nil }
        }
        switch arguments.first {
        case "append":
            guard let dir = option("dir"), let records = option("records").flatMap(Int.init) else { usage() }
            try await append(dir: dir, records: records, concurrency: option("concurrency").flatMap(Int.init) ?? 256)
        case "export":
            guard let dir = option("dir"), let out = option("out") else { usage() }
            try export(dir: dir, out: out)
        case "verify":
            guard let file = option("file") else { usage() }
            try verify(file: file)
        default:
            usage()
        }
    }

    static func usage() -> Never {
        FileHandle.standardError.write(Data("usage: audit-bench append --dir DIR --records N [--concurrency C] | export --dir DIR --out FILE | verify --file FILE\n".utf8))
        exit(64)
    }

    static func openLog(_ dir: String) throws -> AuditLog {
        let store = try AuditStore(path: dir + "/audit.sqlite", origin: "bench.openkcm.local/audit", checkpointEvery: 1000)
        let keyPath = dir + "/signing.key"
        if !FileManager.default.fileExists(atPath: keyPath) { _ = try Ed25519Keys.generate(path: keyPath) }
        return AuditLog(store: store, signer: try Ed25519FileSigner(path: keyPath, keyName: store.origin))
    }

    /// A record of the size and shape the gateway writes for a probe.
    static func record(_ i: Int) -> AuditRecord {
        AuditRecord(actor: AuditActor(kind: .system, id: "prober", authMethod: "internal"), operation: "l1.probe",
                    outcome: .success, tenant: "tenant-\(i % 1000)", keystore: "hsm",
                    keyReference: "pkcs11:token=cmk-l1;object=tenant-root-\(i % 1000);type=secret-key",
                    mechanism: "CKM_AES_KEY_WRAP_PAD", target: "5b0e4c1a-\(i)", requestID: "req-\(i)",
                    clientAddress: "10.0.0.1", latencyMicros: 250)
    }

    static func append(dir: String, records: Int, concurrency: Int) async throws {
        let log = try openLog(dir)
        let checkpointer = Task { await log.run(interval: .seconds(1)) }
        let start = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            var next = 0
            for _ in 0..<min(concurrency, records) {
                let i = next
                next += 1
                group.addTask { _ = try await log.append(record(i)) }
            }
            while try await group.next() != nil {
                guard next < records else { continue }
                let i = next
                next += 1
                group.addTask { _ = try await log.append(record(i)) }
            }
        }
        let elapsed = ContinuousClock.now - start
        checkpointer.cancel()
        let last = try await log.checkpoint()
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        print(#"{"op":"append","records":\#(records),"concurrency":\#(concurrency),"seconds":\#(seconds),"records_per_sec":\#(Double(records) / seconds),"tree_size":\#(last.checkpoint.size)}"#)
    }

    static func export(dir: String, out: String) throws {
        let store = try AuditStore(path: dir + "/audit.sqlite")
        let key = try Ed25519FileSigner(path: dir + "/signing.key", keyName: store.origin).verifierKey
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        guard let handle = FileHandle(forWritingAtPath: out) else { throw AuditError(.invalidInput, "cannot write \(out)") }
        var buffer: [UInt8] = []
        try store.export(from: 0, to: nil, key: key) { line in
            buffer += line
            buffer.append(0x0A)
            if buffer.count > 1 << 22 { handle.write(Data(buffer)); buffer.removeAll(keepingCapacity: true) }
        }
        handle.write(Data(buffer))
        try handle.close()
        try Data(key.description.utf8).write(to: URL(fileURLWithPath: out + ".vkey"))
        print(#"{"op":"export","records":\#(store.head.size)}"#)
    }

    static func verify(file: String) throws {
        let start = ContinuousClock.now
        let summary = try AuditVerifier().verify(fileAt: file)
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        print(#"{"op":"verify","records":\#(summary.records),"seconds":\#(seconds),"records_per_sec":\#(Double(summary.records) / seconds),"checkpoints":\#(summary.checkpointsVerified)}"#)
    }
}
