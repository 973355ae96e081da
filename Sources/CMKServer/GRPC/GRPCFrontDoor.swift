import Audit
import AuditFormat
import CMKCore
import ControlPlane
import Crypto
import Foundation
import GRPCCore
import GRPCProtobuf
import Logging
import Metrics
import SwiftProtobuf

/// The frame every gRPC Management API method runs in, so that no method can skip a step:
/// a request id; the caller's credential from metadata, checked and authorized by `AdminGate`
/// against the access policy's rule for the method (`AccessPolicy.grpcMethods`); the work,
/// under the call's deadline and cancellation; and every failure translated once
/// (`GRPCStatus`).
///
/// Deadlines and cancellation (D100): a call whose deadline has passed, or that the client
/// cancelled, is not started. Reads and streams stop when the call is cancelled or its
/// deadline passes. A change that has begun is carried to its end — its registry
/// transaction, its outbox event and its audit record are one unit that a cancellation must
/// not cut in two — and the late answer is dropped; the client learns the outcome by reading
/// the resource again, or by resending with the same `request_id`.
struct GRPCFrontDoor: Sendable {
    let gate: AdminGate
    let logger: Logger

    enum Effect: Sendable {
        /// Only reads: stopped at cancellation or the deadline.
        case read
        /// Changes something: finished once begun.
        case change
    }

    /// Who is calling, once admitted.
    struct Caller: Sendable {
        let principal: Principal
        let requestID: String
        let clientAddress: String?

        var audit: AuditContext {
            AuditContext(actor: principal.auditActor, requestID: requestID, clientAddress: clientAddress)
        }
    }

    /// A unary method: admitted, performed, its message answered with `x-request-id`.
    func unary<In: SwiftProtobuf.Message, Out: Sendable>(
        _ request: ServerRequest<In>, _ context: ServerContext, _ effect: Effect,
        tenant: (In) throws -> String? = { _ in nil },
        _ body: @escaping @Sendable (In, Caller) async throws -> Out
    ) async throws -> ServerResponse<Out> {
        let requestID = Self.newRequestID()
        let started = ContinuousClock.now
        do {
            let caller = try await admit(request.message, request.metadata, context, requestID: requestID, tenant: { try tenant(request.message) })
            let message = request.message
            let answer = try await perform(effect, context, request.metadata, started: started) { try await body(message, caller) }
            // Open dashboards show the change at once, as after a REST change.
            if effect == .change { gate.gateway.dashboard.changed() }
            Self.count(context.descriptor.fullyQualifiedMethod, nil, started: started)
            return ServerResponse(message: answer, metadata: Self.answerMetadata(requestID))
        } catch {
            let translated = translate(error, requestID: requestID, method: context.descriptor.fullyQualifiedMethod)
            Self.count(context.descriptor.fullyQualifiedMethod, translated, started: started)
            throw translated
        }
    }

    /// A server-streaming method: admitted before the first message (a refusal is a status
    /// with no messages), then `body` writes until it returns, the client cancels, or the
    /// deadline passes.
    func stream<In: SwiftProtobuf.Message, Out: Sendable>(
        _ request: ServerRequest<In>, _ context: ServerContext,
        tenant: (In) throws -> String? = { _ in nil },
        _ body: @escaping @Sendable (In, Caller, RPCWriter<Out>) async throws -> Void
    ) async throws -> StreamingServerResponse<Out> {
        let requestID = Self.newRequestID()
        let started = ContinuousClock.now
        let method = context.descriptor.fullyQualifiedMethod
        let caller: Caller
        do {
            caller = try await admit(request.message, request.metadata, context, requestID: requestID, tenant: { try tenant(request.message) })
        } catch {
            let translated = translate(error, requestID: requestID, method: method)
            Self.count(method, translated, started: started)
            throw translated
        }
        let (message, metadata) = (request.message, request.metadata)
        return StreamingServerResponse(metadata: Self.answerMetadata(requestID)) { writer in
            do {
                try await perform(.read, context, metadata, started: started) { try await body(message, caller, writer) }
            } catch {
                let translated = translate(error, requestID: requestID, method: method)
                Self.count(method, translated, started: started)
                throw translated
            }
            Self.count(method, nil, started: started)
            return [:]
        }
    }

    // MARK: Steps

    /// Requests are small messages, as REST bodies are (64 KiB); the transport reads up to
    /// `GRPCManagementServer.transportLimit` so that a larger one gets this clear refusal
    /// rather than a reset stream.
    static let maxRequestBytes = 64 * 1024

    private func admit<In: SwiftProtobuf.Message>(_ message: In, _ metadata: Metadata, _ context: ServerContext, requestID: String,
                                                 tenant: () throws -> String?) async throws -> Caller {
        guard (try message.serializedBytes() as [UInt8]).count <= Self.maxRequestBytes else {
            throw DomainError(.bodyTooLarge, "the request is larger than the server accepts (64 KiB)")
        }
        let method = context.descriptor.fullyQualifiedMethod
        guard let route = AccessPolicy.grpcMethod(method) else {
            throw DomainError(.forbidden, "\(method) is not open to administrators")
        }
        // A malformed name is reported after the caller is known: a stranger learns nothing
        // from the shape of an error.
        let named = Result { try tenant() }
        let clientAddress = Self.address(of: context.remotePeer)
        let call = AdminGate.Call(method: route.method, path: route.path, tenant: try? named.get(), recordedAs: "gRPC \(method)",
                                  requestID: requestID, clientAddress: clientAddress)
        let principal = try await gate.admit(Self.credential(metadata), call)
        _ = try named.get()
        return Caller(principal: principal, requestID: requestID, clientAddress: clientAddress)
    }

    private func perform<T: Sendable>(_ effect: Effect, _ context: ServerContext, _ metadata: Metadata, started: ContinuousClock.Instant,
                                      _ work: @escaping @Sendable () async throws -> T) async throws -> T {
        if context.cancellation.isCancelled { throw Self.ended(metadata, started: started) }
        switch effect {
        case .change:
            return try await work()
        case .read:
            let task = Task { try await work() }
            return try await withRPCCancellationHandler {
                do {
                    return try await task.value
                } catch is CancellationError where context.cancellation.isCancelled {
                    throw Self.ended(metadata, started: started)
                }
            } onCancelRPC: {
                task.cancel()
            }
        }
    }

    private func translate(_ error: any Error, requestID: String, method: String) -> any Error {
        if let error = error as? RPCError { return error }
        if let error = error as? GoogleRPCStatus { return error }
        if let domain = DomainError.from(error) { return GRPCStatus.status(domain, requestID: requestID) }
        logger.error("unexpected error", metadata: ["error.type": "\(String(reflecting: type(of: error)))", "request.id": "\(requestID)",
                                                    "grpc.method": "\(method)"])
        return GRPCStatus.status(GRPCStatus.unexpected, requestID: requestID)
    }

    /// `cmk_grpc_requests_total{method, code}` and `cmk_grpc_request_duration_seconds{method}`
    /// (a stream's duration is the whole stream's).
    static func count(_ method: String, _ error: (any Error)?, started: ContinuousClock.Instant) {
        let code: String
        switch error {
        case nil: code = "ok"
        case let error as GoogleRPCStatus: code = "\(error.code)"
        case let error as RPCError: code = "\(error.code)"
        default: code = "internal"
        }
        Counter(label: "cmk_grpc_requests_total", dimensions: [("method", method), ("code", code)]).increment()
        Timer(label: "cmk_grpc_request_duration_seconds", dimensions: [("method", method)])
            .recordNanoseconds((ContinuousClock.now - started).nanoseconds)
    }

    // MARK: Metadata

    /// The same credentials as REST, in metadata of the same names: `authorization: Bearer …`,
    /// or the session cookie (`cookie: cmk_session=…`) with `x-csrf-token` for changes.
    static func credential(_ metadata: Metadata) -> AdminGate.Credential? {
        if let header = metadata[stringValues: "authorization"].first(where: { _ in true }) {
            guard header.count > 7, header.prefix(7).lowercased() == "bearer " else { return .malformed }
            return .bearer(String(header.dropFirst(7)))
        }
        for header in metadata[stringValues: "cookie"] {
            for part in header.split(separator: ";") {
                let pair = part.trimmingCharacters(in: .whitespaces)
                let prefix = SessionManager.cookieName + "="
                if pair.hasPrefix(prefix) {
                    return .session(token: String(pair.dropFirst(prefix.count)),
                                    csrf: metadata[stringValues: SessionManager.csrfHeader.lowercased()].first(where: { _ in true }))
                }
            }
        }
        return nil
    }

    /// `ipv4:127.0.0.1:5000` or `ipv6:[::1]:5000` → the address alone, as REST records it.
    static func address(of peer: String) -> String? {
        if peer.hasPrefix("ipv4:") {
            let rest = peer.dropFirst(5)
            return rest.lastIndex(of: ":").map { String(rest[..<$0]) } ?? String(rest)
        }
        if peer.hasPrefix("ipv6:") {
            let rest = peer.dropFirst(5)
            if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") { return String(rest[rest.index(after: rest.startIndex)..<close]) }
            return String(rest)
        }
        return nil
    }

    /// The caller's deadline as `grpc-timeout` gives it (digits and a unit, H M S m u n).
    static func timeout(_ metadata: Metadata) -> Duration? {
        guard let text = metadata[stringValues: "grpc-timeout"].first(where: { _ in true }), text.count >= 2, text.count <= 9,
              let amount = Int64(text.dropLast()), amount >= 0 else { return nil }
        switch text.last {
        case "H": return .seconds(amount * 3600)
        case "M": return .seconds(amount * 60)
        case "S": return .seconds(amount)
        case "m": return .milliseconds(amount)
        case "u": return .microseconds(amount)
        case "n": return .nanoseconds(amount)
        default: return nil
        }
    }

    static func ended(_ metadata: Metadata, started: ContinuousClock.Instant) -> RPCError {
        if let timeout = timeout(metadata), ContinuousClock.now - started >= timeout {
            return RPCError(code: .deadlineExceeded, message: "the call's deadline passed")
        }
        return RPCError(code: .cancelled, message: "the call was cancelled")
    }

    /// Every answer names its request id, as REST's `X-Request-Id` does.
    static func answerMetadata(_ requestID: String) -> Metadata {
        var metadata = Metadata()
        metadata.addString(requestID, forKey: "x-request-id")
        return metadata
    }

    /// 32 hex digits, as Hummingbird's request ids.
    static func newRequestID() -> String {
        var generator = SystemRandomNumberGenerator()
        return Hex.encode((0..<16).map { _ in UInt8.random(in: .min ... .max, using: &generator) })
    }
}
