public import Foundation
import Storage

/// A rotation that re-wraps many records: `l1` moves every sovereign binding made by one L1 key
/// to another key (or a new version of the same cloud key), keeping each L2; `ivk` moves every
/// binding and sealed TOTP secret to a new IVK version. Items are handled in id order and each
/// commits with the job's cursor, so a crash resumes after the last item done.
public struct RotationJob: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable { case l1, ivk }
    public enum State: String, Codable, Sendable { case running = "RUNNING", completed = "COMPLETED" }

    public struct Failure: Codable, Sendable, Equatable {
        public var item: String
        public var code: String
        public var reason: String
        public var at: Date
    }

    public var id: String
    public var kind: Kind
    public var keystoreID: String?
    public var fromKey: String?
    public var toKeystoreID: String?
    public var toKey: String?
    public var fromIVKVersion: Int?
    public var toIVKVersion: Int?
    public var state: State
    public var total: Int
    public var done: Int
    public var failed: Int
    /// Which records the cursor walks (`links`; `l2`, then `accounts` for the IVK).
    public var phase: String
    public var cursor: String
    public var requestedBy: String
    public var createdAt: Date
    public var updatedAt: Date
    public var finishedAt: Date?
    public var failures: [Failure]
}

extension RotationJob {
    init(row: Row, failures: [Failure]) throws {
        guard let kind = Kind(rawValue: row["kind"]), let state = State(rawValue: row["state"]) else {
            throw RegistryError(.invalidInput, "rotation job \(row["id"] as String) has an unknown kind or state")
        }
        self.init(id: row["id"], kind: kind, keystoreID: row["keystore_id"], fromKey: row["from_key"], toKeystoreID: row["to_keystore_id"],
                  toKey: row["to_key"], fromIVKVersion: row["from_ivk_version"], toIVKVersion: row["to_ivk_version"], state: state,
                  total: row["total"], done: row["done"], failed: row["failed"], phase: row["phase"], cursor: row["cursor"],
                  requestedBy: row["requested_by"], createdAt: Date(registryMilliseconds: row["created_at"]),
                  updatedAt: Date(registryMilliseconds: row["updated_at"]),
                  finishedAt: (row["finished_at"] as Int64?).map(Date.init(registryMilliseconds:)), failures: failures)
    }

    static func fetch(_ db: Database, id: String) throws -> RotationJob? {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM rotation_job WHERE id = ?", arguments: [id]) else { return nil }
        let failures = try Row.fetchAll(db, sql: "SELECT * FROM rotation_failure WHERE job_id = ? ORDER BY at, item", arguments: [id])
            .map { Failure(item: $0["item"], code: $0["code"], reason: $0["reason"], at: Date(registryMilliseconds: $0["at"])) }
        return try RotationJob(row: row, failures: failures)
    }

    static func require(_ db: Database, id: String) throws -> RotationJob {
        guard let job = try fetch(db, id: id) else { throw RegistryError(.notFound, "no rotation job \(id)") }
        return job
    }
}

/// One link to rotate to a new L1 key, with its L2 (nil when the link has none).
public struct L1RotationItem: Sendable {
    public var link: L1Link
    public var l2: L2Key?
}

/// What an IVK rotation writes for one L2: the re-sealed sovereign binding and, if the L2 is
/// still active, the re-wrapped active binding (ignored if it was locked in the meantime).
public struct IVKRewrap: Sendable {
    public var l2ID: String
    public var sovereign: (sealed: Data, fromVersion: Int)?
    public var active: (binding: Data, mechanism: String, fromVersion: Int)?

    public init(l2ID: String, sovereign: (sealed: Data, fromVersion: Int)?, active: (binding: Data, mechanism: String, fromVersion: Int)?) {
        self.l2ID = l2ID
        self.sovereign = sovereign
        self.active = active
    }
}
