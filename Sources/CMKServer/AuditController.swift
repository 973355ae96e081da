import Audit
import AuditFormat
import CMKCore
import ControlPlane
import Foundation
import Hummingbird
import NIOCore

/// `/api/v1/audit`: records with filters, a record with its inclusion proof, the latest signed
/// checkpoint, consistency proofs, and exports that `cmk audit verify` checks offline.
/// Records are returned in their canonical JSON, byte for byte what the Merkle leaf covers.
struct AuditController {
    let audit: AuditLog

    func register(on group: RouterGroup<CMKRequestContext>) {
        group.get("audit", use: list)
        group.get("audit/records/:seq", use: record)
        group.get("audit/checkpoint", use: checkpoint)
        group.get("audit/consistency", use: consistency)
        group.get("audit/export", use: export)
    }

    @Sendable func list(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let q = request.uri.queryParameters
        func text(_ name: String) throws -> String? {
            guard let value = q[Substring(name)].map(String.init) else { return nil }
            guard !value.isEmpty, value.count <= 2048 else { throw DomainError.invalidInput("\(name) must be 1-2048 characters") }
            return value
        }
        func time(_ name: String) throws -> Int64? {
            guard let value = try text(name) else { return nil }
            guard let milliseconds = RFC3339.parseMilliseconds(value) else { throw DomainError.invalidInput("\(name) must be an RFC 3339 time") }
            return milliseconds
        }
        var query = AuditQuery(tenant: try text("tenant"), keyReference: try text("key"), actor: try text("actor"),
                               operation: try text("operation"), fromTime: try time("from"), toTime: try time("to"))
        if let outcome = try text("outcome") {
            guard let value = AuditRecord.Outcome(rawValue: outcome) else { throw DomainError.invalidInput("outcome must be success, failure or denied") }
            query.outcome = value
        }
        if let limit = try text("limit") {
            guard let value = Int(limit), (1...AuditQuery.maxLimit).contains(value) else {
                throw DomainError.invalidInput("limit must be 1-\(AuditQuery.maxLimit)")
            }
            query.limit = value
        }
        if let cursor = try text("cursor") {
            guard let value = UInt64(cursor) else { throw DomainError.invalidInput("cursor is the nextCursor of a previous page") }
            query.after = value
        }
        let finalQuery = query
        let page = try await blocking { try audit.store.records(finalQuery) }
        var items: [JSONValue] = []
        for record in page.records { items.append(record.jsonValue) }
        var body: [String: JSONValue] = ["items": .array(items)]
        if let next = page.next { body["nextCursor"] = .string(String(next)) }
        return try Self.json(.object(body))
    }

    @Sendable func record(_ request: Request, context: CMKRequestContext) async throws -> Response {
        guard let seq = UInt64(try context.parameters.require("seq")) else { throw DomainError.invalidInput("a record id is its position, an integer") }
        guard let (record, _, leaf) = try await blocking({ try audit.store.record(seq: seq) }) else {
            throw DomainError.notFound("no audit record \(seq)")
        }
        // The proof is against a signed checkpoint: sign one now if the record is newer than the last.
        var checkpoint = try await audit.checkpoint()
        if checkpoint.checkpoint.size <= seq { checkpoint = try await audit.checkpoint() }
        let size = checkpoint.checkpoint.size
        let proof = try await blocking { try audit.store.inclusionProof(seq: seq, size: size) }
        return try Self.json(.object([
            "record": record.jsonValue,
            "leafHash": .string(Hex.encode(leaf)),
            "treeSize": .integer(Int64(size)),
            "inclusionProof": .array(proof.map { .string(Hex.encode($0)) }),
            "checkpoint": .string(checkpoint.text),
        ]))
    }

    @Sendable func checkpoint(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let signed = try await audit.checkpoint()
        return try Self.json(.object([
            "origin": .string(signed.checkpoint.origin),
            "treeSize": .integer(Int64(signed.checkpoint.size)),
            "rootHash": .string(Hex.encode(signed.checkpoint.root)),
            "time": .string(RFC3339.format(milliseconds: signed.checkpoint.time)),
            "note": .string(signed.text),
            "verifierKey": .string(audit.verifierKey.description),
            "publicKeyPEM": .string(Ed25519Keys.publicKeyPEM(audit.verifierKey.publicKey)),
        ]))
    }

    @Sendable func consistency(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let q = request.uri.queryParameters
        guard let old = q["from"].flatMap({ UInt64(String($0)) }), let new = q["to"].flatMap({ UInt64(String($0)) }), old > 0, old <= new else {
            throw DomainError.invalidInput("give from and to, tree sizes with 0 < from ≤ to")
        }
        _ = try await audit.checkpoint()
        guard new <= audit.store.head.size else { throw DomainError.notFound("the log has fewer than \(new) records") }
        let proof = try await blocking { try audit.store.consistencyProof(old: old, new: new) }
        var body: [String: JSONValue] = [
            "from": .integer(Int64(old)), "to": .integer(Int64(new)),
            "proof": .array(proof.map { .string(Hex.encode($0)) }),
        ]
        if let checkpoint = try audit.store.checkpoint(size: old) { body["fromCheckpoint"] = .string(checkpoint.text) }
        if let checkpoint = try audit.store.checkpoint(size: new) { body["toCheckpoint"] = .string(checkpoint.text) }
        return try Self.json(.object(body))
    }

    /// JSON Lines, streamed in pages so that a long log is never held in memory whole. Without
    /// `to`, a checkpoint is signed first so that the export ends under a signature.
    @Sendable func export(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let q = request.uri.queryParameters
        func number(_ name: String) throws -> UInt64? {
            guard let text = q[Substring(name)] else { return nil }
            guard let value = UInt64(String(text)) else { throw DomainError.invalidInput("\(name) must be a record position") }
            return value
        }
        let from = try number("from") ?? 0
        let end: UInt64
        if let to = try number("to") {
            end = min(to, audit.store.head.size)
        } else {
            end = try await audit.checkpoint().checkpoint.size
        }
        guard from <= end else { throw DomainError.invalidInput("from must not be after to") }
        let audit = self.audit
        let body = ResponseBody { writer in
            var position = from
            var first = true
            repeat {
                let stop = min(position + 5000, end)
                let (start, header) = (position, first)
                let chunk = try await blocking {
                    var buffer = ByteBuffer()
                    try audit.store.export(from: start, to: stop, key: audit.verifierKey, header: header) { line in
                        buffer.writeBytes(line)
                        buffer.writeInteger(UInt8(ascii: "\n"))
                    }
                    return buffer
                }
                try await writer.write(chunk)
                position = stop
                first = false
            } while position < end
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "application/x-ndjson",
                                               .contentDisposition: "attachment; filename=\"audit-\(from)-\(end).jsonl\""], body: body)
    }

    static func json(_ value: JSONValue) throws -> Response {
        Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: try value.canonicalBytes())))
    }
}

/// Runs blocking SQLite work off Swift's cooperative threads.
func blocking<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(with: Result { try work() }) }
    }
}
