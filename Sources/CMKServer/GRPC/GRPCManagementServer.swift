import Audit
import CMKProto
import ControlPlane
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import NIOCertificateReloading
import NIOSSL
import ServiceLifecycle
import TLSSupport

/// The gRPC Management API's listener: every service of Protos/openkcm/cmk/v1 over HTTP/2,
/// beside the standard health and reflection services, on its own port with the same
/// certificate as HTTPS (read again when it changes), requests bounded like REST bodies.
struct GRPCManagementServer: Service {
    let server: GRPCServer<HTTP2ServerTransport.Posix>
    let logger: Logger

    /// What the transport reads of one request message (gRPC's usual 4 MiB): past it the
    /// stream is reset unread; below it, past 64 KiB, the front door refuses the request with
    /// RESOURCE_EXHAUSTED (body_too_large). Answers (an export chunk, a long listing) stay
    /// within the clients' default 4 MiB too.
    static let transportLimit = 4 * 1024 * 1024

    /// The Management API's own services, by full name (the health service answers for these).
    static let serviceNames: Set<String> = Set(AccessPolicy.grpcMethods.map { String($0.name.split(separator: "/")[0]) })

    init(host: String, port: Int, tls: ListenerTLS?, gateway: Gateway, gate: AdminGate,
         readiness: @escaping @Sendable () async -> [String], logger: Logger) throws {
        var config = HTTP2ServerTransport.Posix.Config.defaults
        config.rpc.maxRequestPayloadSize = Self.transportLimit
        let security: HTTP2ServerTransport.Posix.TransportSecurity
        if let tls {
            security = try .tls(certificateReloader: FilesReloader(files: tls.files))
        } else {
            security = .plaintext
            if !ServerTLS.isLoopback(host) {
                logger.warning("serving plain gRPC on a non-loopback address: tokens and session cookies cross the network in clear; configure \"tls\"",
                               metadata: ["host": "\(host)"])
            }
        }
        let transport = HTTP2ServerTransport.Posix(address: .ipv4(host: host == "localhost" ? "127.0.0.1" : host, port: port),
                                                   transportSecurity: security, config: config)
        let base = GRPCServiceBase(door: GRPCFrontDoor(gate: gate, logger: logger), operations: ManagementOperations(gateway: gateway),
                                   idempotency: IdempotencyCache(registry: gateway.registry), logger: logger)
        let reflection = ReflectionGRPCService(index: ReflectionIndex(services: Array(Self.serviceNames) + [
            "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
        ]))
        let services: [any RegistrableRPCService] = [
            TenantGRPCService(base: base), KeystoreGRPCService(base: base), L1LinkGRPCService(base: base),
            ApprovalGRPCService(base: base), NodeGRPCService(base: base),
            AuditGRPCService(base: base, operations: AuditOperations(audit: gateway.audit)),
            HealthGRPCService(readiness: readiness, services: Self.serviceNames),
            reflection, ReflectionV1AlphaGRPCService(v1: reflection),
        ]
        server = GRPCServer(transport: transport, services: services)
        self.logger = logger
    }

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask { try await server.serve() }
                if let address = try await server.listeningAddress?.ipv4 {
                    logger.notice("serving gRPC", metadata: ["address": "\(address.host)", "grpc.port": "\(address.port)"])
                }
            }
        } onGracefulShutdown: {
            server.beginGracefulShutdown()
        }
    }
}

/// The listener's certificate files as grpc-swift-nio-transport reloads them: the pair in
/// service at each handshake, the same one HTTPS presents.
private struct FilesReloader: NIOCertificateReloading.CertificateReloader {
    let files: CertificateFiles

    var sslContextConfigurationOverride: NIOSSLContextConfigurationOverride {
        let pair = files.pair
        var override = NIOSSLContextConfigurationOverride()
        override.certificateChain = pair.chain.map { .certificate($0) }
        override.privateKey = .privateKey(pair.key)
        return override
    }
}
