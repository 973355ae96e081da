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
    var operations: AuditOperations { AuditOperations(audit: audit) }

    func register(on group: RouterGroup<CMKRequestContext>) {
        group.get("audit", use: list)
        group.get("audit/records/:seq", use: record)
        group.get("audit/checkpoint", use: checkpoint)
        group.get("audit/consistency", use: consistency)
        group.get("audit/export", use: export)
    }

    @Sendable func list(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let q = request.uri.queryParameters
        func text(_ name: String) -> String? { q[Substring(name)].map(String.init) }
        func time(_ name: String) throws -> Int64? {
            guard let value = text(name) else { return nil }
            guard let milliseconds = RFC3339.parseMilliseconds(value) else { throw DomainError.invalidInput("\(name) must be an RFC 3339 time") }
            return milliseconds
        }
        var limit: Int?
        if let value = text("limit") {
            guard let number = Int(value) else { throw DomainError.invalidInput("limit must be 1-\(AuditQuery.maxLimit)") }
            limit = number
        }
        var after: UInt64?
        if let cursor = text("cursor") {
            guard let value = UInt64(cursor) else { throw DomainError.invalidInput("cursor is the nextCursor of a previous page") }
            after = value
        }
        let query = try operations.query(tenant: text("tenant"), key: text("key"), actor: text("actor"), operation: text("operation"),
                                         outcome: text("outcome"), from: try time("from"), to: try time("to"), limit: limit, after: after)
        let page = try await operations.records(query)
        var items: [JSONValue] = []
        for record in page.records { items.append(record.jsonValue) }
        var body: [String: JSONValue] = ["items": .array(items)]
        if let next = page.next { body["nextCursor"] = .string(String(next)) }
        return try Self.json(.object(body))
    }

    @Sendable func record(_ request: Request, context: CMKRequestContext) async throws -> Response {
        guard let seq = UInt64(try context.parameters.require("seq")) else { throw DomainError.invalidInput("a record id is its position, an integer") }
        let found = try await operations.record(seq: seq)
        return try Self.json(.object([
            "record": found.record.jsonValue,
            "leafHash": .string(Hex.encode(found.leaf)),
            "treeSize": .integer(Int64(found.treeSize)),
            "inclusionProof": .array(found.proof.map { .string(Hex.encode($0)) }),
            "checkpoint": .string(found.checkpoint),
        ]))
    }

    @Sendable func checkpoint(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let signed = try await operations.checkpoint()
        return try Self.json(.object([
            "origin": .string(signed.checkpoint.origin),
            "treeSize": .integer(Int64(signed.checkpoint.size)),
            "rootHash": .string(Hex.encode(signed.checkpoint.root)),
            "time": .string(RFC3339.format(milliseconds: signed.checkpoint.time)),
            "note": .string(signed.text),
            "verifierKey": .string(operations.verifierKey.description),
            "publicKeyPEM": .string(Ed25519Keys.publicKeyPEM(operations.verifierKey.publicKey)),
        ]))
    }

    @Sendable func consistency(_ request: Request, context: CMKRequestContext) async throws -> Response {
        let q = request.uri.queryParameters
        guard let old = q["from"].flatMap({ UInt64(String($0)) }), let new = q["to"].flatMap({ UInt64(String($0)) }) else {
            throw DomainError.invalidInput("give from and to, tree sizes with 0 < from ≤ to")
        }
        let found = try await operations.consistency(from: old, to: new)
        var body: [String: JSONValue] = [
            "from": .integer(Int64(old)), "to": .integer(Int64(new)),
            "proof": .array(found.proof.map { .string(Hex.encode($0)) }),
        ]
        if let checkpoint = found.fromCheckpoint { body["fromCheckpoint"] = .string(checkpoint) }
        if let checkpoint = found.toCheckpoint { body["toCheckpoint"] = .string(checkpoint) }
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
        let (from, end) = try await operations.exportRange(from: try number("from") ?? 0, to: try number("to"))
        let operations = self.operations
        let body = ResponseBody { writer in
            try await operations.export(from: from, end: end) { try await writer.write($0) }
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
