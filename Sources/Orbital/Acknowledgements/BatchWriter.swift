import NIOConcurrencyHelpers

/// Writes items in batches: whatever arrived while the previous batch was being written goes
/// in the next transaction. After a revocation every node acknowledges at once, and every
/// unseal stores its lease; one transaction (and one hand-off to the registry's writer) per
/// batch instead of per item, as the audit log does with its appends.
public final class BatchWriter<Item: Sendable, Output: Sendable>: Sendable {
    private struct Pending {
        var item: Item
        /// Nil: nobody waits for this one.
        var continuation: CheckedContinuation<Output, any Error>?
    }

    private struct State {
        var pending: [Pending] = []
        var flushing = false
    }

    /// Stores a batch in one transaction and returns one output per item, in order.
    private let write: @Sendable ([Item]) async throws -> [Output]
    private struct MismatchedBatch: Error { var items: Int, outputs: Int }
    private let state = NIOLockedValueBox(State())

    public init(write: @escaping @Sendable ([Item]) async throws -> [Output]) {
        self.write = write
    }

    /// Returns once the item is stored.
    public func submit(_ item: Item) async throws -> Output {
        try await withCheckedThrowingContinuation { continuation in enqueue(Pending(item: item, continuation: continuation)) }
    }

    /// Stored soon; nobody waits.
    public func submitWithoutWaiting(_ item: Item) { enqueue(Pending(item: item, continuation: nil)) }

    private func enqueue(_ pending: Pending) {
        let startFlushing = state.withLockedValue { state -> Bool in
            state.pending.append(pending)
            guard !state.flushing else { return false }
            state.flushing = true
            return true
        }
        if startFlushing { Task { await self.flush() } }
    }

    private func flush() async {
        while true {
            let batch = state.withLockedValue { state -> [Pending] in
                defer { state.pending.removeAll(keepingCapacity: true) }
                if state.pending.isEmpty { state.flushing = false }
                return state.pending
            }
            guard !batch.isEmpty else { return }
            do {
                let outputs = try await write(batch.map(\.item))
                // Every waiter must be resumed: a writer that answers for fewer items fails them all.
                guard outputs.count == batch.count else { throw MismatchedBatch(items: batch.count, outputs: outputs.count) }
                for (pending, output) in zip(batch, outputs) { pending.continuation?.resume(returning: output) }
            } catch {
                for pending in batch { pending.continuation?.resume(throwing: error) }
            }
        }
    }
}
