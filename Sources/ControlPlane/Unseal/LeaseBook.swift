package import Foundation
import NIOConcurrencyHelpers
import Orbital
package import Registry

/// Every outstanding lease, by node and tenant: what bounds the exposure after a revocation (a
/// node may hold a key until its lease ends). Held in memory for the revocation view, and in
/// the registry (batched) so that a restart forgets no exposure.
package final class LeaseBook: Sendable {
    private struct Key: Hashable {
        var node: String
        var tenant: String
    }

    private let leases = NIOLockedValueBox<[Key: Date]>([:])
    /// Lease changes, stored in batches (a lease that ended, or whose key was dropped, is
    /// forgotten without waiting: keeping it a little longer only makes the exposure bound cautious).
    private let recorder: BatchWriter<LeaseChange, Void>

    private let registry: Registry

    package init(registry: Registry) {
        self.registry = registry
        recorder = BatchWriter { [registry] changes in
            try await registry.applyLeases(changes)
            return changes.map { _ in () }
        }
    }

    /// The leases the registry kept, at start.
    package func load(_ stored: [LeaseChange]) {
        leases.withLockedValue { leases in
            for lease in stored { if let expiresAt = lease.expiresAt { leases[Key(node: lease.node, tenant: lease.tenant)] = expiresAt } }
        }
    }

    /// A node was given a tenant's key until `expiresAt`; returns once the lease is durable.
    package func grant(node: String, tenant: String, until expiresAt: Date) async throws {
        leases.withLockedValue { $0[Key(node: node, tenant: tenant)] = expiresAt }
        try await recorder.submit(LeaseChange(node: node, tenant: tenant, expiresAt: expiresAt))
    }

    /// The node dropped the tenant's key (acknowledged a revocation, or its lease ran out).
    package func end(node: String, tenants: [String]) {
        leases.withLockedValue { leases in for tenant in tenants { leases[Key(node: node, tenant: tenant)] = nil } }
        for tenant in tenants { recorder.submitWithoutWaiting(LeaseChange(node: node, tenant: tenant, expiresAt: nil)) }
    }

    /// The latest lease end among all nodes, for one tenant or all. With replicas sharing the
    /// database, read from it (each replica grants leases of its own); if it cannot be read,
    /// this replica's, which is then marked as such by the caller's other failures.
    package func latestEnd(tenant: String? = nil) async -> Date? {
        if registry.isShared, let stored = try? await registry.latestLeaseEnd(tenant: tenant) { return stored }
        return leases.withLockedValue { leases in leases.filter { tenant == nil || $0.key.tenant == tenant }.values.max() }
    }

    /// The latest lease end of each node.
    package func latestEndByNode() async -> [String: Date] {
        if registry.isShared, let stored = try? await registry.latestLeaseEndByNode() { return stored }
        return leases.withLockedValue { leases in
            leases.reduce(into: [:]) { ends, lease in ends[lease.key.node] = max(ends[lease.key.node] ?? lease.value, lease.value) }
        }
    }
}
