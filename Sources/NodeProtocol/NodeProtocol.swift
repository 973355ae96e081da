import CMKCore
public import Crypto
public import Foundation

/// The wire contract between the gateway and its regional nodes, in one place so that both
/// sides (and independent verifiers) build exactly the same bytes: the signed-request message,
/// the enrolment proof, the HPKE suite and binding for unsealed keys, and the purge
/// acknowledgement statement.
public enum NodeProtocol {
    /// Request headers of a signed node call.
    public enum Header {
        public static let node = "X-OpenKCM-Node"
        public static let timestamp = "X-OpenKCM-Timestamp"
        public static let nonce = "X-OpenKCM-Nonce"
        public static let signature = "X-OpenKCM-Signature"
    }

    /// How far a signed request's timestamp may be from the gateway's clock (ms); nonces are
    /// remembered that long.
    public static let requestWindowMillis: Int64 = 60_000

    /// What a node signs for each request:
    /// `openkcm-node-request/v1\n<METHOD>\n<path and query>\n<timestamp ms>\n<nonce>\n<hex SHA-256 of the body>`.
    public static func requestMessage(method: String, path: String, timestamp: String, nonce: String, bodyHash: String) -> Data {
        Data("openkcm-node-request/v1\n\(method)\n\(path)\n\(timestamp)\n\(nonce)\n\(bodyHash)".utf8)
    }

    /// The signed-request headers for one call, made with the node's signing key.
    public static func signedHeaders(node: String, key: Curve25519.Signing.PrivateKey, method: String, path: String, body: some DataProtocol,
                                     timestamp: Int64 = Int64((Date().timeIntervalSince1970 * 1000).rounded(.down)),
                                     nonce: String = randomNonce()) throws -> [(String, String)] {
        let message = requestMessage(method: method, path: path, timestamp: String(timestamp), nonce: nonce,
                                     bodyHash: Hex.encode(SHA256.hash(data: body)))
        return [(Header.node, node), (Header.timestamp, String(timestamp)), (Header.nonce, nonce),
                (Header.signature, try key.signature(for: message).base64EncodedString())]
    }

    /// 16 random bytes, hex.
    public static func randomNonce() -> String {
        Hex.encode((0..<16).map { _ in UInt8.random(in: 0...255) })
    }

    /// What a node must sign, with its new key, to enrol: proof that it holds that key.
    public static func enrolmentProofMessage(token: String, signingKey: Data, hpkeKey: Data) -> Data {
        Data("openkcm-node-enrol/v1\n\(token)\n\(signingKey.base64EncodedString())\n\(hpkeKey.base64EncodedString())".utf8)
    }

    /// What a node signs with its new key to re-key: proof that it holds that key.
    public static func rekeyProofMessage(node: String, signingKey: Data, hpkeKey: Data) -> Data {
        Data("openkcm-node-rekey/v1\n\(node)\n\(signingKey.base64EncodedString())\n\(hpkeKey.base64EncodedString())".utf8)
    }

    /// The HPKE suite unsealed keys travel in (RFC 9180: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305).
    public static let hpkeSuite = HPKE.Ciphersuite.Curve25519_SHA256_ChachaPoly
    public static let hpkeSuiteName = "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/ChaCha20Poly1305"

    /// Binds a sealed L2 to its tenant, L2 and node: opened under another name, it fails.
    public static func unsealInfo(tenant: String, l2Ref: String, node: String) -> Data {
        Data("openkcm/unseal/v1|\(tenant)|\(l2Ref)|\(node)".utf8)
    }

    public static let ackType = "openkcm-purge-ack/v1"

    /// A purge acknowledgement: canonical JSON (RFC 8785) of
    /// `{event, keysDropped, link, node, time, type}`, the exact bytes the node signs.
    public static func ackStatement(event: String, link: String, node: String, keysDropped: Int, time: Date) throws -> [UInt8] {
        try JSONValue.object([
            "type": .string(ackType), "event": .string(event), "link": .string(link), "node": .string(node),
            "keysDropped": .integer(Int64(keysDropped)), "time": .string(RFC3339.format(time)),
        ]).canonicalBytes()
    }

    /// A parsed acknowledgement statement.
    public struct Ack: Sendable, Equatable {
        public var event: String
        public var link: String
        public var node: String
        public var keysDropped: Int
        public var time: String
    }

    /// Parses a statement; nil unless it is a canonical acknowledgement with every field.
    public static func parseAck(_ statement: String) -> Ack? {
        guard let value = try? CanonicalJSON.parse(Array(statement.utf8)), value["type"]?.stringValue == ackType,
              let event = value["event"]?.stringValue, let link = value["link"]?.stringValue,
              let node = value["node"]?.stringValue, let dropped = value["keysDropped"]?.integerValue, dropped >= 0,
              let time = value["time"]?.stringValue, RFC3339.parseMilliseconds(time) != nil else {
            return nil
        }
        return Ack(event: event, link: link, node: node, keysDropped: Int(dropped), time: time)
    }
}

/// An application's credential for a node's API: the gateway signs it (Ed25519, its app
/// credential key), the node verifies it offline. It names the tenants the application may use
/// and when it expires; revocations reach nodes as `credential.revoked` events.
///
/// Text form: `okap_` ‖ base64url(canonical JSON payload) ‖ `.` ‖ base64url(signature over the
/// payload bytes). Payload: `{exp, iat, id, name, tenants, type}` (instants in ms since 1970).
public enum AppCredential {
    public static let prefix = "okap_"
    public static let type = "openkcm-app-credential/v1"

    public struct Claims: Sendable, Equatable {
        public var id: String
        public var name: String
        public var tenants: [String]
        public var issuedAt: Int64
        public var expiresAt: Int64

        public init(id: String, name: String, tenants: [String], issuedAt: Int64, expiresAt: Int64) {
            (self.id, self.name, self.tenants, self.issuedAt, self.expiresAt) = (id, name, tenants, issuedAt, expiresAt)
        }
    }

    public static func make(_ claims: Claims, key: Curve25519.Signing.PrivateKey) throws -> String {
        let payload = try JSONValue.object([
            "exp": .integer(claims.expiresAt), "iat": .integer(claims.issuedAt), "id": .string(claims.id), "name": .string(claims.name),
            "tenants": .array(claims.tenants.sorted().map(JSONValue.string)), "type": .string(type),
        ]).canonicalBytes()
        let signature = try key.signature(for: payload)
        return prefix + base64URL(Data(payload)) + "." + base64URL(signature)
    }

    /// The claims of a credential whose signature verifies with `key`; nil otherwise (expiry
    /// and revocation are the caller's checks).
    public static func verify(_ text: String, key: Curve25519.Signing.PublicKey) -> Claims? {
        guard text.hasPrefix(prefix), text.utf8.count <= 4096 else { return nil }
        let parts = text.dropFirst(prefix.count).split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let payload = decodeBase64URL(parts[0]), let signature = decodeBase64URL(parts[1]),
              key.isValidSignature(signature, for: payload),
              let value = try? CanonicalJSON.parse(Array(payload)), value["type"]?.stringValue == type,
              let id = value["id"]?.stringValue, let name = value["name"]?.stringValue,
              case .array(let tenantValues)? = value["tenants"], let issued = value["iat"]?.integerValue,
              let expires = value["exp"]?.integerValue else {
            return nil
        }
        let tenants = tenantValues.compactMap(\.stringValue)
        guard tenants.count == tenantValues.count, !tenants.isEmpty else { return nil }
        return Claims(id: id, name: name, tenants: tenants, issuedAt: issued, expiresAt: expires)
    }

    static func base64URL(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func decodeBase64URL(_ text: Substring) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        return Data(base64Encoded: base64)
    }
}

/// What the gateway signs in its answers to nodes (with the key whose public half a node pins
/// at enrolment, `gatewayKey`), so that an on-path attacker cannot replay an old unseal (a long
/// lease), inject an event, or suppress one unseen. Each is canonical JSON with its own `type`.
public enum GatewayStatement {
    public static let unsealType = "openkcm-unseal/v1"
    public static let eventType = "openkcm-event/v1"
    public static let heartbeatType = "openkcm-stream-heartbeat/v1"

    /// An unseal answer, bound to the request's nonce and to the sealed bytes.
    public static func unseal(node: String, tenant: String, l2Ref: String, link: String, epoch: Int, leaseSeconds: Int, nonce: String,
                              encapsulatedKey: Data, ciphertext: Data) throws -> [UInt8] {
        try JSONValue.object([
            "type": .string(unsealType), "node": .string(node), "tenant": .string(tenant), "l2Ref": .string(l2Ref), "link": .string(link),
            "epoch": .integer(Int64(epoch)), "leaseSeconds": .integer(Int64(leaseSeconds)), "nonce": .string(nonce),
            "sealedSHA256": .string(Hex.encode(SHA256.hash(data: encapsulatedKey + ciphertext))),
        ]).canonicalBytes()
    }

    /// An outbox event as pushed (the same for every node: signed once).
    public static func event(sequence: Int64, id: String, type: String, tenant: String, link: String?, payload: String) throws -> [UInt8] {
        try JSONValue.object([
            "type": .string(eventType), "sequence": .integer(sequence), "id": .string(id), "event": .string(type), "tenant": .string(tenant),
            "link": link.map(JSONValue.string) ?? .null, "payload": .string(payload),
        ]).canonicalBytes()
    }

    /// A stream's heartbeat: bound to the stream request's nonce, it says the last sequence the
    /// gateway sent on this stream, so a node that did not receive it knows events were held back.
    public static func heartbeat(node: String, nonce: String, sequence: Int64, time: Int64) throws -> [UInt8] {
        try JSONValue.object([
            "type": .string(heartbeatType), "node": .string(node), "nonce": .string(nonce), "sequence": .integer(sequence),
            "time": .integer(time),
        ]).canonicalBytes()
    }
}
