import CMKCore
import Foundation
public import Hummingbird
import Logging
import NIOCore
import NIOFoundationEssentialsCompat
import Prometheus
public import TLSSupport

/// The node's application API, for the programs next to it (bind it to loopback, or protect
/// it at the network layer — see Docs/Architecture.md §13):
///
/// - `POST /v1/tenants/{tenant}/encrypt` `{"plaintext": base64}` → `{"ciphertext": base64}`
/// - `POST /v1/tenants/{tenant}/decrypt` `{"ciphertext": base64}` → `{"plaintext": base64}`
/// - `GET /v1/status`: the node, its connection, its leases (counts and ages, never keys)
/// - `GET /healthz`
///
/// Errors are `{"error": {"code", "message"}}`: `key_revoked` (409) after a kill-switch,
/// `key_shred_scheduled` (409) while its destruction is scheduled, `key_shredded` (410) after,
/// `region_not_allowed` (403) when the tenant does not allow this node's region,
/// `key_unavailable` (503) when no key is held and the gateway cannot be reached,
/// `unknown_tenant` (404), `invalid_ciphertext` (422), `bad_request` (400).
public struct NodeAPI: Sendable {
    let runtime: NodeRuntime
    /// The API's own certificate, when it serves HTTPS.
    let listenerTLS: CertificateFiles?
    static let maxBody = 1024 * 1024

    public init(runtime: NodeRuntime, listenerTLS: CertificateFiles? = nil) {
        self.runtime = runtime
        self.listenerTLS = listenerTLS
    }

    struct Failure: HTTPResponseError {
        var status: HTTPResponse.Status
        var code: String
        var message: String

        func response(from request: Request, context: some RequestContext) throws -> Response {
            let data = try JSONSerialization.data(withJSONObject: ["error": ["code": code, "message": message]], options: [.sortedKeys])
            return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(data: data)))
        }

        init(_ status: HTTPResponse.Status, _ code: String, _ message: String) {
            (self.status, self.code, self.message) = (status, code, message)
        }

        init(_ failure: NodeKeyring.Failure) {
            switch failure {
            case .keyRevoked, .keyShredScheduled: self.init(.conflict, failure.code, failure.description)
            case .keyShredded: self.init(.gone, failure.code, failure.description)
            case .regionNotAllowed: self.init(.forbidden, failure.code, failure.description)
            case .keyUnavailable: self.init(.serviceUnavailable, failure.code, failure.description)
            case .invalidCiphertext: self.init(.unprocessableContent, failure.code, failure.description)
            case .unknownTenant: self.init(.notFound, failure.code, failure.description)
            }
        }
    }

    public func router() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.get("healthz") { _, _ in Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "ok\n"))) }
        router.get("v1/status") { _, _ in try json(status()) }
        router.get("metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                     body: .init(byteBuffer: ByteBuffer(bytes: runtime.applications.metrics.emitToBuffer())))
        }
        router.post("v1/tenants/:tenant/encrypt") { request, context in
            try await crypt(request, context, input: "plaintext", output: "ciphertext") { ring, tenant, bytes in
                try ring.encrypt(tenant: tenant, bytes)
            }
        }
        router.post("v1/tenants/:tenant/decrypt") { request, context in
            try await crypt(request, context, input: "ciphertext", output: "plaintext") { ring, tenant, bytes in
                try ring.decrypt(tenant: tenant, bytes)
            }
        }
        return router
    }

    private func crypt(_ request: Request, _ context: BasicRequestContext, input: String, output: String,
                       _ operation: @escaping @Sendable (NodeKeyring, String, [UInt8]) throws -> [UInt8]) async throws -> Response {
        let tenant = try context.parameters.require("tenant")
        guard (1...63).contains(tenant.utf8.count) else { throw Failure(.badRequest, "bad_request", "the tenant id is 1-63 characters") }
        switch runtime.applications.check(request.headers[.authorization], tenant: tenant) {
        case .success: break
        case .failure(.tenantNotAllowed):
            throw Failure(.forbidden, "tenant_not_allowed", "the credential does not name tenant \(tenant)")
        case .failure(.missing):
            throw Failure(.unauthorized, "unauthenticated", "present an application credential: Authorization: Bearer okap_…")
        case .failure(let refusal):
            throw Failure(.unauthorized, "invalid_credential", "the credential is \(refusal == .invalid ? "not one the gateway signed" : refusal.rawValue)")
        }
        var request = request
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: Self.maxBody)
        } catch {
            throw Failure(.contentTooLarge, "body_too_large", "the body is limited to \(Self.maxBody) bytes")
        }
        guard JSONNesting.isAcceptable(body.readableBytesView) else {
            throw Failure(.badRequest, "bad_request", "the body nests deeper than \(JSONNesting.maxDepth) levels")
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any],
              let text = object[input] as? String, let bytes = Data(base64Encoded: text) else {
            throw Failure(.badRequest, "bad_request", "the body is {\"\(input)\": base64}")
        }
        do {
            let result = try await runtime.withKey(tenant: tenant) { ring in try operation(ring, tenant, Array(bytes)) }
            return try json([output: Data(result).base64EncodedString()])
        } catch let failure as NodeKeyring.Failure {
            throw Failure(failure)
        }
    }

    struct Status: Encodable {
        struct Lease: Encodable {
            var tenant: String
            var expiresAt: Date
            var remainingSeconds: Double
        }

        var node: String
        var region: String
        var gateway: String
        var connected: Bool
        var lastEvent: Int64
        var keysHeld: Int
        var leases: [Lease]
        /// Application requests refused, by reason.
        var refusals: [String: Int]
        /// The API's certificate and the client certificate presented to the gateway, when used.
        var tls: CertificateFiles.Status?
        var gatewayClientCertificate: CertificateFiles.Status?
    }

    func status() -> Status {
        let now = Date()
        return Status(node: runtime.nodeID, region: runtime.region, gateway: runtime.configuration.gateway, connected: runtime.isConnected,
                      lastEvent: runtime.lastEvent, keysHeld: runtime.keyring.keysHeld,
                      leases: runtime.keyring.leases.sorted { $0.key < $1.key }.map {
                          Status.Lease(tenant: $0.key, expiresAt: $0.value, remainingSeconds: max(0, $0.value.timeIntervalSince(now)))
                      },
                      refusals: Dictionary(uniqueKeysWithValues: runtime.applications.refusals.map { ($0.key.rawValue, $0.value) }),
                      tls: listenerTLS?.status, gatewayClientCertificate: runtime.configuration.gatewayTLS?.identity?.status)
    }

    private func json(_ value: some Encodable) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(data: try encoder.encode(value))))
    }
}
