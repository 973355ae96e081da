/// The result of the noop handshake probe: each check in order, with what it found.
public struct ProbeReport: Sendable, Codable, Hashable {
    public struct Check: Sendable, Codable, Hashable {
        /// A stable identifier (`key_reference`, `token`, `login`, `key_found`, `key_type`,
        /// `key_usage`, `mechanism`, `test_key`, `wrap`, `unwrap`, `compare`, `cleanup`; the cloud
        /// and KMIP probes' `credentials`, `connection`, `key_state`, `context`, `binding`; or
        /// `operation` for an unexpected failure).
        public var name: String
        public var passed: Bool
        /// What was checked and found, in words.
        public var detail: String

        public init(_ name: String, passed: Bool, _ detail: String) {
            self.name = name
            self.passed = passed
            self.detail = detail
        }
    }

    public struct Failure: Sendable, Codable, Hashable {
        public var code: KeystoreError.Code
        public var reason: String
        public var detail: String?

        public init(code: KeystoreError.Code, reason: String, detail: String?) {
            self.code = code
            self.reason = reason
            self.detail = detail
        }
    }

    public var key: String
    public var token: String
    public var provider: Provider
    public var passed: Bool
    public var mechanism: String?
    public var latencyMilliseconds: Double
    public var checks: [Check]
    public var failure: Failure?

    public init(key: String, token: String, provider: Provider, passed: Bool, mechanism: String?,
                latencyMilliseconds: Double, checks: [Check], failure: Failure?) {
        self.key = key
        self.token = token
        self.provider = provider
        self.passed = passed
        self.mechanism = mechanism
        self.latencyMilliseconds = latencyMilliseconds
        self.checks = checks
        self.failure = failure
    }

    public var error: KeystoreError? {
        failure.map { KeystoreError($0.code, $0.reason, detail: $0.detail) }
    }
}
