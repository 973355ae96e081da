import Audit
import Foundation
import Hummingbird
import Registry

/// Who is calling. Set by `AuthenticationMiddleware`; every `/api/v1` route requires one.
public struct Identity: Sendable, Equatable {
    public var subject: String
    /// How the caller proved who they are (`bootstrap-token` until the Session Manager).
    public var method: String
}

/// The per-request context: Hummingbird's core storage and the caller's identity.
public struct CMKRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var identity: Identity?
    /// The administrator or automation token, on `/api/v1` routes.
    public var principal: Principal?
    /// The calling node, on `/node/v1` routes.
    public var node: Node?
    /// The client's IP address, for the audit record.
    public let clientAddress: String?

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.identity = nil
        self.principal = nil
        self.node = nil
        self.clientAddress = source.channel.remoteAddress?.ipAddress
    }

    /// The caller as the audit log records it.
    public var audit: AuditContext {
        AuditContext(actor: principal?.auditActor ?? AuditActor(kind: node == nil ? .user : .node, id: identity?.subject ?? "anonymous",
                                                                authMethod: identity?.method ?? "none"),
                     requestID: id, clientAddress: clientAddress)
    }

    /// Request bodies are small JSON documents: anything larger is refused (413) before decoding.
    public var maxUploadSize: Int { 64 * 1024 }
}

/// Accepts `Authorization: Bearer <token>` when the token equals the bootstrap token read at
/// start-up from the configured file. Compared in constant time; the token is never logged.
struct AuthenticationMiddleware: RouterMiddleware {
    typealias Context = CMKRequestContext
    let token: [UInt8]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        // The scheme name is case-insensitive (RFC 9110 §11.1).
        guard let header = request.headers[.authorization], header.count > 7, header.prefix(7).lowercased() == "bearer " else {
            throw HTTPError(.unauthorized)
        }
        let presented = Array(header.dropFirst(7).utf8)
        guard Self.constantTimeEqual(presented, token) else { throw HTTPError(.unauthorized) }
        var context = context
        context.identity = Identity(subject: "bootstrap-admin", method: "bootstrap-token")
        return try await next(request, context)
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }

    /// Reads the token file: at least 32 characters, no whitespace inside.
    static func loadToken(from path: String) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError("cannot read the bootstrap token file \(path)")
        }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.count >= 32, !text.contains(where: \.isWhitespace) else {
            throw ConfigurationError("the bootstrap token in \(path) must be at least 32 characters without spaces")
        }
        return Array(text.utf8)
    }
}
