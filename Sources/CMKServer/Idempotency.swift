import CMKCore
import ControlPlane
import Foundation
import Hummingbird
import NIOConcurrencyHelpers

/// A response as bytes, so that it can be replayed.
struct Reply: Sendable {
    var status: HTTPResponse.Status
    var headers: HTTPFields
    var body: ByteBuffer

    var response: Response { Response(status: status, headers: headers, body: .init(byteBuffer: body)) }
}

/// `Idempotency-Key` for POSTs: a retried request with the same key (same caller, method, path
/// and body) gets the first response again instead of acting twice; the same key with another
/// request is refused (422); a request still running under the key makes the second wait-free
/// refusal (409). Successful responses are kept for 24 hours; failures are not kept, since
/// they changed nothing and may be retried. Kept in memory: a restart forgets them (recorded in
/// Docs/Decisions.md).
final class IdempotencyCache: Sendable {
    private struct Key: Hashable {
        var subject: String
        var key: String
    }

    private struct Entry {
        var method: HTTPRequest.Method
        var path: String
        var body: ByteBuffer
        var reply: Reply?
        var storedAt: ContinuousClock.Instant
    }

    private let entries = NIOLockedValueBox<[Key: Entry]>([:])
    let lifetime: Duration
    let capacity: Int

    init(lifetime: Duration = .seconds(86_400), capacity: Int = 10_000) {
        self.lifetime = lifetime
        self.capacity = capacity
    }

    func run(_ request: Request, context: CMKRequestContext, _ body: (ByteBuffer) async throws -> Reply) async throws -> Response {
        let bytes = try await request.body.collect(upTo: context.maxUploadSize)
        guard let header = request.headers[.init("Idempotency-Key")!] else {
            return try await body(bytes).response
        }
        guard (1...255).contains(header.utf8.count) else {
            throw DomainError.invalidInput("Idempotency-Key must be 1 to 255 characters")
        }
        let key = Key(subject: context.identity?.subject ?? "", key: header)
        let path = request.uri.path
        enum Decision { case run, replay(Reply), inProgress, mismatch }
        let now = ContinuousClock.now
        let decision = entries.withLockedValue { entries -> Decision in
            if let entry = entries[key], now - entry.storedAt < lifetime {
                guard entry.method == request.method, entry.path == path, entry.body == bytes else { return .mismatch }
                return entry.reply.map(Decision.replay) ?? .inProgress
            }
            if entries.count >= capacity {
                entries = entries.filter { now - $0.value.storedAt < lifetime }
                if entries.count >= capacity, let oldest = entries.min(by: { $0.value.storedAt < $1.value.storedAt })?.key {
                    entries[oldest] = nil
                }
            }
            entries[key] = Entry(method: request.method, path: path, body: bytes, reply: nil, storedAt: now)
            return .run
        }
        switch decision {
        case .replay(let reply):
            var replayed = reply
            replayed.headers[.init("Idempotent-Replayed")!] = "true"
            return replayed.response
        case .inProgress:
            throw DomainError(.idempotencyInProgress, "a request with this Idempotency-Key is still being processed")
        case .mismatch:
            throw DomainError(.idempotencyKeyReused, "this Idempotency-Key was used with a different request")
        case .run:
            do {
                let reply = try await body(bytes)
                entries.withLockedValue { $0[key]?.reply = reply }
                return reply.response
            } catch {
                entries.withLockedValue { $0[key] = nil }
                throw error
            }
        }
    }
}
