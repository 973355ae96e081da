import CMKProto
import ControlPlane
import GRPCCore
import SwiftProtobuf

/// The standard gRPC health service (`grpc.health.v1.Health`), open as its clients
/// (load balancers, `grpc_health_probe`, Kubernetes) expect: SERVING when the gateway is ready
/// by the same checks as `/readyz`, NOT_SERVING otherwise. The empty service name is the
/// server as a whole; every Management API service answers for itself the same way.
struct HealthGRPCService: Grpc_Health_V1_Health.ServiceProtocol {
    let readiness: @Sendable () async -> [String]
    let services: Set<String>
    var watchInterval: Duration = .seconds(5)

    private func status(of service: String) async -> Grpc_Health_V1_HealthCheckResponse.ServingStatus? {
        guard service.isEmpty || services.contains(service) else { return nil }
        return await readiness().isEmpty ? .serving : .notServing
    }

    func check(request: ServerRequest<Grpc_Health_V1_HealthCheckRequest>, context: ServerContext)
        async throws -> ServerResponse<Grpc_Health_V1_HealthCheckResponse> {
        guard let status = await status(of: request.message.service) else {
            throw RPCError(code: .notFound, message: "no service \(request.message.service) here")
        }
        return ServerResponse(message: .with { $0.status = status })
    }

    /// The status now, then each change, until the client goes away.
    func watch(request: ServerRequest<Grpc_Health_V1_HealthCheckRequest>, context: ServerContext)
        async throws -> StreamingServerResponse<Grpc_Health_V1_HealthCheckResponse> {
        let (service, interval) = (request.message.service, watchInterval)
        return StreamingServerResponse { writer in
            var last: Grpc_Health_V1_HealthCheckResponse.ServingStatus?
            while !context.cancellation.isCancelled {
                let now = await status(of: service) ?? .serviceUnknown
                if now != last {
                    try await writer.write(.with { $0.status = now })
                    last = now
                }
                // The wait ends early when the client goes away.
                let wait = Task { try await Task.sleep(for: interval) }
                try? await withRPCCancellationHandler {
                    try await wait.value
                } onCancelRPC: {
                    wait.cancel()
                }
            }
            return [:]
        }
    }
}
