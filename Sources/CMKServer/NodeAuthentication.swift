import Audit
import Crypto
import Foundation
import Hummingbird
import NIOConcurrencyHelpers
import NodeProtocol
import Registry

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
        let refused = APIError(.unauthorized, code: "unauthenticated", "a valid node signature is required")
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
        // Only after the signature verifies, so that nobody can burn another node's nonces.
        guard nonces.insert(node: node.id, nonce: nonce, expires: millis + Self.window) else { throw refused }
        var context = context
        context.identity = Identity(subject: node.id, method: "node-signature")
        context.node = node
        return try await next(request, context)
    }
}

/// Nonces seen within the replay window, per node.
final class NonceCache: Sendable {
    private let state = NIOLockedValueBox<[String: Int64]>([:])

    /// False if the (node, nonce) pair was seen before; prunes expired entries as it goes.
    func insert(node: String, nonce: String, expires: Int64) -> Bool {
        let now = Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
        return state.withLockedValue { seen in
            if seen.count > 10_000 { seen = seen.filter { $0.value > now } }
            let key = node + "\u{0}" + nonce
            if let expiry = seen[key], expiry > now { return false }
            seen[key] = expires
            return true
        }
    }
}
