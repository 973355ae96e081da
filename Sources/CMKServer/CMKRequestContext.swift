import Audit
import AuditFormat
public import ControlPlane
import Foundation
public import Hummingbird
public import NIOCore
public import Registry

/// Who is calling. Set by `AuthenticationMiddleware`; every `/api/v1` route requires one.
public struct Identity: Sendable, Equatable {
    public var subject: String
    /// How the caller proved who they are (`password+totp`, `automation-token`, `gateway-jwt+…`, `node-signature`).
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
    /// The connection: its TLS client certificate, if any, is read from it.
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.identity = nil
        self.principal = nil
        self.node = nil
        self.clientAddress = source.channel.remoteAddress?.ipAddress
        self.channel = source.channel
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
