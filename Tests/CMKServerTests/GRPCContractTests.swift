import CMKCore
import CMKProto
@testable import CMKServer
import ControlPlane
import Crypto
import Foundation
import GRPCCore
import GRPCProtobuf
import KSI
import Logging
import NIOConcurrencyHelpers
import SwiftProtobuf
import TestSupport
import Testing

/// The gRPC API's contract with itself: the generated code is the .proto files', every method
/// answers to one access rule, every failure has a status code (never UNKNOWN) and our code in
/// its details, names are parsed strictly, and deadlines and cancellation do what D100 says.
@Suite(.serialized) struct GRPCContractTests {
    @Test func theGeneratedCodeIsMadeFromTheProtoFilesAsTheyAre() throws {
        let root = SoftHSMFixture.repositoryRoot
        let recorded = try String(contentsOfFile: root + "/Sources/CMKProto/Generated/proto-sources.sha256", encoding: .utf8)
        var expected: [String: String] = [:]
        for line in recorded.split(separator: "\n") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            expected[String(parts[1])] = String(parts[0])
        }
        let protos = FileManager.default.enumerator(atPath: root + "/Protos")!.compactMap { $0 as? String }.filter { $0.hasSuffix(".proto") }
        #expect(Set(protos) == Set(expected.keys), "Protos/ and the generated code list different files: run Scripts/generate-grpc")
        for proto in protos {
            let digest = Hex.encode(SHA256.hash(data: try Data(contentsOf: URL(fileURLWithPath: root + "/Protos/" + proto))))
            #expect(expected[proto] == digest, "\(proto) changed since the code was generated: run Scripts/generate-grpc and commit")
        }
    }

    @Test func everyMethodOfTheAPIAnswersToOneRuleOfTheAccessPolicy() {
        let index = ReflectionIndex(services: [])
        var served: Set<String> = []
        for file in index.files.values where file.package == "openkcm.cmk.v1" {
            for service in file.service { for method in service.method { served.insert("openkcm.cmk.v1.\(service.name)/\(method.name)") } }
        }
        #expect(served.count >= 30)
        #expect(served == Set(AccessPolicy.grpcMethods.map(\.name)), "every method is in AccessPolicy.grpcMethods, and nothing else")
        for method in AccessPolicy.grpcMethods {
            #expect(AccessPolicy.rule(method: method.method, path: method.path) != nil, "\(method.name) answers to no rule")
        }
        #expect(GRPCManagementServer.serviceNames.count == 6)
    }

    @Test func everyFailureHasAStatusCodeAndOurCodeInItsDetails() throws {
        for code in ErrorCode.allCases {
            #expect(GRPCStatus.code(for: DomainError(code, "")) != .unknown, "\(code) would be UNKNOWN")
        }
        let expectations: [(ErrorCode, RPCError.Code)] = [
            (.invalidInput, .invalidArgument), (.notFound, .notFound), (.unauthenticated, .unauthenticated), (.forbidden, .permissionDenied),
            (.stepUpRequired, .permissionDenied), (.conflict, .failedPrecondition), (.linkRevoked, .failedPrecondition),
            (.probeFailed, .failedPrecondition), (.preconditionFailed, .aborted), (.idempotencyInProgress, .aborted),
            (.bodyTooLarge, .resourceExhausted), (.locked, .resourceExhausted), (.keystoreUnavailable, .unavailable),
            (.storageUnavailable, .unavailable), (.linkShredded, .failedPrecondition), (.internal, .internalError),
        ]
        for (code, status) in expectations { #expect(GRPCStatus.code(for: DomainError(code, "")) == status, "\(code)") }
        // The kind an error names wins, as over HTTP.
        #expect(GRPCStatus.code(for: DomainError(.rekeyRefused, "", kind: .unprocessable)) == .failedPrecondition)
        #expect(GRPCStatus.code(for: DomainError(.invalidAck, "", kind: .unauthenticated)) == .unauthenticated)

        let report = ProbeReport(key: "pkcs11:object=x", token: "t", provider: .pkcs11, passed: false, mechanism: nil, latencyMilliseconds: 1,
                                 checks: [.init("key_found", passed: false, "no key")], failure: .init(code: .notFound, reason: "no key", detail: nil))
        let status = GRPCStatus.status(DomainError(.probeFailed, "the probe failed", details: report), requestID: "0123")
        #expect(status.code == .failedPrecondition && status.message == "the probe failed")
        #expect(status.details.compactMap(\.errorInfo).map(\.reason) == ["PROBE_FAILED"])
        #expect(status.details.compactMap(\.errorInfo).first?.metadata == ["code": "probe_failed"])
        #expect(status.details.compactMap(\.errorInfo).first?.domain == "cmk.openkcm.io")
        #expect(status.details.compactMap(\.requestInfo).map(\.requestID) == ["0123"])
        let packed = try #require(status.details.compactMap(\.any).first)
        let unpacked = try Openkcm_Cmk_V1_ProbeReport(unpackingAny: packed)
        #expect(unpacked.checks.map(\.name) == ["key_found"] && unpacked.failure.code == "not_found")
        // What a client receives: the same status, parsed back from the trailer.
        let received = try #require(try RPCError(status).unpackGoogleRPCStatus())
        #expect(received.code == status.code && received.message == status.message)
        #expect(received.details.compactMap(\.errorInfo) == status.details.compactMap(\.errorInfo))
        #expect(received.details.count == 3)
    }

    @Test func namesAreParsedStrictly() throws {
        #expect(try ResourceName.tenant("tenants/acme") == "acme")
        for bad in ["", "acme", "tenants/", "tenant/acme", "tenants/acme/x", "/tenants/acme"] {
            #expect(throws: DomainError.invalidInput(""), "\(bad)") { try ResourceName.tenant(bad) }
        }
        #expect(try ResourceName.id("hsm", "keystores", field: "keystore", bareAllowed: true) == "hsm")
        #expect(try ResourceName.id("keystores/hsm", "keystores", field: "keystore", bareAllowed: true) == "hsm")
        #expect(throws: DomainError.invalidInput("")) { try ResourceName.id("hsm", "keystores", field: "keystore") }
        let link = try ResourceName.link("tenants/acme/l1Links/123")
        #expect(link.tenant == "acme" && link.link == "123")
        #expect(try ResourceName.link("tenants/acme/l1Links/123/revocation", revocation: true).link == "123")
        #expect(throws: DomainError.invalidInput("")) { try ResourceName.link("tenants/acme/l1Links/123/revocation") }
        #expect(throws: DomainError.invalidInput("")) { try ResourceName.link("tenants/acme/links/123") }
        #expect(try Paging.limit(0) == 50 && Paging.limit(500) == 500)
        #expect(throws: DomainError.invalidInput("")) { try Paging.limit(501) }
        #expect(throws: DomainError.invalidInput("")) { try Paging.limit(-1) }
        #expect(try Paging.version("") == nil && Paging.version("7") == 7 && Paging.version("\"7\"") == 7)
        #expect(throws: DomainError.invalidInput("")) { try Paging.version("seven") }
    }

    @Test func credentialsDeadlinesAndPeersAreReadFromMetadata() {
        var bearer = Metadata()
        bearer.addString("Bearer okat_abc", forKey: "authorization")
        guard case .bearer("okat_abc")? = GRPCFrontDoor.credential(bearer) else { Issue.record("bearer"); return }
        var basic = Metadata()
        basic.addString("Basic abc", forKey: "authorization")
        guard case .malformed? = GRPCFrontDoor.credential(basic) else { Issue.record("another scheme"); return }
        var cookie = Metadata()
        cookie.addString("theme=dark; cmk_session=okas_s", forKey: "cookie")
        cookie.addString("c", forKey: "x-csrf-token")
        guard case .session(token: "okas_s", csrf: "c")? = GRPCFrontDoor.credential(cookie) else { Issue.record("session"); return }
        #expect(GRPCFrontDoor.credential(Metadata()) == nil)

        func timeout(_ text: String) -> Duration? {
            var metadata = Metadata()
            metadata.addString(text, forKey: "grpc-timeout")
            return GRPCFrontDoor.timeout(metadata)
        }
        #expect(timeout("100m") == .milliseconds(100) && timeout("2S") == .seconds(2) && timeout("1H") == .seconds(3600))
        #expect(timeout("5x") == nil && timeout("m") == nil && timeout("-1S") == nil && timeout("1234567890S") == nil)
        #expect(GRPCFrontDoor.address(of: "ipv4:127.0.0.1:5000") == "127.0.0.1")
        #expect(GRPCFrontDoor.address(of: "ipv6:[::1]:5000") == "::1")
        #expect(GRPCFrontDoor.address(of: "unix:/tmp/socket") == nil)
        #expect(GRPCFrontDoor.newRequestID().count == 32)
    }

    // MARK: Deadlines and cancellation (D100), through the door every method uses

    static let tenantService = "openkcm.cmk.v1.TenantService"

    /// A call to `method` by the harness's administrator, run with a cancellation handle the
    /// test holds.
    func call<Out: Sendable>(_ door: GRPCFrontDoor, _ method: String, _ effect: GRPCFrontDoor.Effect, timeout: String? = nil,
                             cancelAfter: Duration?, cancelFirst: Bool = false,
                             _ body: @escaping @Sendable () async throws -> Out) async throws -> Out {
        var metadata = Metadata()
        metadata.addString("\(SessionManager.cookieName)=\(ServerHarness.sessionToken)", forKey: "cookie")
        metadata.addString(ServerHarness.csrfToken, forKey: "x-csrf-token")
        if let timeout { metadata.addString(timeout, forKey: "grpc-timeout") }
        let request = ServerRequest(metadata: metadata, message: Openkcm_Cmk_V1_ListTenantsRequest())
        return try await withServerContextRPCCancellationHandle { handle in
            let context = ServerContext(descriptor: MethodDescriptor(fullyQualifiedService: Self.tenantService, method: method),
                                        remotePeer: "ipv4:127.0.0.1:1", localPeer: "ipv4:127.0.0.1:2", cancellation: handle)
            if cancelFirst { handle.cancel() }
            let canceller = Task {
                if let cancelAfter {
                    try await Task.sleep(for: cancelAfter)
                    handle.cancel()
                }
            }
            defer { canceller.cancel() }
            return try await door.unary(request, context, effect) { _, _ in try await body() }.message
        }
    }

    @Test func readsStopAtCancellationChangesOnceBegunAreFinishedAndLateCallsNeverStart() async throws {
        try await ServerHarness().test { _, gateway in
            let sessions = SessionManager(registry: gateway.registry, platform: gateway.platform, audit: gateway.audit,
                                          settings: ServerHarness.sessionSettings, logger: Logger(label: "test"))
            let door = GRPCFrontDoor(gate: AdminGate(gateway: gateway, sessions: sessions, assertions: nil), logger: Logger(label: "test"))

            // A read that would take 30 s is stopped when the client cancels.
            let started = ContinuousClock.now
            await #expect(throws: RPCError.self) {
                try await call(door, "ListTenants", .read, cancelAfter: .milliseconds(200)) {
                    try await Task.sleep(for: .seconds(30))
                    return Openkcm_Cmk_V1_ListTenantsResponse()
                }
            }
            #expect(ContinuousClock.now - started < .seconds(10))
            do {
                _ = try await call(door, "ListTenants", .read, timeout: "100m", cancelAfter: .milliseconds(300)) {
                    try await Task.sleep(for: .seconds(30))
                    return Openkcm_Cmk_V1_ListTenantsResponse()
                }
                Issue.record("the read was not stopped")
            } catch let error as RPCError {
                #expect(error.code == .deadlineExceeded, "past the caller's deadline: \(error)")
            }

            // A change that has begun runs to its end, though the call is cancelled meanwhile.
            let finished = NIOLockedValueBox(false)
            let answer = try await call(door, "CreateTenant", .change, cancelAfter: .milliseconds(50)) {
                try? await Task.sleep(for: .milliseconds(400))
                finished.withLockedValue { $0 = true }
                return Openkcm_Cmk_V1_Tenant.with { $0.name = "tenants/finished" }
            }
            #expect(answer.name == "tenants/finished" && finished.withLockedValue { $0 })

            // A call cancelled before it starts is not started, change or read.
            let ran = NIOLockedValueBox(false)
            for (method, effect) in [("CreateTenant", GRPCFrontDoor.Effect.change), ("ListTenants", .read)] {
                do {
                    _ = try await call(door, method, effect, timeout: "1n", cancelAfter: nil, cancelFirst: true) {
                        ran.withLockedValue { $0 = true }
                        return Openkcm_Cmk_V1_Tenant()
                    }
                    Issue.record("a late \(method) ran")
                } catch let error as RPCError {
                    #expect(error.code == .deadlineExceeded)
                }
            }
            #expect(!ran.withLockedValue { $0 })

            // A method outside the policy is refused, and so is a caller without a credential.
            do {
                _ = try await call(door, "Nonexistent", .read, cancelAfter: nil) { Openkcm_Cmk_V1_Tenant() }
                Issue.record("a method outside the policy ran")
            } catch let status as GoogleRPCStatus {
                #expect(status.code == .permissionDenied && status.details.compactMap(\.errorInfo).first?.reason == "FORBIDDEN")
            }
        }
    }
}
