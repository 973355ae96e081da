import Audit
import AuditFormat
import CMKCore
import CMKProto
import ControlPlane
import Foundation
import GRPCCore
import NIOCore
import NIOFoundationEssentialsCompat
import SwiftProtobuf

/// The audit log over gRPC: the same reads as REST, and the export as a stream of chunks
/// whose bytes, concatenated, are the JSON Lines file `cmk audit verify` checks.
struct AuditGRPCService: Openkcm_Cmk_V1_AuditService.ServiceProtocol {
    let base: GRPCServiceBase
    let operations: AuditOperations

    private static func milliseconds(_ time: Google_Protobuf_Timestamp) -> Int64 {
        time.seconds * 1000 + Int64(time.nanos / 1_000_000)
    }

    func listAuditRecords(request: ServerRequest<Openkcm_Cmk_V1_ListAuditRecordsRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_ListAuditRecordsResponse> {
        try await base.door.unary(request, context, .read) { input, _ in
            func text(_ value: String) -> String? { value.isEmpty ? nil : value }
            var after: UInt64?
            if !input.pageToken.isEmpty {
                guard let value = UInt64(input.pageToken) else { throw DomainError.invalidInput("page_token is the next_page_token of a previous page") }
                after = value
            }
            let query = try operations.query(
                tenant: text(input.tenant), key: text(input.key), actor: text(input.actor), operation: text(input.operation),
                outcome: text(input.outcome), from: input.hasFromTime ? Self.milliseconds(input.fromTime) : nil,
                to: input.hasToTime ? Self.milliseconds(input.toTime) : nil, limit: input.pageSize == 0 ? nil : Int(input.pageSize), after: after)
            let page = try await operations.records(query)
            return try .with {
                $0.auditRecords = try page.records.map(GRPCMessages.auditRecord)
                $0.nextPageToken = page.next.map(String.init) ?? ""
            }
        }
    }

    func getAuditRecord(request: ServerRequest<Openkcm_Cmk_V1_GetAuditRecordRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_AuditRecordProof> {
        try await base.door.unary(request, context, .read) { input, _ in
            guard let seq = UInt64(try ResourceName.id(input.name, "auditRecords", field: "name")) else {
                throw DomainError.invalidInput("an audit record's id is its position, an integer")
            }
            let found = try await operations.record(seq: seq)
            return try .with {
                $0.record = try GRPCMessages.auditRecord(found.record)
                $0.leafHash = Data(found.leaf)
                $0.treeSize = found.treeSize
                $0.inclusionProof = found.proof.map { Data($0) }
                $0.checkpoint = found.checkpoint
            }
        }
    }

    func getCheckpoint(request: ServerRequest<Openkcm_Cmk_V1_GetCheckpointRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_Checkpoint> {
        try await base.door.unary(request, context, .read) { _, _ in
            let signed = try await operations.checkpoint()
            return .with {
                $0.origin = signed.checkpoint.origin
                $0.treeSize = signed.checkpoint.size
                $0.rootHash = Data(signed.checkpoint.root)
                $0.time = Google_Protobuf_Timestamp(seconds: signed.checkpoint.time / 1000, nanos: Int32(signed.checkpoint.time % 1000) * 1_000_000)
                $0.note = signed.text
                $0.verifierKey = operations.verifierKey.description
                $0.publicKeyPem = Ed25519Keys.publicKeyPEM(operations.verifierKey.publicKey)
            }
        }
    }

    func getConsistencyProof(request: ServerRequest<Openkcm_Cmk_V1_GetConsistencyProofRequest>, context: ServerContext)
        async throws -> ServerResponse<Openkcm_Cmk_V1_ConsistencyProof> {
        try await base.door.unary(request, context, .read) { input, _ in
            let found = try await operations.consistency(from: input.fromSize, to: input.toSize)
            return .with {
                $0.fromSize = input.fromSize
                $0.toSize = input.toSize
                $0.proof = found.proof.map { Data($0) }
                $0.fromCheckpoint = found.fromCheckpoint ?? ""
                $0.toCheckpoint = found.toCheckpoint ?? ""
            }
        }
    }

    func exportAuditLog(request: ServerRequest<Openkcm_Cmk_V1_ExportAuditLogRequest>, context: ServerContext)
        async throws -> StreamingServerResponse<Openkcm_Cmk_V1_ExportAuditLogResponse> {
        try await base.door.stream(request, context) { input, _, writer in
            let (from, end) = try await operations.exportRange(from: input.fromSeq, to: input.hasToSeq ? input.toSeq : nil)
            // Smaller pages than REST's: each is one message, well under the client's 4 MiB.
            try await operations.export(from: from, end: end, pageSize: 1000) { chunk in
                try await writer.write(.with { $0.data = Data(buffer: chunk) })
            }
        }
    }
}
