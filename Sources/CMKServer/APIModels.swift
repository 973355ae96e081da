import Foundation
import KSI
import Registry

/// What the API returns. Registry records are never returned as they are: bindings stay inside.
struct TenantResponse: Codable, Sendable {
    var id: String
    var name: String
    var createdAt: Date
    var version: Int

    init(_ tenant: Tenant) {
        id = tenant.id
        name = tenant.name
        createdAt = tenant.createdAt
        version = tenant.version
    }
}

struct CreateTenantRequest: Codable, Sendable {
    var id: String
    var name: String
}

struct ProbeSummary: Codable, Sendable {
    var at: Date
    var passed: Bool
    var report: ProbeReport?
}

struct L2Summary: Codable, Sendable {
    var ref: String
    var state: String
    var ivkVersion: Int?
}

struct LinkResponse: Codable, Sendable {
    var id: String
    var tenant: String
    var provider: String
    var keystore: String
    var keyReference: String
    var state: String
    var lastProbe: ProbeSummary?
    var l2: L2Summary?
    var createdAt: Date
    var revokedAt: Date?
    var version: Int

    init(_ link: L1Link, l2: L2Key?) {
        id = link.id
        tenant = link.tenantID
        provider = link.provider
        keystore = link.keystoreID
        keyReference = link.keyReference
        state = link.state.rawValue
        if let at = link.lastProbeAt, let passed = link.lastProbePassed {
            lastProbe = ProbeSummary(at: at, passed: passed,
                                     report: link.lastProbeReport.flatMap { try? JSONDecoder().decode(ProbeReport.self, from: Data($0.utf8)) })
        }
        self.l2 = l2.map { L2Summary(ref: $0.id, state: $0.state.rawValue, ivkVersion: $0.activeIVKVersion) }
        createdAt = link.createdAt
        revokedAt = link.revokedAt
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

struct KeystoreResponse: Codable, Sendable {
    var id: String
    var provider: String
    var profile: String
    var status: TokenStatus
}
