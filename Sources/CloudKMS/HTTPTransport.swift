public import AsyncHTTPClient
public import CMKCore
public import Foundation
public import KSI
import NIOCore
public import NIOHTTP1

/// One HTTP exchange with a cloud KMS, as the drivers see it.
public struct CloudResponse: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: [UInt8]

    public init(status: Int, headers: HTTPHeaders, body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public var text: String { String(decoding: body, as: UTF8.self) }
    public var json: [String: Any]? { try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] }
}

/// A request the transport sends (and re-builds for each attempt, so that a signature carries
/// a fresh date).
public struct CloudRequest: Sendable {
    public var method: HTTPMethod
    public var url: String
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(method: HTTPMethod, url: String, headers: [(String, String)] = [], body: [UInt8] = []) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
    }
}

/// Backoff on throttling: exponential with full jitter (a random wait between zero and the
/// capped exponential step), as AWS's and Google's guidance describe; `Retry-After` is honoured
/// up to the cap.
public struct RetryPolicy: Sendable, Equatable {
    public var maxAttempts: Int
    public var base: Duration
    public var cap: Duration

    public init(maxAttempts: Int = 4, base: Duration = .milliseconds(50), cap: Duration = .seconds(2)) {
        self.maxAttempts = maxAttempts
        self.base = base
        self.cap = cap
    }

    /// The wait before attempt `attempt + 1` (attempt counts from 1).
    public func delay(after attempt: Int, retryAfter: Duration? = nil) -> Duration {
        if let retryAfter { return min(retryAfter, cap) }
        let step = base * (1 << min(attempt - 1, 20))
        let ceiling = min(step, cap)
        let nanos = ceiling.components.seconds * 1_000_000_000 + ceiling.components.attoseconds / 1_000_000_000
        return .nanoseconds(Int64.random(in: 0...max(nanos, 0)))
    }
}

/// The drivers' one way out: bounded time per call (250 ms by default, as AWS asks of external
/// key stores), retries with backoff and jitter on throttling only, bodies capped, and errors
/// that say which provider and which call in words (never a credential or a key byte).
public struct HTTPTransport: Sendable {
    public let provider: Provider
    public let timeout: Duration
    public let retry: RetryPolicy
    let client: HTTPClient
    static let maxBody = 1 << 20

    public init(provider: Provider, timeout: Duration = .milliseconds(250), retry: RetryPolicy = RetryPolicy(), client: HTTPClient = .shared) {
        self.provider = provider
        self.timeout = timeout
        self.retry = retry
        self.client = client
    }

    /// From a keystore's settings: 250 ms and 4 attempts unless set (10–60000 ms, 1–10).
    public init(provider: Provider, timeoutMilliseconds: Int?, maxAttempts: Int?) throws {
        let timeout = timeoutMilliseconds ?? 250, attempts = maxAttempts ?? 4
        guard (10...60_000).contains(timeout), (1...10).contains(attempts) else {
            throw KeystoreError(.invalidInput, "timeoutMilliseconds is 10-60000 and maxAttempts 1-10")
        }
        self.init(provider: provider, timeout: .milliseconds(timeout), retry: RetryPolicy(maxAttempts: attempts))
    }

    /// Sends what `make` builds; when `throttled` says the answer is throttling, waits and
    /// tries again, up to `retry.maxAttempts`. Other answers, errors included, are returned
    /// for the driver to translate.
    public func send(_ what: String, throttled: (CloudResponse) -> Bool, _ make: () throws -> CloudRequest) async throws -> CloudResponse {
        var attempt = 0
        while true {
            attempt += 1
            let response = try await once(what, try make())
            guard throttled(response) else { return response }
            guard attempt < retry.maxAttempts else {
                throw KeystoreError(.unavailable, "\(provider.displayName) throttled \(what) \(attempt) times in a row; try again shortly or raise the request quota",
                                    detail: "HTTP \(response.status)")
            }
            let retryAfter = response.headers.first(name: "Retry-After").flatMap(Int.init).map { Duration.seconds($0) }
            try await Task.sleep(for: retry.delay(after: attempt, retryAfter: retryAfter))
        }
    }

    func once(_ what: String, _ request: CloudRequest) async throws -> CloudResponse {
        var outgoing = HTTPClientRequest(url: request.url)
        outgoing.method = request.method
        for (name, value) in request.headers { outgoing.headers.add(name: name, value: value) }
        if !request.body.isEmpty { outgoing.body = .bytes(ByteBuffer(bytes: request.body)) }
        let milliseconds = timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000
        do {
            let response = try await client.execute(outgoing, timeout: .milliseconds(milliseconds))
            let body = try await response.body.collect(upTo: Self.maxBody)
            return CloudResponse(status: Int(response.status.code), headers: response.headers, body: Array(buffer: body))
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout {
            throw KeystoreError(.unavailable, "\(provider.displayName) did not answer \(what) within \(milliseconds) ms", detail: "\(error)")
        } catch let error as KeystoreError {
            throw error
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw KeystoreError(.unavailable, "\(provider.displayName) cannot be reached for \(what): \(Self.describe(error))", detail: "\(error)")
        }
    }

    /// A short cause for the operator; the full error stays in `detail`.
    static func describe(_ error: any Error) -> String {
        let text = "\(error)"
        if text.contains("connectionRefused") || text.contains("Connection refused") { return "connection refused (is the endpoint right?)" }
        if text.contains("NIOConnectionError") || text.contains("connect") { return "the connection failed" }
        if text.contains("TLS") || text.contains("SSL") || text.contains("certificate") { return "the TLS handshake failed" }
        return "the request failed"
    }
}

/// Where a credential comes from: a file named in the keystore's configuration, or an
/// environment variable. Read when needed, never stored in the registry, never logged; errors
/// name the source, not the value.
public enum SecretSource: Sendable, Equatable, CustomStringConvertible {
    case file(String)
    case environment(String)

    public func read() throws -> String {
        switch self {
        case .file(let path):
            guard let data = FileManager.default.contents(atPath: path) else {
                throw KeystoreError(.invalidInput, "cannot read the credential file \(path)")
            }
            let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard !text.isEmpty else { throw KeystoreError(.invalidInput, "the credential file \(path) is empty") }
            return text
        case .environment(let name):
            guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else {
                throw KeystoreError(.invalidInput, "the environment variable \(name) is not set")
            }
            return value
        }
    }

    public var description: String {
        switch self {
        case .file(let path): return "file \(path)"
        case .environment(let name): return "environment variable \(name)"
        }
    }
}

/// Endpoint URLs come from configuration only. Plain HTTP is accepted for loopback (local
/// emulators in tests), never for a remote host.
public func checkedEndpoint(_ text: String, what: String) throws -> String {
    guard let url = URLComponents(string: text), let scheme = url.scheme?.lowercased(), let host = url.host, !host.isEmpty else {
        throw KeystoreError(.invalidInput, "\(what) is not a URL: \(text)")
    }
    let loopback = ["127.0.0.1", "localhost", "::1", "[::1]"].contains(host.lowercased())
    guard scheme == "https" || (scheme == "http" && loopback) else {
        throw KeystoreError(.invalidInput, "\(what) must use https (plain http only for a loopback emulator): \(text)")
    }
    return text.hasSuffix("/") ? String(text.dropLast()) : text
}

extension Data {
    /// base64url without padding (RFC 4648 §5), as JWTs and Azure's JSON Web Keys use.
    public var base64URLEncoded: String {
        base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    public init?(base64URLEncoded text: String) {
        var base = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base += String(repeating: "=", count: (4 - base.count % 4) % 4)
        self.init(base64Encoded: base)
    }
}

/// How long the operation took, for probe reports.
public func milliseconds(since start: ContinuousClock.Instant) -> Double {
    let elapsed = ContinuousClock.now - start
    return Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
}

/// Collects a cloud probe's checks in order and makes the report: the same shape and the same
/// check names as the PKCS#11 probe where they mean the same thing.
public struct ProbeBuilder: Sendable {
    let key: String
    let token: String
    let provider: Provider
    let start = ContinuousClock.now
    public var mechanism: String?
    public private(set) var checks: [ProbeReport.Check] = []

    public init(key: String, token: String, provider: Provider) {
        self.key = key
        self.token = token
        self.provider = provider
    }

    public mutating func pass(_ name: String, _ detail: String) {
        checks.append(ProbeReport.Check(name, passed: true, detail))
    }

    /// The report of a probe that failed at `name`.
    public func failed(_ name: String, _ error: KeystoreError) -> ProbeReport {
        var checks = checks
        checks.append(ProbeReport.Check(name, passed: false, error.reason))
        return ProbeReport(key: key, token: token, provider: provider, passed: false, mechanism: mechanism,
                           latencyMilliseconds: milliseconds(since: start), checks: checks,
                           failure: .init(code: error.code, reason: error.reason, detail: error.detail))
    }

    /// The report of a probe that failed at `name`; an error from outside the KSI is reported
    /// as an unexpected `operation` failure, by type only.
    public func failed(_ name: String, _ error: any Error) -> ProbeReport {
        if let error = error as? KeystoreError { return failed(name, error) }
        return failed("operation", KeystoreError(.internal, "unexpected \(type(of: error))"))
    }

    public func passed() -> ProbeReport {
        ProbeReport(key: key, token: token, provider: provider, passed: true, mechanism: mechanism,
                    latencyMilliseconds: milliseconds(since: start), checks: checks, failure: nil)
    }
}

extension SecretBytes {
    /// Random bytes in wiped memory (test keys, L2 keys where a KMS cannot make them).
    public static func random(count: Int) -> SecretBytes {
        let secret = SecretBytes(count: count)
        secret.withUnsafeMutableBytes { buffer in
            var generator = SystemRandomNumberGenerator()
            for index in buffer.indices { buffer[index] = generator.next() }
        }
        return secret
    }

    /// Key material a KMS returned in base64: decoded into wiped memory; the intermediate
    /// buffer is zeroed.
    public static func decodingBase64(_ text: String, what: String) throws -> SecretBytes {
        guard var bytes = Data(base64Encoded: text).map({ [UInt8]($0) }) else {
            throw KeystoreError(.internal, "the \(what) in the answer is not base64")
        }
        defer { for index in bytes.indices { bytes[index] = 0 } }
        let secret = SecretBytes(count: bytes.count)
        secret.withUnsafeMutableBytes { $0.copyBytes(from: bytes) }
        return secret
    }
}
