import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The audit log: the store plus the checkpoint signer. Appends go straight to the store's
/// group commit; checkpoints are issued one at a time (every `checkpointEvery` records, every
/// `checkpointInterval`, on demand), stored, and copied to the witness directory if one is set.
public actor AuditLog {
    public nonisolated let store: AuditStore
    let signer: any CheckpointSigner
    public nonisolated let witnessDirectory: String?

    public init(store: AuditStore, signer: any CheckpointSigner, witnessDirectory: String? = nil) {
        self.store = store
        self.signer = signer
        self.witnessDirectory = witnessDirectory
        store.setCheckpointHandler { [weak self] in
            guard let self else { return }
            Task { _ = try? await self.checkpoint() }
        }
    }

    /// The key that verifies this log's checkpoints, named after the log.
    public nonisolated var verifierKey: VerifierKey { signer.verifierKey }

    /// Appends a record; returns once it is durable. Throws `unavailable` when the store
    /// cannot write: the caller must then fail the operation (fail closed).
    public nonisolated func append(_ record: AuditRecord) async throws -> AuditRecord {
        try await store.append(record)
    }

    /// A signed checkpoint of everything committed so far: the latest one if nothing was
    /// appended since, a new one otherwise.
    @discardableResult
    public func checkpoint() async throws -> SignedCheckpoint {
        let head = store.head
        if let latest = try store.latestCheckpoint(), latest.checkpoint.size == head.size { return latest }
        let checkpoint = Checkpoint(origin: store.origin, size: head.size, root: head.root,
                                    time: Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)))
        let signed = try await SignedCheckpoint.sign(checkpoint, with: signer)
        try store.store(signed)
        try copyToWitness(signed)
        return signed
    }

    /// Issues checkpoints every `interval` until the task is cancelled.
    public func run(interval: Duration) async {
        while !Task.isCancelled {
            _ = try? await checkpoint()
            store.indexNow()
            try? await Task.sleep(for: interval)
        }
    }

    /// Writes `<size>.checkpoint` and replaces `latest.checkpoint`, each through a temporary
    /// file and a rename so a reader never sees half a note.
    private func copyToWitness(_ checkpoint: SignedCheckpoint) throws {
        guard let witnessDirectory else { return }
        let text = Data(checkpoint.text.utf8)
        for name in ["\(checkpoint.checkpoint.size).checkpoint", "latest.checkpoint"] {
            let target = URL(fileURLWithPath: witnessDirectory).appendingPathComponent(name)
            do {
                try text.write(to: target, options: .atomic)
            } catch {
                throw AuditError(.unavailable, "cannot copy the checkpoint to the witness directory \(witnessDirectory): \(error.localizedDescription)")
            }
        }
    }
}
