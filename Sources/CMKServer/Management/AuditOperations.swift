import Audit
import AuditFormat
import CMKCore
import ControlPlane
import Foundation
import NIOCore

/// The audit log's reads, once, for both transports: filtered records, a record with its
/// inclusion proof, checkpoints, consistency proofs and the export `cmk audit verify` checks.
struct AuditOperations: Sendable {
    let audit: AuditLog

    /// Filters as both transports take them (absent: no filter), checked the same way.
    func query(tenant: String?, key: String?, actor: String?, operation: String?, outcome: String?,
               from: Int64?, to: Int64?, limit: Int?, after: UInt64?) throws -> AuditQuery {
        for (name, value) in [("tenant", tenant), ("key", key), ("actor", actor), ("operation", operation), ("outcome", outcome)] {
            if let value, value.isEmpty || value.count > 2048 { throw DomainError.invalidInput("\(name) must be 1-2048 characters") }
        }
        var query = AuditQuery(tenant: tenant, keyReference: key, actor: actor, operation: operation, fromTime: from, toTime: to)
        if let outcome {
            guard let value = AuditRecord.Outcome(rawValue: outcome) else { throw DomainError.invalidInput("outcome must be success, failure or denied") }
            query.outcome = value
        }
        if let limit {
            guard (1...AuditQuery.maxLimit).contains(limit) else { throw DomainError.invalidInput("limit must be 1-\(AuditQuery.maxLimit)") }
            query.limit = limit
        }
        query.after = after
        return query
    }

    func records(_ query: AuditQuery) async throws -> (records: [AuditRecord], next: UInt64?) {
        try await blocking { try audit.store.records(query) }
    }

    struct RecordProof: Sendable {
        var record: AuditRecord
        var leaf: Hash
        var treeSize: UInt64
        var proof: [Hash]
        var checkpoint: String
    }

    /// The record and its inclusion proof against a signed checkpoint (signed now if the
    /// record is newer than the last).
    func record(seq: UInt64) async throws -> RecordProof {
        guard let (record, _, leaf) = try await blocking({ try audit.store.record(seq: seq) }) else {
            throw DomainError.notFound("no audit record \(seq)")
        }
        var checkpoint = try await audit.checkpoint()
        if checkpoint.checkpoint.size <= seq { checkpoint = try await audit.checkpoint() }
        let size = checkpoint.checkpoint.size
        let proof = try await blocking { try audit.store.inclusionProof(seq: seq, size: size) }
        return RecordProof(record: record, leaf: leaf, treeSize: size, proof: proof, checkpoint: checkpoint.text)
    }

    func checkpoint() async throws -> SignedCheckpoint { try await audit.checkpoint() }

    var verifierKey: VerifierKey { audit.verifierKey }

    struct Consistency: Sendable {
        var proof: [Hash]
        var fromCheckpoint: String?
        var toCheckpoint: String?
    }

    func consistency(from old: UInt64, to new: UInt64) async throws -> Consistency {
        guard old > 0, old <= new else { throw DomainError.invalidInput("give from and to, tree sizes with 0 < from ≤ to") }
        _ = try await audit.checkpoint()
        guard new <= audit.store.head.size else { throw DomainError.notFound("the log has fewer than \(new) records") }
        let proof = try await blocking { try audit.store.consistencyProof(old: old, new: new) }
        return Consistency(proof: proof, fromCheckpoint: try audit.store.checkpoint(size: old)?.text,
                           toCheckpoint: try audit.store.checkpoint(size: new)?.text)
    }

    /// The records an export covers: from `from` to `to`, or without `to` up to a checkpoint
    /// signed now, so that the export ends under a signature.
    func exportRange(from: UInt64, to: UInt64?) async throws -> (from: UInt64, end: UInt64) {
        let end = if let to { min(to, audit.store.head.size) } else { try await audit.checkpoint().checkpoint.size }
        guard from <= end else { throw DomainError.invalidInput("from must not be after to") }
        return (from, end)
    }

    /// The export as JSON Lines, handed over in chunks of `pageSize` records, so that a long
    /// log is never held in memory whole. Stops between chunks when the task is cancelled.
    func export(from: UInt64, end: UInt64, pageSize: UInt64 = 5000, _ write: (ByteBuffer) async throws -> Void) async throws {
        var position = from
        var first = true
        repeat {
            try Task.checkCancellation()
            let stop = min(position + pageSize, end)
            let (start, header) = (position, first)
            let chunk = try await blocking { [audit] in
                var buffer = ByteBuffer()
                try audit.store.export(from: start, to: stop, key: audit.verifierKey, header: header) { line in
                    buffer.writeBytes(line)
                    buffer.writeInteger(UInt8(ascii: "\n"))
                }
                return buffer
            }
            try await write(chunk)
            position = stop
            first = false
        } while position < end
    }
}
