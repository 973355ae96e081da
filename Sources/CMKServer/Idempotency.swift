import CMKCore
import ControlPlane
import Crypto
import Foundation
import Hummingbird
import Logging
import NIOFoundationEssentialsCompat
import Registry

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
/// they changed nothing and may be retried. Kept in the registry (D99), so that a retry that
/// lands on another replica, or after a restart, is still recognised; a request whose replica
/// died while it ran frees its key after `stale`. The routes that take a key answer no secrets,
/// so stored responses hold none.
final class IdempotencyCache: Sendable {
    let registry: Registry
    let lifetime: TimeInterval
    let stale: TimeInterval

    init(registry: Registry, lifetime: TimeInterval = 86_400, stale: TimeInterval = 600) {
        self.registry = registry
        self.lifetime = lifetime
        self.stale = stale
    }

    /// An answer as it is kept: a status, headers as JSON pairs, the body.
    struct StoredAnswer: Sendable {
        var status: Int
        var headers: String
        var body: Data
    }

    /// Runs `work` once for `key` of `subject`: a retry of the same request (same method, path
    /// and body digest) replays the stored answer; the same key with another request, or while
    /// the first still runs, is refused. Whichever transport carries the request.
    func once(subject: String, key: String, method: String, path: String, digest: Data, logger: Logger,
              _ work: () async throws -> StoredAnswer) async throws -> (answer: StoredAnswer, replayed: Bool) {
        guard (1...255).contains(key.utf8.count) else {
            throw DomainError.invalidInput("an idempotency key must be 1 to 255 characters")
        }
        let claim = try await registry.claimIdempotency(subject: subject, key: key, method: method, path: path, bodySHA256: digest,
                                                        at: Date(), lifetime: lifetime, stale: stale)
        switch claim {
        case .replay(let status, let headers, let stored):
            return (StoredAnswer(status: status, headers: headers, body: Data(stored)), true)
        case .inProgress:
            throw DomainError(.idempotencyInProgress, "a request with this idempotency key is still being processed")
        case .mismatch:
            throw DomainError(.idempotencyKeyReused, "this idempotency key was used with a different request")
        case .run:
            let answer: StoredAnswer
            do {
                answer = try await work()
            } catch {
                try? await registry.releaseIdempotency(subject: subject, key: key)
                throw error
            }
            // The change is made; if its record cannot be kept, a retry would act again: say so
            // in the log, and answer the change.
            do {
                try await registry.completeIdempotency(subject: subject, key: key, status: answer.status, headers: answer.headers, body: answer.body)
            } catch {
                logger.warning("an idempotent response could not be stored", metadata: ["error.type": "\(type(of: error))"])
            }
            return (answer, false)
        }
    }

    func run(_ request: Request, context: CMKRequestContext, _ body: (ByteBuffer) async throws -> Reply) async throws -> Response {
        let bytes = try await request.body.collect(upTo: context.maxUploadSize)
        guard let header = request.headers[.init("Idempotency-Key")!] else {
            return try await body(bytes).response
        }
        guard (1...255).contains(header.utf8.count) else {
            throw DomainError.invalidInput("Idempotency-Key must be 1 to 255 characters")
        }
        let (answer, replayed) = try await once(subject: context.identity?.subject ?? "", key: header, method: request.method.rawValue,
                                                path: request.uri.path, digest: Data(SHA256.hash(data: Data(buffer: bytes))),
                                                logger: context.logger) {
            let reply = try await body(bytes)
            let headers = reply.headers.map { [$0.name.rawName, $0.value] }
            let encoded = (try? JSONEncoder().encode(headers)).map { String(decoding: $0, as: UTF8.self) } ?? "[]"
            return StoredAnswer(status: Int(reply.status.code), headers: encoded, body: Data(buffer: reply.body))
        }
        var fields = HTTPFields()
        for pair in (try? JSONDecoder().decode([[String]].self, from: Data(answer.headers.utf8))) ?? [] where pair.count == 2 {
            if let name = HTTPFields.Element.Name(pair[0]) { fields.append(.init(name: name, value: pair[1])) }
        }
        if replayed { fields[.init("Idempotent-Replayed")!] = "true" }
        return Reply(status: .init(code: answer.status), headers: fields, body: ByteBuffer(bytes: answer.body)).response
    }
}
