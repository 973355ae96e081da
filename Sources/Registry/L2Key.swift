public import Foundation
import Storage

/// `ACTIVE ⇄ LOCKED → SHREDDED`. A locked L2 has lost its active binding: only L1 can open its
/// sovereign binding again (a restore). A shredded L2 has lost both: it is gone for good.
public enum L2State: String, Codable, Sendable, CaseIterable {
    case active = "ACTIVE"
    case locked = "LOCKED"
    case shredded = "SHREDDED"
}

/// A tenant key, stored only wrapped. The Registry treats both bindings as opaque bytes.
public struct L2Key: Codable, Sendable, Equatable {
    /// The `L2Ref`, a UUID string.
    public var id: String
    public var tenantID: String
    public var linkID: String
    /// L2 wrapped by L1, then encrypted at rest under an IVK version. Kept after revocation;
    /// nil once shredded.
    public var sovereignBinding: Data?
    public var sovereignMechanism: String?
    public var sovereignIVKVersion: Int?
    /// The link's L1 version whose key wrapped the sovereign binding.
    public var sovereignL1Version: Int?
    /// L2 wrapped by the IVK, for fast unseal; nil once `LOCKED`.
    public var activeBinding: Data?
    public var activeMechanism: String?
    public var activeIVKVersion: Int?
    public var state: L2State
    public var createdAt: Date
    public var lockedAt: Date?
    public var restoredAt: Date?
    public var shreddedAt: Date?
    /// SHA-256 of the sealed sovereign binding the shred destroyed (the audit record names it too).
    public var shreddedBindingSHA256: Data?
    /// Starts at 1, +1 on every change.
    public var version: Int

    public init(id: String, tenantID: String, linkID: String, sovereignBinding: Data?, sovereignMechanism: String?,
                sovereignIVKVersion: Int?, sovereignL1Version: Int? = 1, activeBinding: Data?, activeMechanism: String?,
                activeIVKVersion: Int?, state: L2State, createdAt: Date, lockedAt: Date?, restoredAt: Date? = nil,
                shreddedAt: Date? = nil, shreddedBindingSHA256: Data? = nil, version: Int) {
        self.id = id
        self.tenantID = tenantID
        self.linkID = linkID
        self.sovereignBinding = sovereignBinding
        self.sovereignMechanism = sovereignMechanism
        self.sovereignIVKVersion = sovereignIVKVersion
        self.sovereignL1Version = sovereignL1Version
        self.activeBinding = activeBinding
        self.activeMechanism = activeMechanism
        self.activeIVKVersion = activeIVKVersion
        self.state = state
        self.createdAt = createdAt
        self.lockedAt = lockedAt
        self.restoredAt = restoredAt
        self.shreddedAt = shreddedAt
        self.shreddedBindingSHA256 = shreddedBindingSHA256
        self.version = version
    }
}

/// What the handshake hands to `createLink`: the freshly made L2, already wrapped both ways.
public struct NewL2: Sendable {
    /// The `L2Ref` to use, a UUID string (the caller makes it so that it can wrap with it as
    /// associated data before the record exists).
    public var id: String
    public var sovereignBinding: Data
    public var sovereignMechanism: String
    public var sovereignIVKVersion: Int
    public var activeBinding: Data
    public var activeMechanism: String
    public var activeIVKVersion: Int

    public init(id: String, sovereignBinding: Data, sovereignMechanism: String, sovereignIVKVersion: Int,
                activeBinding: Data, activeMechanism: String, activeIVKVersion: Int) {
        self.id = id
        self.sovereignBinding = sovereignBinding
        self.sovereignMechanism = sovereignMechanism
        self.sovereignIVKVersion = sovereignIVKVersion
        self.activeBinding = activeBinding
        self.activeMechanism = activeMechanism
        self.activeIVKVersion = activeIVKVersion
    }
}

extension L2Key {
    init(row: Row) throws {
        let stateText: String = row["state"]
        guard let state = L2State(rawValue: stateText) else {
            throw RegistryError(.invalidInput, "L2 key \(row["id"] as String) has an unknown state \(stateText)")
        }
        self.init(
            id: row["id"],
            tenantID: row["tenant_id"],
            linkID: row["link_id"],
            sovereignBinding: row["sovereign_binding"],
            sovereignMechanism: row["sovereign_mechanism"],
            sovereignIVKVersion: row["sovereign_ivk_version"],
            sovereignL1Version: row["sovereign_l1_version"],
            activeBinding: row["active_binding"],
            activeMechanism: row["active_mechanism"],
            activeIVKVersion: row["active_ivk_version"],
            state: state,
            createdAt: Date(registryMilliseconds: row["created_at"]),
            lockedAt: (row["locked_at"] as Int64?).map(Date.init(registryMilliseconds:)),
            restoredAt: (row["restored_at"] as Int64?).map(Date.init(registryMilliseconds:)),
            shreddedAt: (row["shredded_at"] as Int64?).map(Date.init(registryMilliseconds:)),
            shreddedBindingSHA256: row["shredded_binding_sha256"],
            version: row["version"]
        )
    }

    static func fetch(_ db: Database, id: String) throws -> L2Key? {
        try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM l2_key WHERE id = ?"), arguments: [id]).map(L2Key.init(row:))
    }

    static func fetch(_ db: Database, linkID: String) throws -> L2Key? {
        try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM l2_key WHERE link_id = ?"), arguments: [linkID]).map(L2Key.init(row:))
    }
}
