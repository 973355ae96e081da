public import Crypto
public import Foundation
import NIOConcurrencyHelpers
public import NodeProtocol
public import Prometheus

/// Who may use the node's application API: an application presents a credential the gateway
/// signed (`AppCredential`), naming the tenants it may use; the node checks it offline against
/// the gateway's app credential key, its expiry, and the revocations the gateway pushed
/// (`credential.revoked`, and the full list at every connection). Deny by default: no key from
/// the gateway yet, no credential, a bad or revoked one, another tenant — refused and counted.
public final class AppAuthenticator: Sendable {
    public enum Refusal: String, Error, Sendable, CaseIterable {
        /// No credential (401).
        case missing
        /// Malformed, not signed by the gateway, or the node has no key to check it yet (401).
        case invalid
        case expired
        case revoked
        /// A valid credential for other tenants (403).
        case tenantNotAllowed = "tenant_not_allowed"
    }

    struct State {
        var key: Curve25519.Signing.PublicKey?
        /// Revoked credential id → its expiry (ms): kept until then, since after it the
        /// credential is refused anyway.
        var revoked: [String: Int64] = [:]
        var refusals: [Refusal: Int] = [:]
    }

    private let state = NIOLockedValueBox(State())
    private let now: @Sendable () -> Date
    /// `cmk_node_app_refusals_total{reason}` on the node's `/metrics`.
    let metrics: PrometheusCollectorRegistry
    private let counters: [Refusal: Prometheus.Counter]

    public init(metrics: PrometheusCollectorRegistry = PrometheusCollectorRegistry(), now: @escaping @Sendable () -> Date = { Date() }) {
        self.metrics = metrics
        self.now = now
        var counters: [Refusal: Prometheus.Counter] = [:]
        for refusal in Refusal.allCases {
            counters[refusal] = metrics.makeCounter(
                descriptor: MetricNameDescriptor(metricName: "cmk_node_app_refusals", unitName: "total",
                                                 helpText: "Application requests refused by the node, by reason"),
                labels: [("reason", refusal.rawValue)])
        }
        self.counters = counters
    }

    /// The gateway's app credential key (fetched at every connection).
    public func setKey(_ key: Curve25519.Signing.PublicKey) { state.withLockedValue { $0.key = key } }
    public var hasKey: Bool { state.withLockedValue { $0.key != nil } }

    /// Revocations: the full list at a connection (replacing what was known), or one event.
    public func setRevoked(_ revoked: [String: Int64]) { state.withLockedValue { $0.revoked = revoked } }
    public func revoke(id: String, expiresAt: Int64) { state.withLockedValue { $0.revoked[id] = expiresAt } }

    /// The credential's claims if it may use `tenant`; else the refusal (counted).
    public func check(_ authorization: String?, tenant: String) -> Result<AppCredential.Claims, Refusal> {
        let outcome = decide(authorization, tenant: tenant)
        if case .failure(let refusal) = outcome {
            state.withLockedValue { $0.refusals[refusal, default: 0] += 1 }
            counters[refusal]?.increment()
        }
        return outcome
    }

    private func decide(_ authorization: String?, tenant: String) -> Result<AppCredential.Claims, Refusal> {
        guard let authorization, authorization.count > 7, authorization.prefix(7).lowercased() == "bearer " else { return .failure(.missing) }
        let (key, revoked) = state.withLockedValue { ($0.key, $0.revoked) }
        guard let key, let claims = AppCredential.verify(String(authorization.dropFirst(7)), key: key) else { return .failure(.invalid) }
        let nowMillis = Int64((now().timeIntervalSince1970 * 1000).rounded(.down))
        guard claims.expiresAt > nowMillis else { return .failure(.expired) }
        guard revoked[claims.id] == nil else { return .failure(.revoked) }
        guard claims.tenants.contains(tenant) else { return .failure(.tenantNotAllowed) }
        return .success(claims)
    }

    /// Refusals so far, by reason (for the status page and tests).
    public var refusals: [Refusal: Int] { state.withLockedValue { $0.refusals } }

    /// Forgets revocations of credentials that expired.
    public func prune() {
        let nowMillis = Int64((now().timeIntervalSince1970 * 1000).rounded(.down))
        state.withLockedValue { $0.revoked = $0.revoked.filter { $0.value > nowMillis } }
    }
}
