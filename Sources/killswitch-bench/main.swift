// The kill-switch benchmark's client side (Scripts/bench-killswitch runs it against a release
// `cmk serve` on a SoftHSM token): N real node runtimes (NodeAgent, each with its own HTTP
// client and event stream, in this one process), T tenants with linked L1 keys that every node
// unseals, then one revocation per tenant, timed from the revoke request to the last node's
// verified acknowledgement (the gateway's 201 to the last ack), beside the loopback
// round-trip time of one request in the same run.
import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOFoundationEssentialsCompat
import NIOHTTP1
import NodeAgent
import ServiceLifecycle

struct Options {
    var gateway = "http://127.0.0.1:8080"
    var password = ""
    var totpSecret = ""
    /// A platform operator's automation token: node enrolment is its duty, not the administrator's.
    var operatorToken = ""
    var nodes = 10
    var revocations = 60
    var directory = NSTemporaryDirectory() + "killswitch-bench-\(getpid())"
    /// `runtime`: full NodeAgent runtimes; `light`: LightNode threads (the protocol only).
    var clients = "runtime"

    init() {
        var arguments = CommandLine.arguments.dropFirst().makeIterator()
        while let argument = arguments.next() {
            let value = arguments.next() ?? ""
            switch argument {
            case "--gateway": gateway = value
            case "--admin-password-file": password = Self.read(value)
            case "--admin-totp-secret-file": totpSecret = Self.read(value)
            case "--operator-token-file": operatorToken = Self.read(value)
            case "--nodes": nodes = Int(value) ?? nodes
            case "--revocations": revocations = Int(value) ?? revocations
            case "--data-dir": directory = value
            case "--clients": clients = value
            default:
                FileHandle.standardError.write(Data("usage: killswitch-bench --gateway URL --admin-password-file F --admin-totp-secret-file F --operator-token-file F --nodes N --revocations R --data-dir D [--clients runtime|light]\n".utf8))
                exit(64)
            }
        }
    }
}

extension Options {
    static func read(_ path: String) -> String {
        (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
    }
}

struct BenchError: Error, CustomStringConvertible { var description: String }

/// The administrator's session (cookie, CSRF token) and the last TOTP step used.
let session = NIOLockedValueBox((cookie: "", csrf: "", step: Int64(0)))

/// RFC 6238 with the authenticator defaults (SHA-1, 6 digits, 30 s), for the admin's login.
func totp(step: Int64) -> String {
    var secret: [UInt8] = []
    var buffer: UInt32 = 0, bits = 0
    for character in options.totpSecret.utf8 {
        guard let value = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8).firstIndex(of: character) else { continue }
        buffer = (buffer << 5) | UInt32(value)
        bits += 5
        if bits >= 8 { secret.append(UInt8((buffer >> UInt32(bits - 8)) & 0xFF)); bits -= 8 }
    }
    let mac = Array(HMAC<Insecure.SHA1>.authenticationCode(for: withUnsafeBytes(of: UInt64(step).bigEndian) { Data($0) },
                                                            using: SymmetricKey(data: secret)))
    let offset = Int(mac[19] & 0x0F)
    let value = (UInt32(mac[offset] & 0x7F) << 24 | UInt32(mac[offset + 1]) << 16 | UInt32(mac[offset + 2]) << 8 | UInt32(mac[offset + 3])) % 1_000_000
    return String(format: "%06u", value)
}

/// A step not used before (codes work once; the next step is within the skew window).
func nextStep() -> Int64 {
    let now = Int64(Date().timeIntervalSince1970) / 30
    return session.withLockedValue { state in
        state.step = max(now, state.step + 1)
        return state.step
    }
}

func logIn() async throws {
    var request = HTTPClientRequest(url: options.gateway + "/api/v1/session")
    request.method = .POST
    request.headers.add(name: "Content-Type", value: "application/json")
    let body = try JSONSerialization.data(withJSONObject: ["username": "admin", "password": options.password, "totp": totp(step: nextStep())])
    request.body = .bytes(ByteBuffer(data: body))
    let response = try await http.execute(request, timeout: .seconds(30))
    let data = Data(buffer: try await response.body.collect(upTo: 1 << 20))
    guard response.status == .created, let cookie = response.headers["set-cookie"].first?.split(separator: ";").first,
          let csrf = (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["csrfToken"] as? String else {
        throw BenchError(description: "login: HTTP \(response.status.code) \(String(decoding: data, as: UTF8.self))")
    }
    session.withLockedValue { $0.cookie = String(cookie); $0.csrf = csrf }
}

let options = Options()
let http = HTTPClient(eventLoopGroupProvider: .singleton,
                      configuration: .init(connectionPool: .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 128)))

@discardableResult
func admin(_ method: HTTPMethod, _ path: String, _ body: String? = nil, expect: Int) async throws -> [String: Any] {
    var request = HTTPClientRequest(url: options.gateway + path)
    request.method = method
    let (cookie, csrf, _) = session.withLockedValue { $0 }
    request.headers.add(name: "Cookie", value: cookie)
    request.headers.add(name: "X-CSRF-Token", value: csrf)
    request.headers.add(name: "Content-Type", value: "application/json")
    if let body { request.body = .bytes(ByteBuffer(string: body)) }
    let response = try await http.execute(request, timeout: .seconds(30))
    let data = Data(buffer: try await response.body.collect(upTo: 1 << 20))
    guard Int(response.status.code) == expect else {
        throw BenchError(description: "\(method) \(path): HTTP \(response.status.code) \(String(decoding: data, as: UTF8.self))")
    }
    return (try? JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
}

/// A node enrolment token, issued by the platform operator.
func enrolmentToken(region: String) async throws -> String {
    var request = HTTPClientRequest(url: options.gateway + "/api/v1/nodes/enrolments")
    request.method = .POST
    request.headers.add(name: "Authorization", value: "Bearer \(options.operatorToken)")
    request.headers.add(name: "Content-Type", value: "application/json")
    request.body = .bytes(ByteBuffer(string: #"{"region":"\#(region)"}"#))
    let response = try await http.execute(request, timeout: .seconds(30))
    let data = Data(buffer: try await response.body.collect(upTo: 1 << 20))
    guard response.status == .created, let token = (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["token"] as? String else {
        throw BenchError(description: "enrolment: HTTP \(response.status.code) \(String(decoding: data, as: UTF8.self))")
    }
    return token
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * p).rounded()))]
}

func milliseconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
}

func runBench() async throws {
    try await logIn()
    var logger = Logger(label: "killswitch-bench")
    logger.logLevel = .error
    let run = UUID().uuidString.prefix(8).lowercased()

    // 1. Tenants with linked L1 keys (handshakes through the API, four at a time).
    var links: [(tenant: String, link: String)] = []
    try await withThrowingTaskGroup(of: (String, String).self) { group in
        for index in 0..<options.revocations {
            if index >= 4 { links.append(try await group.next()!) }
            group.addTask {
                let tenant = "ks-\(run)-\(index)"
                try await admin(.POST, "/api/v1/tenants", #"{"id":"\#(tenant)","name":"\#(tenant)"}"#, expect: 201)
                let link = try await admin(.POST, "/api/v1/tenants/\(tenant)/l1-links",
                                           #"{"provider":"pkcs11","keystore":"hsm","key":"pkcs11:object=l1"}"#, expect: 201)
                return (tenant, link["id"] as! String)
            }
        }
        for try await pair in group { links.append(pair) }
    }

    // Every acknowledgement any node makes, with the instant its 201 arrived.
    struct Acked: Sendable { var node: String; var event: String; var at: ContinuousClock.Instant }
    let (acks, ackSink) = AsyncStream<Acked>.makeStream()
    let tenants = links.map(\.tenant)
    var stop: @Sendable () async -> Void = {}
    let unsealStart: ContinuousClock.Instant

    if options.clients == "light" {
        // 2. N light nodes: enrolled like real ones, each on its own thread and connections.
        let port = UInt16(URL(string: options.gateway)!.port!)
        var nodes: [(LightNode, GatewayClient, Int64)] = []
        for index in 0..<options.nodes {
            let token = try await enrolmentToken(region: "bench-\(index % 3)")
            let signing = Curve25519.Signing.PrivateKey(), hpke = Curve25519.KeyAgreement.PrivateKey()
            let enrolment = try await GatewayClient.enrol(base: options.gateway, token: token, signingKey: signing, hpkeKey: hpke.publicKey, http: http)
            let light = LightNode(id: enrolment.id, key: signing, port: port) { event, at in ackSink.yield(Acked(node: enrolment.id, event: event, at: at)) }
            let client = GatewayClient(base: options.gateway, nodeID: enrolment.id, signingKey: signing, hpkeKey: hpke, http: http)
            // Pinned as `cmk node` pins it at enrolment: every unseal answer must verify with it.
            let pinned = enrolment.gatewayKey.flatMap { Data(base64Encoded: $0) }.flatMap { try? Curve25519.Signing.PublicKey(rawRepresentation: $0) }
            client.gatewayKey.withLockedValue { $0 = pinned }
            nodes.append((light, client, enrolment.eventSequence ?? 0))
        }
        // 3. Unseal throughput: every node unseals every tenant's L2 (all nodes at once).
        unsealStart = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (_, client, _) in nodes {
                group.addTask { for tenant in tenants { _ = try await client.unseal(tenant: tenant) } }
            }
            try await group.waitForAll()
        }
        for (light, _, after) in nodes {
            Thread.detachNewThread {
                do { try light.run(after: after) } catch { FileHandle.standardError.write(Data("light node: \(error)\n".utf8)) }
            }
        }
        while (try await admin(.GET, "/api/v1/nodes", expect: 200)["items"] as? [[String: Any]] ?? [])
            .filter({ $0["connected"] as? Bool == true }).count < options.nodes {
            try await Task.sleep(for: .milliseconds(50))
        }
    } else {
        // 2. N node runtimes, each enrolled with its own token and data directory.
        var runtimes: [NodeRuntime] = []
        for index in 0..<options.nodes {
            let token = try await enrolmentToken(region: "bench-\(index % 3)")
            var configuration = NodeRuntime.Configuration(gateway: options.gateway, region: "bench-\(index % 3)",
                                                          dataDirectory: "\(options.directory)/node-\(index)", enrolmentToken: token)
            configuration.heartbeatInterval = .seconds(5)
            runtimes.append(try await NodeRuntime.start(configuration, logger: logger))
        }
        let connectedCount = NIOLockedValueBox(0)
        for runtime in runtimes {
            let activity = runtime.activity()
            let node = runtime.nodeID
            Task {
                for await item in activity {
                    switch item {
                    case .acknowledged(let event, _, _): ackSink.yield(Acked(node: node, event: event, at: .now))
                    case .connected: connectedCount.withLockedValue { $0 += 1 }
                    default: break
                    }
                }
            }
        }
        let group = ServiceGroup(configuration: .init(services: runtimes.map { .init(service: $0) }, logger: logger))
        let groupTask = Task { try await group.run() }
        stop = {
            await group.triggerGracefulShutdown()
            _ = try? await groupTask.value
        }
        while connectedCount.withLockedValue({ $0 }) < options.nodes { try await Task.sleep(for: .milliseconds(20)) }

        // 3. Unseal throughput: every node unseals every tenant's L2 (all nodes at once).
        unsealStart = ContinuousClock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for runtime in runtimes {
                group.addTask {
                    for tenant in tenants {
                        _ = try await runtime.withKey(tenant: tenant) { try $0.encrypt(tenant: tenant, [1, 2, 3]) }
                    }
                }
            }
            try await group.waitForAll()
        }
    }
    let unsealSeconds = milliseconds(ContinuousClock.now - unsealStart) / 1000
    let unseals = options.nodes * links.count

    // 4. Loopback round trip of one request, in this run.
    var rtts: [Double] = []
    for _ in 0..<200 {
        let start = ContinuousClock.now
        let response = try await http.execute(HTTPClientRequest(url: options.gateway + "/healthz"), timeout: .seconds(5))
        _ = try await response.body.collect(upTo: 1024)
        rtts.append(milliseconds(ContinuousClock.now - start))
    }

    // Revocations need a second factor entered within five minutes.
    try await admin(.POST, "/api/v1/session/step-up", #"{"totp":"\#(totp(step: nextStep()))"}"#, expect: 204)

    // For profiling: a pause, announced, before the measured phase.
    if let pause = ProcessInfo.processInfo.environment["KS_BENCH_PAUSE"].flatMap(Double.init) {
        FileHandle.standardError.write(Data("revocations start in \(pause) s\n".utf8))
        try await Task.sleep(for: .milliseconds(Int64(pause * 1000)))
    }

    // 5. The revocations, one after another.
    var latencies: [Double] = [], requestTimes: [Double] = []
    var ackIterator = acks.makeAsyncIterator()
    var early: [String: [Acked]] = [:]
    for (tenant, link) in links {
        try await Task.sleep(for: .milliseconds(20))
        let start = ContinuousClock.now
        let revoked = try await admin(.POST, "/api/v1/tenants/\(tenant)/l1-links/\(link)/revoke", expect: 200)
        requestTimes.append(milliseconds(ContinuousClock.now - start))
        guard let event = (revoked["event"] as? [String: Any])?["id"] as? String else { throw BenchError(description: "no event in \(revoked)") }
        var seen = early.removeValue(forKey: event) ?? []
        while Set(seen.map(\.node)).count < options.nodes {
            guard let ack = await ackIterator.next() else { throw BenchError(description: "the nodes stopped") }
            if ack.event == event { seen.append(ack) } else { early[ack.event, default: []].append(ack) }
        }
        latencies.append(milliseconds(seen.map(\.at).max()! - start))
    }
    let last = try await admin(.GET, "/api/v1/tenants/\(links.last!.tenant)/l1-links/\(links.last!.link)/revocation", expect: 200)
    guard last["state"] as? String == "LOCKED" else { throw BenchError(description: "the last link is not LOCKED: \(last)") }

    await stop()
    try await http.shutdown()

    let sorted = latencies.sorted(), rtt = rtts.sorted(), request = requestTimes.sorted()
    print("[\(options.clients) clients] " + String(format: "nodes=%d revocations=%d  revoke→last verified ack: p50 %.2f ms  p99 %.2f ms  max %.2f ms  |  revoke request alone p50 %.2f ms  |  loopback RTT (GET /healthz) p50 %.3f ms p99 %.3f ms  |  unseal %d in %.2f s = %.0f/s",
                 options.nodes, latencies.count, percentile(sorted, 0.5), percentile(sorted, 0.99), sorted.last!, percentile(request, 0.5),
                 percentile(rtt, 0.5), percentile(rtt, 0.99), unseals, unsealSeconds, Double(unseals) / unsealSeconds))
}

try await runBench()
