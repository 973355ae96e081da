import Audit
import AuditFormat
import CMKCore
import ControlPlane
import Crypto
import Foundation
import Hummingbird
import Metrics
import NIOConcurrencyHelpers
import NIOFoundationEssentialsCompat
import NodeProtocol
import Orbital
import Registry
import TLSSupport

/// Authenticates regional nodes by their identity: every request carries the node id, a
/// timestamp, a nonce and an Ed25519 signature over
///
///     openkcm-node-request/v1\n<METHOD>\n<path and query>\n<timestamp ms>\n<nonce>\n<hex SHA-256 of the body>
///
/// made with the node's enrolled signing key. A timestamp more than 60 s from the gateway's
/// clock, or a (node, nonce) pair seen in that window, is refused: a captured request cannot
/// be replayed. A node identity reaches only `/node/v1`; the administrators' credential does
/// not work there, and a node's signature does not work on `/api/v1`.
struct NodeAuthenticationMiddleware: RouterMiddleware {
    typealias Context = CMKRequestContext
    let gateway: Gateway
    let nonces: NonceCache
    static let window = NodeProtocol.requestWindowMillis
    static let maxBody = 64 * 1024

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let refused = DomainError(.unauthenticated, "a valid node signature is required")
        guard let nodeID = request.headers[.init(NodeProtocol.Header.node)!], let timestamp = request.headers[.init(NodeProtocol.Header.timestamp)!],
              let nonce = request.headers[.init(NodeProtocol.Header.nonce)!], let signatureText = request.headers[.init(NodeProtocol.Header.signature)!],
              let signature = Data(base64Encoded: signatureText), let millis = Int64(timestamp),
              (16...128).contains(nonce.utf8.count), nodeID.utf8.count <= 64 else {
            throw refused
        }
        let now = Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
        guard abs(now - millis) <= Self.window else { throw refused }
        guard let node = try? await gateway.seenNode(nodeID),
              let key = try? Curve25519.Signing.PublicKey(rawRepresentation: node.signingKey) else {
            throw refused
        }
        var request = request
        let body = try await request.collectBody(upTo: Self.maxBody)
        let bodyHash = Hex.encode(SHA256.hash(data: Data(buffer: body)))
        let message = NodeProtocol.requestMessage(method: request.method.rawValue, path: request.uri.description, timestamp: timestamp,
                                   nonce: nonce, bodyHash: bodyHash)
        guard key.isValidSignature(signature, for: message) else { throw refused }
        // Said only to the node itself (its signature verified): it drops its keys.
        if node.removedAt != nil {
            throw DomainError(.nodeRemoved, "node \(node.id) was removed by a platform operator: drop every key; enrol again to serve")
        }
        if node.disabledAt != nil {
            throw DomainError(.nodeDisabled, "node \(node.id) is disabled by a platform operator: drop every key until it is enabled")
        }
        // Only after the signature verifies, so that nobody can burn another node's nonces.
        guard try await nonces.claim(node: node.id, nonce: nonce, expires: millis + Self.window) else { throw refused }
        var context = context
        context.identity = Identity(subject: node.id, method: "node-signature")
        context.node = node
        return try await next(request, context)
    }
}

/// Nonces seen within the replay window, per node: in this process's memory (a replay here is
/// refused without a database round trip), and in the registry (batched, one transaction for
/// every claim that arrives together), which is what holds across a restart and across the
/// replicas sharing a PostgreSQL database. A request is let through only once its nonce is
/// durable; if the registry cannot record it, the request is refused (`storage_unavailable`),
/// never let through unrecorded.
final class NonceCache: Sendable {
    private struct State {
        var seen: [String: Int64] = [:]
        var order: [(key: String, expires: Int64)] = []
        var head = 0
    }

    private struct Claim: Sendable {
        var node: String
        var nonce: String
        var expires: Int64
    }

    private let state = NIOLockedValueBox(State())
    private let stored: BatchWriter<Claim, Bool>?

    /// Without a registry: memory only (tests of the window logic).
    init(registry: Registry? = nil) {
        stored = registry.map { registry in
            BatchWriter { claims in
                try await registry.claimNonces(claims.map { ($0.node, $0.nonce, $0.expires) },
                                               now: Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)))
            }
        }
    }

    /// False if the (node, nonce) pair was seen before and has not expired, here or (with a
    /// registry) by any process sharing it.
    func claim(node: String, nonce: String, expires: Int64) async throws -> Bool {
        guard insert(node: node, nonce: nonce, expires: expires) else { return false }
        guard let stored else { return true }
        return try await stored.submit(Claim(node: node, nonce: nonce, expires: expires))
    }

    /// False if the (node, nonce) pair was seen before by this process and has not expired.
    func insert(node: String, nonce: String, expires: Int64) -> Bool {
        let now = Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
        return state.withLockedValue { state in
            while state.head < state.order.count, state.order[state.head].expires <= now {
                let entry = state.order[state.head]
                if state.seen[entry.key] == entry.expires { state.seen[entry.key] = nil }
                state.head += 1
            }
            if state.head > 4096, state.head * 2 > state.order.count {
                state.order.removeFirst(state.head)
                state.head = 0
            }
            let key = node + "\u{0}" + nonce
            if let expiry = state.seen[key], expiry > now { return false }
            state.seen[key] = expires
            state.order.append((key, expires))
            return true
        }
    }

    var count: Int { state.withLockedValue { $0.seen.count } }
}

/// With `tls.nodeClientCA` set, every `/node/v1` call (enrolment and acknowledgements
/// included) must come on a connection whose client certificate that CA issued. The TLS layer
/// has already verified any certificate presented; this refuses connections that presented none
/// (the listener cannot require one of everyone: browsers use it too).
struct NodeClientCertificateMiddleware: RouterMiddleware {
    typealias Context = CMKRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard await ServerTLS.peerCertificate(of: context.channel) != nil else {
            Counter(label: "cmk_node_client_certificate_refusals_total").increment()
            throw DomainError(.clientCertificateRequired,
                           "this gateway requires nodes to present a client certificate from the nodes' CA (tls.nodeClientCA)")
        }
        return try await next(request, context)
    }
}

/// HTTPS only, once a browser has seen it (the session cookie is `Secure` already).
struct StrictTransportSecurityMiddleware: RouterMiddleware {
    typealias Context = CMKRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response = try await next(request, context)
        response.headers[.strictTransportSecurity] = "max-age=31536000"
        return response
    }
}
