import Foundation
import Storage

extension Registry {
    /// Adds the next IVK version (1 for the first). Versions are never reused or removed:
    /// records bound under an old version must stay readable until they are re-bound.
    public func addIVKVersion(keyReference: String) async throws -> IVKVersion {
        try Validation.keyReference(keyReference)
        let now = Date().registryMilliseconds
        return try await write { db in
            let next = (try Int.fetchOne(db, sql: "SELECT max(version) FROM ivk_version") ?? 0) + 1
            try db.execute(sql: "INSERT INTO ivk_version (version, key_reference, created_at) VALUES (?, ?, ?)",
                           arguments: [next, keyReference, now])
            return IVKVersion(version: next, keyReference: keyReference, createdAt: Date(registryMilliseconds: now))
        }
    }

    /// The highest version, the one new bindings use; nil before the first.
    public func currentIVK() async throws -> IVKVersion? {
        try await read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM ivk_version ORDER BY version DESC LIMIT 1").map(IVKVersion.init(row:))
        }
    }

    /// All versions, lowest first.
    public func ivkVersions() async throws -> [IVKVersion] {
        try await read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM ivk_version ORDER BY version").map(IVKVersion.init(row:))
        }
    }
}
