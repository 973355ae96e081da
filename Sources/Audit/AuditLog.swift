public import AuditFormat
import Foundation
import NIOConcurrencyHelpers
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
    /// Why the last copy to the witness directory failed; nil once one succeeds.
    private let lastWitnessFailure = NIOLockedValueBox<String?>(nil)

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
    /// file and a rename so a reader never sees half a note. A failure is kept for `/readyz`
    /// (`witnessProblem`) as well as thrown: checkpoints are issued in the background, where a
    /// thrown error alone would go unseen.
    private func copyToWitness(_ checkpoint: SignedCheckpoint) throws {
        guard let witnessDirectory else { return }
        let text = Data(checkpoint.text.utf8)
        for name in ["\(checkpoint.checkpoint.size).checkpoint", "latest.checkpoint"] {
            let target = URL(fileURLWithPath: witnessDirectory).appendingPathComponent(name)
            do {
                try text.write(to: target, options: .atomic)
            } catch {
                let reason = "cannot copy checkpoint \(checkpoint.checkpoint.size) to the witness directory \(witnessDirectory): \(error.localizedDescription)"
                lastWitnessFailure.withLockedValue { $0 = reason }
                throw AuditError(.unavailable, reason)
            }
        }
        lastWitnessFailure.withLockedValue { $0 = nil }
    }

    /// What keeps checkpoints from reaching the witness directory, if anything: it is missing,
    /// not a directory, or not writable now, or the last copy failed. Nil when none is set.
    public nonisolated func witnessProblem() -> String? {
        guard let witnessDirectory else { return nil }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: witnessDirectory, isDirectory: &isDirectory) else {
            return "the audit witness directory \(witnessDirectory) does not exist: checkpoints are not copied"
        }
        guard isDirectory.boolValue else { return "the audit witness path \(witnessDirectory) is not a directory: checkpoints are not copied" }
        guard access(witnessDirectory, W_OK | X_OK) == 0 else {
            return "the audit witness directory \(witnessDirectory) cannot be written: checkpoints are not copied"
        }
        return lastWitnessFailure.withLockedValue { $0 }
    }
}
