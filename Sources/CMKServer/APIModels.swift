import Audit
import AuditFormat
import CMKCore
import ControlPlane
import Foundation
import KSI
import Registry

/// What the API returns. Registry records are never returned as they are: bindings stay inside.
struct TenantResponse: Codable, Sendable {
    var id: String
    var name: String
    var createdAt: Date
    /// The regions whose nodes may unseal the tenant's L2; absent: every region.
    var allowedRegions: [String]?
    var version: Int

    init(_ tenant: Tenant) {
        id = tenant.id
        name = tenant.name
        createdAt = tenant.createdAt
        allowedRegions = tenant.allowedRegions
        version = tenant.version
    }
}

struct CreateTenantRequest: Codable, Sendable {
    var id: String
    var name: String
    var allowedRegions: [String]?
}

/// `PATCH /tenants/{t}`: `allowedRegions` is required (null: every region).
struct UpdateTenantRequest: Decodable, Sendable {
    var allowedRegions: [String]?

    enum CodingKeys: String, CodingKey { case allowedRegions }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        guard c.contains(.allowedRegions) else { throw DomainError.invalidInput("the body names allowedRegions (a list of regions, or null for every region)") }
        allowedRegions = try c.decodeIfPresent([String].self, forKey: .allowedRegions)
    }
}

struct RestoreRequest: Codable, Sendable {
    /// The approved request (when restores need more than one person).
    var approval: String?
}

struct ShredRequest: Codable, Sendable {
    var approval: String?
    /// At least `lifecycle.shredWaitingPeriodHours`, at most 720.
    var waitingPeriodHours: Int?
}

struct RotateLinkRequest: Codable, Sendable {
    /// The keystore of the new key; the link's own when absent.
    var keystore: String?
    var key: String
}

struct ProbeSummary: Codable, Sendable {
    var at: Date
    var passed: Bool
    var report: ProbeReport?
}

struct L2Summary: Codable, Sendable {
    var ref: String
    var state: String
    /// The IVK version of the active binding (absent unless ACTIVE).
    var ivkVersion: Int?
    /// The link's L1 version whose key made the sovereign binding (absent once shredded).
    var l1Version: Int?
    var shreddedAt: Date?
    /// Hex SHA-256 of the sealed sovereign binding the shred destroyed.
    var shreddedBindingSHA256: String?
}

struct LinkResponse: Codable, Sendable {
    var id: String
    var tenant: String
    var provider: String
    var keystore: String
    var keyReference: String
    /// 1 at the handshake, +1 at each L1 rotation.
    var l1Version: Int
    var state: String
    /// 1 at the handshake, +1 at each restore.
    var epoch: Int
    var lastProbe: ProbeSummary?
    var l2: L2Summary?
    var createdAt: Date
    var revokedAt: Date?
    var restoredAt: Date?
    /// While SHRED_SCHEDULED: when the shred runs unless cancelled.
    var shredAfter: Date?
    var shreddedAt: Date?
    var version: Int

    init(_ link: L1Link, l2: L2Key?) {
        id = link.id
        tenant = link.tenantID
        provider = link.provider
        keystore = link.keystoreID
        keyReference = link.keyReference
        l1Version = link.l1Version
        state = link.state.rawValue
        epoch = link.epoch
        if let at = link.lastProbeAt, let passed = link.lastProbePassed {
            lastProbe = ProbeSummary(at: at, passed: passed,
                                     report: link.lastProbeReport.flatMap { try? JSONDecoder().decode(ProbeReport.self, from: Data($0.utf8)) })
        }
        self.l2 = l2.map { L2Summary(ref: $0.id, state: $0.state.rawValue, ivkVersion: $0.activeIVKVersion, l1Version: $0.sovereignL1Version,
                                     shreddedAt: $0.shreddedAt, shreddedBindingSHA256: $0.shreddedBindingSHA256.map { Hex.encode(Array($0)) }) }
        createdAt = link.createdAt
        revokedAt = link.revokedAt
        restoredAt = link.restoredAt
        shredAfter = link.shredAfter
        shreddedAt = link.shreddedAt
        version = link.version
    }
}

struct RevocationResponse: Codable, Sendable {
    var link: LinkResponse
    var event: EventSummary

    struct EventSummary: Codable, Sendable {
        var id: String
        var type: String
        var createdAt: Date
    }
}

struct PageResponse<Item: Codable & Sendable>: Codable, Sendable {
    var items: [Item]
    var nextCursor: String?
}

/// A keystore's keys: all of them, or the first `KeyList.maxKeys` with `truncated` (present only
/// then, so a complete listing reads as it always did).
struct KeyListResponse: Codable, Sendable {
    var items: [KeyDescription]
    var truncated: Bool?
}

struct KeystoreResponse: Codable, Sendable {
    var id: String
    var provider: String
    var profile: String
    var status: TokenStatus
}
