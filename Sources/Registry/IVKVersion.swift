public import Foundation
import Storage

/// One version of the Internal Versioned Key: a reference to a key in the platform's own
/// token. Versions only grow; old ones stay so that records bound under them can be read.
public struct IVKVersion: Codable, Sendable, Equatable {
    public var version: Int
    public var keyReference: String
    public var createdAt: Date

    public init(version: Int, keyReference: String, createdAt: Date) {
        self.version = version
        self.keyReference = keyReference
        self.createdAt = createdAt
    }
}

extension IVKVersion {
    init(row: Row) {
        self.init(
            version: row["version"],
            keyReference: row["key_reference"],
            createdAt: Date(registryMilliseconds: row["created_at"])
        )
    }
}
