public import Foundation
import Storage

/// Where a link stands (Docs/Architecture.md, "The key lifecycle"):
///
///     PENDING_VALIDATION ─► LINKED ─revoke─► REVOKED ─restore (L1, approval)─► LINKED (epoch + 1)
///                                               │ ▲
///                                 shred (approval)│ │cancel
///                                               ▼ │
///                                          SHRED_SCHEDULED ─waiting period─► SHREDDED (final)
///
/// The schema allows exactly these transitions (`l1_link_transitions`).
public enum LinkState: String, Codable, Sendable, CaseIterable {
    case pendingValidation = "PENDING_VALIDATION"
    case linked = "LINKED"
    /// Locked: the L2 has no active binding; restorable with L1.
    case revoked = "REVOKED"
    /// Locked, with its destruction scheduled (`shredAfter`); cancellable until it runs.
    case shredScheduled = "SHRED_SCHEDULED"
    /// The sovereign binding and every copy destroyed: irreversible.
    case shredded = "SHREDDED"

    /// Revoked, scheduled for shredding or shredded: the kill-switch has been thrown.
    public var isRevoked: Bool { self == .revoked || self == .shredScheduled || self == .shredded }
    /// Revoked and not shredded: the L2 can still come back through L1.
    public var isRestorable: Bool { self == .revoked || self == .shredScheduled }
}

/// The binding of a tenant to its L1 key: a reference to a key in the customer's keystore
/// (`L1_External_Ref`), never the key, never a PIN.
public struct L1Link: Codable, Sendable, Equatable {
    /// A UUID string.
    public var id: String
    public var tenantID: String
    /// `pkcs11` now; later `aws-kms`, `azure-kv`, `gcp-kms`.
    public var provider: String
    public var keystoreID: String
    /// The `L1_External_Ref`: a PKCS#11 URI (without `pin-value`) or, later, an ARN etc.
    public var keyReference: String
    /// 1 at the handshake, +1 at each L1 rotation.
    public var l1Version: Int
    public var state: LinkState
    /// 1 at the handshake, +1 at each restore. Nodes refuse a key of an epoch they saw revoked.
    public var epoch: Int
    public var lastProbeAt: Date?
    public var lastProbePassed: Bool?
    /// The JSON text of the KSI's `ProbeReport`.
    public var lastProbeReport: String?
    public var createdAt: Date
    /// While revoked (or scheduled for shredding, or shredded): when the kill-switch was thrown.
    public var revokedAt: Date?
    /// The last restore.
    public var restoredAt: Date?
    /// While `SHRED_SCHEDULED`: when the shred runs.
    public var shredAfter: Date?
    public var shreddedAt: Date?
    /// Starts at 1, +1 on every change; the ETag.
    public var version: Int

    public init(id: String, tenantID: String, provider: String, keystoreID: String, keyReference: String, l1Version: Int = 1,
                state: LinkState, epoch: Int = 1, lastProbeAt: Date?, lastProbePassed: Bool?, lastProbeReport: String?,
                createdAt: Date, revokedAt: Date?, restoredAt: Date? = nil, shredAfter: Date? = nil, shreddedAt: Date? = nil,
                version: Int) {
        self.id = id
        self.tenantID = tenantID
        self.provider = provider
        self.keystoreID = keystoreID
        self.keyReference = keyReference
        self.l1Version = l1Version
        self.state = state
        self.epoch = epoch
        self.lastProbeAt = lastProbeAt
        self.lastProbePassed = lastProbePassed
        self.lastProbeReport = lastProbeReport
        self.createdAt = createdAt
        self.revokedAt = revokedAt
        self.restoredAt = restoredAt
        self.shredAfter = shredAfter
        self.shreddedAt = shreddedAt
        self.version = version
    }
}

extension L1Link {
    init(row: Row) throws {
        let stateText: String = row["state"]
        guard let state = LinkState(rawValue: stateText) else {
            // The schema's CHECK makes this unreachable; say so rather than trap.
            throw RegistryError(.invalidInput, "link \(row["id"] as String) has an unknown state \(stateText)")
        }
        self.init(
            id: row["id"],
            tenantID: row["tenant_id"],
            provider: row["provider"],
            keystoreID: row["keystore_id"],
            keyReference: row["key_reference"],
            l1Version: row["l1_version"],
            state: state,
            epoch: row["epoch"],
            lastProbeAt: (row["last_probe_at"] as Int64?).map(Date.init(registryMilliseconds:)),
            lastProbePassed: row["last_probe_passed"],
            lastProbeReport: row["last_probe_report"],
            createdAt: Date(registryMilliseconds: row["created_at"]),
            revokedAt: (row["revoked_at"] as Int64?).map(Date.init(registryMilliseconds:)),
            restoredAt: (row["restored_at"] as Int64?).map(Date.init(registryMilliseconds:)),
            shredAfter: (row["shred_after"] as Int64?).map(Date.init(registryMilliseconds:)),
            shreddedAt: (row["shredded_at"] as Int64?).map(Date.init(registryMilliseconds:)),
            version: row["version"]
        )
    }

    static func fetch(_ db: Database, id: String) throws -> L1Link? {
        // Cached statements: these run on every request that touches a link, and compiling
        // the SQL (with GRDB's authorizer) costs more than running it.
        try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM l1_link WHERE id = ?"), arguments: [id]).map(L1Link.init(row:))
    }

    /// Scoped to the tenant: a link of another tenant is reported exactly like a missing one.
    static func fetch(_ db: Database, tenantID: String, id: String) throws -> L1Link? {
        try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM l1_link WHERE id = ? AND tenant_id = ?"), arguments: [id, tenantID])
            .map(L1Link.init(row:))
    }
}
