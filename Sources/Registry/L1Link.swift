import Foundation
import GRDB

/// Where a link stands. `REVOKED` is final: the schema refuses to move a link out of it
/// (restoring access is a new handshake, which makes a new link).
public enum LinkState: String, Codable, Sendable, CaseIterable {
    case pendingValidation = "PENDING_VALIDATION"
    case linked = "LINKED"
    case revoked = "REVOKED"
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
    public var state: LinkState
    public var lastProbeAt: Date?
    public var lastProbePassed: Bool?
    /// The JSON text of the KSI's `ProbeReport`.
    public var lastProbeReport: String?
    public var createdAt: Date
    public var revokedAt: Date?
    /// Starts at 1, +1 on every change; the ETag.
    public var version: Int

    public init(id: String, tenantID: String, provider: String, keystoreID: String, keyReference: String,
                state: LinkState, lastProbeAt: Date?, lastProbePassed: Bool?, lastProbeReport: String?,
                createdAt: Date, revokedAt: Date?, version: Int) {
        self.id = id
        self.tenantID = tenantID
        self.provider = provider
        self.keystoreID = keystoreID
        self.keyReference = keyReference
        self.state = state
        self.lastProbeAt = lastProbeAt
        self.lastProbePassed = lastProbePassed
        self.lastProbeReport = lastProbeReport
        self.createdAt = createdAt
        self.revokedAt = revokedAt
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
            state: state,
            lastProbeAt: (row["last_probe_at"] as Int64?).map(Date.init(registryMilliseconds:)),
            lastProbePassed: row["last_probe_passed"],
            lastProbeReport: row["last_probe_report"],
            createdAt: Date(registryMilliseconds: row["created_at"]),
            revokedAt: (row["revoked_at"] as Int64?).map(Date.init(registryMilliseconds:)),
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
