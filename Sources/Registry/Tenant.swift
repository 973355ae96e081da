public import Foundation
import Storage

/// A customer of the platform: the boundary inside which L1 links, L2 keys and handshake
/// attempts live. Nothing crosses it.
public struct Tenant: Codable, Sendable, Equatable {
    /// 1–63 characters of `[a-z0-9-]`, not starting or ending with `-` (a DNS label, so it can
    /// appear in host names, paths and PKCS#11 labels without escaping).
    public var id: String
    /// 1–200 characters, no control characters.
    public var name: String
    public var createdAt: Date
    /// The regions whose nodes may unseal the tenant's L2; nil: every region.
    public var allowedRegions: [String]?
    /// Starts at 1; the ETag.
    public var version: Int

    public init(id: String, name: String, createdAt: Date, allowedRegions: [String]? = nil, version: Int) {
        self.id = id
        self.name = name
        self.createdAt = createdAt
        self.allowedRegions = allowedRegions
        self.version = version
    }

    /// Whether a node of `region` may unseal this tenant's L2.
    public func allows(region: String) -> Bool { allowedRegions.map { $0.contains(region) } ?? true }
}

extension Tenant {
    init(row: Row) {
        self.init(
            id: row["id"],
            name: row["name"],
            createdAt: Date(registryMilliseconds: row["created_at"]),
            allowedRegions: (row["allowed_regions"] as String?).flatMap { try? JSONDecoder().decode([String].self, from: Data($0.utf8)) },
            version: row["version"]
        )
    }

    static func fetch(_ db: Database, id: String) throws -> Tenant? {
        try Row.fetchOne(db, sql: "SELECT * FROM tenant WHERE id = ?", arguments: [id]).map(Tenant.init(row:))
    }

    /// The tenant, or `notFound`: the first check of every tenant-scoped operation.
    static func require(_ db: Database, id: String) throws -> Tenant {
        guard let tenant = try fetch(db, id: id) else {
            throw RegistryError(.notFound, "no tenant \(id)")
        }
        return tenant
    }
}
