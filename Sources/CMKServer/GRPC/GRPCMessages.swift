import AuditFormat
import CMKCore
import CMKProto
import ControlPlane
import Foundation
import KSI
import Orbital
import Registry
import SwiftProtobuf

/// The gRPC API's resource names (AIP-122): parsed strictly, so that a malformed name is
/// INVALID_ARGUMENT and never a lookup of something else.
enum ResourceName {
    /// `collection/{id}` → id; a bare id is accepted where the proto says so.
    static func id(_ name: String, _ collection: String, field: String, bareAllowed: Bool = false) throws -> String {
        let parts = name.split(separator: "/", omittingEmptySubsequences: false)
        if parts.count == 2, parts[0] == collection, !parts[1].isEmpty { return String(parts[1]) }
        if bareAllowed, parts.count == 1, !name.isEmpty { return name }
        throw DomainError.invalidInput("\(field) must be a name of the form \(collection)/{id}")
    }

    static func tenant(_ name: String, field: String = "name") throws -> String { try id(name, "tenants", field: field) }

    /// `tenants/{tenant}/l1Links/{link}` (and, for a revocation, the same with `/revocation`).
    static func link(_ name: String, field: String = "name", revocation: Bool = false) throws -> (tenant: String, link: String) {
        var parts = name.split(separator: "/", omittingEmptySubsequences: false)
        if revocation, parts.count == 5, parts[4] == "revocation" { parts.removeLast() }
        guard parts.count == 4, parts[0] == "tenants", parts[2] == "l1Links", !parts[1].isEmpty, !parts[3].isEmpty else {
            throw DomainError.invalidInput("\(field) must be a name of the form tenants/{tenant}/l1Links/{link}"
                                           + (revocation ? "[/revocation]" : ""))
        }
        return (String(parts[1]), String(parts[3]))
    }

    static func tenantName(_ id: String) -> String { "tenants/\(id)" }
    static func linkName(tenant: String, link: String) -> String { "tenants/\(tenant)/l1Links/\(link)" }
}

/// Paging as AIP-158 has it: `page_size` 0 means the default, a token is the REST cursor.
enum Paging {
    static func limit(_ size: Int32, defaultSize: Int = 50, maximum: Int = 500) throws -> Int {
        if size == 0 { return defaultSize }
        guard (1...Int32(maximum)).contains(size) else { throw DomainError.invalidInput("page_size must be between 0 and \(maximum)") }
        return Int(size)
    }

    static func token(_ text: String) -> String? { text.isEmpty ? nil : text }

    /// An etag is the resource's version; an empty one asks for no check.
    static func version(_ etag: String) throws -> Int? {
        if etag.isEmpty { return nil }
        let bare = etag.hasPrefix("\"") && etag.hasSuffix("\"") && etag.count >= 3 ? String(etag.dropFirst().dropLast()) : etag
        guard let version = Int(bare), version >= 0 else { throw DomainError.invalidInput("etag must be one the API returned, such as \"3\"") }
        return version
    }
}

/// Domain values as the gRPC API's messages. Registry records are never sent whole:
/// bindings stay inside, as in the REST answers.
enum GRPCMessages {
    static func timestamp(_ date: Date) -> Google_Protobuf_Timestamp { Google_Protobuf_Timestamp(date: date) }

    static func tenant(_ tenant: Tenant) -> Openkcm_Cmk_V1_Tenant {
        var message = Openkcm_Cmk_V1_Tenant()
        message.name = ResourceName.tenantName(tenant.id)
        message.displayName = tenant.name
        if let regions = tenant.allowedRegions { message.allowedRegions = .with { $0.regions = regions } }
        message.createTime = timestamp(tenant.createdAt)
        message.etag = String(tenant.version)
        return message
    }

    static func keystore(_ keystore: Gateway.ConfiguredKeystore, _ status: TokenStatus) -> Openkcm_Cmk_V1_Keystore {
        .with {
            $0.name = "keystores/\(keystore.id)"
            $0.provider = keystore.provider.rawValue
            $0.profile = keystore.profileName
            $0.status = .with { s in
                switch status.state {
                case .available: s.state = .available
                case .unavailable: s.state = .unavailable
                case .loginRefused: s.state = .loginRefused
                case .notConnected: s.state = .notConnected
                }
                s.reason = status.reason ?? ""
                s.label = status.label ?? ""
                s.serial = status.serial ?? ""
                s.manufacturer = status.manufacturer ?? ""
                s.model = status.model ?? ""
                s.wrapMechanisms = status.wrapMechanisms
            }
        }
    }

    static func key(_ key: KeyDescription) -> Openkcm_Cmk_V1_KeystoreKey {
        var message = Openkcm_Cmk_V1_KeystoreKey()
        message.uri = key.uri
        message.label = key.label
        message.idHex = key.idHex
        message.objectClass = key.objectClass
        message.keyType = key.keyType ?? ""
        message.bits = UInt32(key.bits ?? 0)
        message.tokenObject = key.tokenObject
        if let value = key.canWrap { message.canWrap = value }
        if let value = key.canUnwrap { message.canUnwrap = value }
        if let value = key.sensitive { message.sensitive = value }
        if let value = key.extractable { message.extractable = value }
        message.usableAsL1 = key.usableAsL1
        message.state = key.state ?? ""
        message.aliases = key.aliases ?? []
        message.reason = key.reason ?? ""
        return message
    }

    static func linkState(_ state: LinkState) -> Openkcm_Cmk_V1_L1Link.State {
        switch state {
        case .pendingValidation: .pendingValidation
        case .linked: .linked
        case .revoked: .revoked
        case .shredScheduled: .shredScheduled
        case .shredded: .shredded
        }
    }

    static func link(_ link: L1Link, l2: L2Key?) -> Openkcm_Cmk_V1_L1Link {
        var message = Openkcm_Cmk_V1_L1Link()
        message.name = ResourceName.linkName(tenant: link.tenantID, link: link.id)
        message.provider = link.provider
        message.keystore = "keystores/\(link.keystoreID)"
        message.keyReference = link.keyReference
        message.l1Version = Int32(link.l1Version)
        message.state = linkState(link.state)
        message.epoch = Int32(link.epoch)
        if let at = link.lastProbeAt, let passed = link.lastProbePassed {
            message.lastProbe = .with {
                $0.probeTime = timestamp(at)
                $0.passed = passed
                if let text = link.lastProbeReport, let report = try? JSONDecoder().decode(ProbeReport.self, from: Data(text.utf8)) {
                    $0.report = probeReport(report)
                }
            }
        }
        if let l2 {
            message.l2 = .with {
                $0.ref = l2.id
                switch l2.state {
                case .active: $0.state = .active
                case .locked: $0.state = .locked
                case .shredded: $0.state = .shredded
                }
                $0.ivkVersion = Int32(l2.activeIVKVersion ?? 0)
                $0.l1Version = Int32(l2.sovereignL1Version ?? 0)
                if let at = l2.shreddedAt { $0.shredTime = timestamp(at) }
                if let digest = l2.shreddedBindingSHA256 { $0.shreddedBindingSha256 = Data(digest) }
            }
        }
        message.createTime = timestamp(link.createdAt)
        if let at = link.revokedAt { message.revokeTime = timestamp(at) }
        if let at = link.restoredAt { message.restoreTime = timestamp(at) }
        if let at = link.shredAfter { message.shredAfterTime = timestamp(at) }
        if let at = link.shreddedAt { message.shredTime = timestamp(at) }
        message.etag = String(link.version)
        return message
    }

    static func probeReport(_ report: ProbeReport) -> Openkcm_Cmk_V1_ProbeReport {
        .with {
            $0.key = report.key
            $0.token = report.token
            $0.provider = report.provider.rawValue
            $0.passed = report.passed
            $0.mechanism = report.mechanism ?? ""
            $0.latencyMilliseconds = report.latencyMilliseconds
            $0.checks = report.checks.map { check in .with { $0.name = check.name; $0.passed = check.passed; $0.detail = check.detail } }
            if let failure = report.failure {
                $0.failure = .with { f in f.code = failure.code.rawValue; f.reason = failure.reason; f.detail = failure.detail ?? "" }
            }
        }
    }

    static func revocationResult(_ result: ManagementOperations.RevocationResult) -> Openkcm_Cmk_V1_RevocationResult {
        .with {
            $0.l1Link = link(result.link, l2: result.l2)
            $0.event = .with { e in e.id = result.event.id; e.type = result.event.type; e.createTime = timestamp(result.event.createdAt) }
        }
    }

    static func revocation(_ progress: RevocationProgress, tenant: String) -> Openkcm_Cmk_V1_Revocation {
        let acks = Dictionary(uniqueKeysWithValues: progress.acks.map { ($0.nodeID, $0) })
        var message = Openkcm_Cmk_V1_Revocation()
        let linkID = progress.event.linkID ?? ""
        message.name = ResourceName.linkName(tenant: tenant, link: linkID) + "/revocation"
        message.event = progress.event.id
        message.revokeTime = timestamp(progress.event.createdAt)
        message.linkState = linkState(progress.linkState)
        message.state = progress.verdict == .locked ? .locked : .revoked
        message.nodes = progress.expected.map { node in
            let ack = acks[node.id]
            return .with {
                $0.node = "nodes/\(node.id)"
                $0.region = node.region
                $0.acknowledged = ack != nil
                $0.signingKey = node.signingKey
                if let ack {
                    $0.keysDropped = Int32(ack.keysDropped)
                    $0.receiveTime = timestamp(ack.receivedAt)
                    $0.statement = ack.statement
                    $0.signature = ack.signature
                }
            }
        }
        message.missing = progress.expected.filter { acks[$0.id] == nil }.map { "nodes/\($0.id)" }
        if let bound = progress.exposureBound { message.exposureBoundTime = timestamp(bound) }
        return message
    }

    static func approval(_ request: ApprovalRequest, now: Date) -> Openkcm_Cmk_V1_Approval {
        var message = Openkcm_Cmk_V1_Approval()
        message.name = "approvals/\(request.id)"
        message.operation = request.operation.rawValue
        if let tenant = request.tenantID { message.tenant = ResourceName.tenantName(tenant) }
        message.target = request.target
        if case .object(let members)? = try? CanonicalJSON.parse(Array(request.parameters.utf8)) {
            for (key, value) in members { if let number = value.integerValue { message.parameters[key] = number } }
        }
        message.reason = request.reason ?? ""
        message.requestedBy = request.requestedBy
        message.requiredPeople = Int32(request.requiredApprovals + 1)
        message.approvals = Int32(request.approvals)
        message.state = approvalState(request.state(at: now))
        message.votes = request.votes.map { vote in
            .with { $0.approver = vote.approver; $0.decision = vote.decision.rawValue; $0.voteTime = timestamp(vote.at) }
        }
        message.createTime = timestamp(request.createdAt)
        message.expireTime = timestamp(request.expiresAt)
        if let at = request.decidedAt { message.decideTime = timestamp(at) }
        if let at = request.executedAt { message.executeTime = timestamp(at) }
        message.executedBy = request.executedBy ?? ""
        message.etag = String(request.version)
        return message
    }

    static func approvalState(_ state: ApprovalState) -> Openkcm_Cmk_V1_Approval.State {
        switch state {
        case .pending: .pending
        case .approved: .approved
        case .rejected: .rejected
        case .cancelled: .cancelled
        case .executed: .executed
        case .expired: .expired
        }
    }

    static func approvalState(_ state: Openkcm_Cmk_V1_Approval.State) throws -> ApprovalState? {
        switch state {
        case .unspecified: nil
        case .pending: .pending
        case .approved: .approved
        case .rejected: .rejected
        case .cancelled: .cancelled
        case .executed: .executed
        case .expired: .expired
        case .UNRECOGNIZED: throw DomainError.invalidInput("state is not a known approval state")
        }
    }

    static func node(_ view: ManagementOperations.NodeView) -> Openkcm_Cmk_V1_Node {
        var message = node(view.node)
        if let at = view.leaseExpiresAt { message.leaseExpireTime = timestamp(at) }
        message.connected = view.connected
        if let at = view.lastHeartbeatAt { message.lastHeartbeatTime = timestamp(at) }
        if let held = view.keysHeld { message.keysHeld = Int32(clamping: held) }
        return message
    }

    static func node(_ node: Node) -> Openkcm_Cmk_V1_Node {
        var message = Openkcm_Cmk_V1_Node()
        message.name = "nodes/\(node.id)"
        message.region = node.region
        message.enrolTime = timestamp(node.enrolledAt)
        if let at = node.lastSeenAt { message.lastSeenTime = timestamp(at) }
        if let at = node.disabledAt { message.disableTime = timestamp(at) }
        if let at = node.removedAt { message.removeTime = timestamp(at) }
        if let at = node.rekeyedAt { message.rekeyTime = timestamp(at) }
        return message
    }

    static func auditRecord(_ record: AuditRecord) throws -> Openkcm_Cmk_V1_AuditRecord {
        var message = Openkcm_Cmk_V1_AuditRecord()
        message.name = "auditRecords/\(record.seq)"
        message.seq = record.seq
        message.time = Google_Protobuf_Timestamp(seconds: record.time / 1000, nanos: Int32(record.time % 1000) * 1_000_000)
        message.operation = record.operation
        message.outcome = record.outcome.rawValue
        message.actorKind = record.actor.kind.rawValue
        message.actorID = record.actor.id
        message.authMethod = record.actor.authMethod
        message.tenant = record.tenant ?? ""
        message.errorCode = record.errorCode ?? ""
        message.canonicalJson = String(decoding: try record.jsonValue.canonicalBytes(), as: UTF8.self)
        return message
    }
}
