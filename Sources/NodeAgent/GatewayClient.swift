public import AsyncHTTPClient
public import CMKCore
public import Crypto
public import Foundation
public import NIOConcurrencyHelpers
public import NIOCore
import NIOFoundationEssentialsCompat
import NIOHTTP1
import NodeProtocol
public import TLSSupport

/// The node's side of the gateway's `/node/v1` API: every call signed with the node's identity
/// (see `NodeProtocol.requestMessage`), bounded by a timeout, and answered with typed values
/// or a `Failure` that keeps the gateway's error code.
public final class GatewayClient: Sendable {
    public struct Failure: Error, Sendable, CustomStringConvertible, Equatable {
        /// The gateway's HTTP status; nil when it could not be reached.
        public var status: Int?
        /// The gateway's error code (`key_revoked`, `not_found`, …) or `unreachable`.
        public var code: String
        public var message: String

        public var description: String { status.map { "\(code) (HTTP \($0)): \(message)" } ?? "\(code): \(message)" }
        /// The code as one of the gateway's (nil for `unreachable`, or a code newer than this node).
        public var gatewayCode: ErrorCode? { ErrorCode(rawValue: code) }
        public static func unreachable(_ message: String) -> Failure { Failure(status: nil, code: "unreachable", message: message) }
    }

    public struct Unsealed: Sendable {
        public var l2Ref: String
        public var link: String
        /// The link's epoch (1 before any restore).
        public var epoch: Int
        public var key: SecretBytes
        public var leaseSeconds: Int
    }

    public let base: String
    public let nodeID: String
    /// The gateway's public key, pinned at enrolment (or at the first connection of a node
    /// enrolled before keys were pinned): every unseal answer and event must verify with it.
    public let gatewayKey = NIOLockedValueBox<Curve25519.Signing.PublicKey?>(nil)
    let signingKey: Curve25519.Signing.PrivateKey
    private let hpkeKey: Curve25519.KeyAgreement.PrivateKey
    let http: HTTPClient
    /// For an HTTPS gateway: its CA and this node's client certificate (nil: system roots, none).
    let tls: ClientTLS?
    public let timeout: TimeAmount

    public init(base: String, nodeID: String, signingKey: Curve25519.Signing.PrivateKey, hpkeKey: Curve25519.KeyAgreement.PrivateKey,
                http: HTTPClient, tls: ClientTLS? = nil, timeout: TimeAmount = .seconds(10)) {
        self.tls = tls
        self.base = base.hasSuffix("/") ? String(base.dropLast()) : base
        self.nodeID = nodeID
        self.signingKey = signingKey
        self.hpkeKey = hpkeKey
        self.http = http
        self.timeout = timeout
    }

    // MARK: Enrolment (unsigned: the one-time token and a proof of possession stand in)

    public struct Enrolment: Codable, Sendable {
        public var id: String
        public var region: String
        public var enrolledAt: Date
        public var eventSequence: Int64?
        /// The gateway's public signing key (base64), to pin.
        public var gatewayKey: String?
    }

    public static func enrol(base: String, token: String, signingKey: Curve25519.Signing.PrivateKey,
                             hpkeKey: Curve25519.KeyAgreement.PublicKey, http: HTTPClient, tls: ClientTLS? = nil) async throws -> Enrolment {
        let signing = signingKey.publicKey.rawRepresentation, hpke = hpkeKey.rawRepresentation
        let proof = try signingKey.signature(for: NodeProtocol.enrolmentProofMessage(token: token, signingKey: signing, hpkeKey: hpke))
        let body = try JSONEncoder().encode([
            "token": token, "signingKey": signing.base64EncodedString(), "hpkeKey": hpke.base64EncodedString(),
            "proof": proof.base64EncodedString(),
        ])
        let base = base.hasSuffix("/") ? String(base.dropLast()) : base
        let (status, data) = try await send(http: http, tls: tls, url: base + "/node/v1/enrol", method: .POST, body: body, headers: [],
                                            timeout: .seconds(10))
        guard status == 201 else { throw failure(status: status, data) }
        return try decode(Enrolment.self, data)
    }

    // MARK: Signed calls

    /// Asks for the tenant's L2, sealed to this node, and opens it.
    public func unseal(tenant: String) async throws -> Unsealed {
        struct Response: Decodable {
            var l2Ref: String
            var link: String
            var encapsulatedKey: String
            var ciphertext: String
            var leaseSeconds: Int
            var epoch: Int?
            var signature: String?
        }
        let nonce = NodeProtocol.randomNonce()
        let (status, data) = try await call(.POST, "/node/v1/unseal", body: try JSONEncoder().encode(["tenant": tenant]), nonce: nonce)
        guard status == 200 else { throw Self.failure(status: status, data) }
        let response = try Self.decode(Response.self, data)
        guard let encapsulated = Data(base64Encoded: response.encapsulatedKey), let ciphertext = Data(base64Encoded: response.ciphertext) else {
            throw Failure(status: status, code: "invalid_response", message: "the unseal response is not base64")
        }
        // Bound to this request's nonce and signed by the pinned gateway key: an old answer (with
        // its lease) replayed, or an answer from anyone else, is refused.
        guard let key = gatewayKey.withLockedValue({ $0 }), let signature = response.signature.flatMap({ Data(base64Encoded: $0) }),
              let statement = try? GatewayStatement.unseal(node: nodeID, tenant: tenant, l2Ref: response.l2Ref, link: response.link,
                                                           epoch: response.epoch ?? 1, leaseSeconds: response.leaseSeconds, nonce: nonce,
                                                           encapsulatedKey: encapsulated, ciphertext: ciphertext),
              key.isValidSignature(signature, for: statement) else {
            throw Failure(status: status, code: "invalid_response", message: "the unseal answer is not signed by the gateway for this request")
        }
        do {
            var recipient = try HPKE.Recipient(privateKey: hpkeKey, ciphersuite: NodeProtocol.hpkeSuite,
                                               info: NodeProtocol.unsealInfo(tenant: tenant, l2Ref: response.l2Ref, node: nodeID),
                                               encapsulatedKey: encapsulated)
            var opened = try recipient.open(ciphertext)
            defer { opened.resetBytes(in: 0..<opened.count) }
            let key = opened.withUnsafeBytes { SecretBytes(copying: $0) }
            return Unsealed(l2Ref: response.l2Ref, link: response.link, epoch: response.epoch ?? 1, key: key, leaseSeconds: response.leaseSeconds)
        } catch {
            throw Failure(status: status, code: "invalid_response", message: "the sealed key does not open for this node")
        }
    }

    public func heartbeat(keysHeld: Int, leaseDrops: [String]) async throws {
        struct Body: Encodable { var keysHeld: Int; var leaseDrops: [String] }
        let (status, data) = try await call(.POST, "/node/v1/heartbeat", body: try JSONEncoder().encode(Body(keysHeld: keysHeld, leaseDrops: leaseDrops)))
        guard status == 204 else { throw Self.failure(status: status, data) }
    }

    /// Sends a signed purge acknowledgement. True when the gateway stored it now or had it
    /// already (a retry after a lost answer).
    public func acknowledge(statement: String, signature: Data) async throws {
        let body = try JSONEncoder().encode(["statement": statement, "signature": signature.base64EncodedString()])
        // Self-authenticating: the statement is signed with this node's key and names it.
        let (status, data) = try await Self.send(http: http, tls: tls, url: base + "/node/v1/acks", method: .POST, body: body, headers: [],
                                                 timeout: timeout)
        guard status == 201 else {
            let failure = Self.failure(status: status, data)
            if failure.gatewayCode == .alreadyAcknowledged { return }
            throw failure
        }
    }

    /// The gateway's app credential key and the revoked credentials not yet expired (id → expiry
    /// in ms): what the node needs to check applications offline.
    public func appCredentialState() async throws -> (key: Curve25519.Signing.PublicKey, revoked: [String: Int64]) {
        struct Response: Decodable {
            struct Revoked: Decodable { var id: String; var expiresAt: Int64 }
            var key: String
            var revoked: [Revoked]
        }
        let (status, data) = try await call(.GET, "/node/v1/app-credentials", body: Data())
        guard status == 200 else { throw Self.failure(status: status, data) }
        let response = try Self.decode(Response.self, data)
        guard let raw = Data(base64Encoded: response.key), let key = try? Curve25519.Signing.PublicKey(rawRepresentation: raw) else {
            throw Failure(status: status, code: "invalid_response", message: "the app credential key is not an Ed25519 public key")
        }
        return (key, Dictionary(response.revoked.map { ($0.id, $0.expiresAt) }, uniquingKeysWith: max))
    }

    /// Replaces this node's keys at the gateway: signed with the current key, proven with the new one.
    public func rekey(to signing: Curve25519.Signing.PrivateKey, hpke: Curve25519.KeyAgreement.PrivateKey) async throws {
        let signingKey = signing.publicKey.rawRepresentation, hpkeKey = hpke.publicKey.rawRepresentation
        let proof = try signing.signature(for: NodeProtocol.rekeyProofMessage(node: nodeID, signingKey: signingKey, hpkeKey: hpkeKey))
        let body = try JSONEncoder().encode(["signingKey": signingKey.base64EncodedString(), "hpkeKey": hpkeKey.base64EncodedString(),
                                             "proof": proof.base64EncodedString()])
        let (status, data) = try await call(.POST, "/node/v1/rekey", body: body)
        guard status == 200 else { throw Self.failure(status: status, data) }
    }

    // MARK: Transport

    private func call(_ method: HTTPMethod, _ path: String, body: Data, nonce: String = NodeProtocol.randomNonce()) async throws -> (Int, Data) {
        let headers = try NodeProtocol.signedHeaders(node: nodeID, key: signingKey, method: method.rawValue, path: path, body: body, nonce: nonce)
        return try await Self.send(http: http, tls: tls, url: base + path, method: method, body: body, headers: headers, timeout: timeout)
    }

    private static func send(http: HTTPClient, tls: ClientTLS?, url: String, method: HTTPMethod, body: Data, headers: [(String, String)],
                             timeout: TimeAmount) async throws -> (Int, Data) {
        var request = HTTPClientRequest(url: url)
        request.tlsConfiguration = tls?.configuration
        request.method = method
        request.headers.add(name: "Content-Type", value: "application/json")
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if !body.isEmpty { request.body = .bytes(ByteBuffer(data: body)) }
        do {
            let response = try await http.execute(request, timeout: timeout)
            let data = try await response.body.collect(upTo: 1024 * 1024)
            return (Int(response.status.code), Data(buffer: data))
        } catch let error as HTTPClientError {
            throw Failure.unreachable("\(error)")
        } catch let error as Failure {
            throw error
        } catch {
            throw Failure.unreachable("\(error)")
        }
    }

    static func failure(status: Int, _ data: Data) -> Failure {
        struct Shape: Decodable {
            struct Inner: Decodable { var code: String; var message: String }
            var error: Inner
        }
        if JSONNesting.isAcceptable(data), let shape = try? JSONDecoder().decode(Shape.self, from: data) {
            return Failure(status: status, code: shape.error.code, message: shape.error.message)
        }
        return Failure(status: status, code: "http_\(status)", message: "the gateway answered HTTP \(status)")
    }

    static func decode<T: Decodable>(_ type: T.Type, _ data: Data) throws -> T {
        guard JSONNesting.isAcceptable(data) else {
            throw Failure(status: nil, code: "invalid_response", message: "the gateway's answer nests deeper than \(JSONNesting.maxDepth) levels")
        }
        do {
            return try JSONDecoder.node.decode(type, from: data)
        } catch {
            throw Failure(status: nil, code: "invalid_response", message: "the gateway's answer is not a \(T.self): \(error)")
        }
    }
}
