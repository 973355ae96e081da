import Audit
import AuditFormat
import CMKCore
@testable import CMKServer
import ControlPlane
import Crypto
import Foundation
import Hummingbird
import HummingbirdTesting
import KSI
import PKCS11
import Registry
import TestSupport
import Testing

/// Restore with L1 and four-eyes approval, crypto-shred with its waiting period, the fence
/// around a revoked binding, rotations, and the separation of duties, through the Management
/// API on SoftHSM.
@Suite(.serialized) struct LifecycleAPITests {
    typealias Client = any TestClientProtocol

    static func body(_ text: String) -> ByteBuffer { ServerHarness.body(text) }

    static func code(_ response: TestResponse) -> String? { response.errorCode }

    static func call(_ client: Client, _ method: HTTPRequest.Method, _ uri: String, _ text: String? = nil,
                     as headers: HTTPFields = ServerHarness.auth) async throws -> TestResponse {
        try await client.execute(uri: uri, method: method, headers: headers, body: text.map(body))
    }

    /// A tenant linked to `key` on `keystore`; returns the link id.
    static func linked(_ client: Client, _ tenant: String, keystore: String = "hsm", key: String = "pkcs11:object=l1") async throws -> String {
        #expect(try await call(client, .post, "/api/v1/tenants", #"{"id":"\#(tenant)","name":"\#(tenant)"}"#).status == .created)
        let created = try await call(client, .post, "/api/v1/tenants/\(tenant)/l1-links",
                                     #"{"provider":"pkcs11","keystore":"\#(keystore)","key":"\#(key)"}"#)
        try #require(created.status == .created, "handshake: \(created.text)")
        return try #require(try created.json()["id"] as? String)
    }

    static func revoke(_ client: Client, _ tenant: String, _ link: String) async throws {
        let revoked = try await call(client, .post, "/api/v1/tenants/\(tenant)/l1-links/\(link)/revoke")
        try #require(revoked.status == .ok, "revoke: \(revoked.text)")
    }

    /// A second security administrator, logged in (a fresh second factor).
    static func secondAdmin(_ client: Client, _ gateway: Gateway, _ name: String = "bob",
                            role: AdminRole = .securityAdmin) async throws -> TestUser {
        var user = try await TestUser.make(gateway, name, role: role)
        try await user.logIn(client)
        return user
    }

    /// A request by the harness administrator, approved by `approver`; returns its id.
    static func approved(_ client: Client, _ operation: String, _ tenant: String, _ link: String, by approver: TestUser,
                         extra: String = "") async throws -> String {
        let requested = try await call(client, .post, "/api/v1/approvals",
                                       #"{"operation":"\#(operation)","tenant":"\#(tenant)","link":"\#(link)"\#(extra)}"#)
        try #require(requested.status == .created, "request: \(requested.text)")
        let id = try #require(try requested.json()["id"] as? String)
        let approval = try await call(client, .post, "/api/v1/approvals/\(id)/approve", as: approver.headers)
        try #require(approval.status == .ok, "approve: \(approval.text)")
        #expect(try approval.json()["state"] as? String == "APPROVED")
        return id
    }

    /// The L2 bytes behind an active binding, read with the platform token (the test plays the
    /// platform operator who holds it).
    static func material(_ gateway: Gateway, _ l2: L2Key) async throws -> [UInt8] {
        let binding = try #require(l2.activeBinding)
        let ivk = try await gateway.ivkReference(version: try #require(l2.activeIVKVersion))
        let key = try await gateway.platform.unwrap(WrappedKey(mechanism: try #require(l2.activeMechanism), blob: Array(binding)), with: ivk)
        return key.withUnsafeBytes { Array($0) }
    }

    /// Makes (or replaces) an AES-256 wrapping key on a fixture token.
    static func makeKey(_ fixture: SoftHSMFixture, token: String, label: String, replacing: Bool = false) async throws {
        let pool = try fixture.pool(token, maxSessions: 1)
        do {
            try await pool.withSession { session in
                let existing = try session.findObjects([.class(.secretKey), .label(label)])
                if replacing { for object in existing { try session.destroyObject(object) } }
                if replacing || existing.isEmpty {
                    _ = try session.generateAESKey(bits: 256, token: true, label: label,
                                                   usages: [.encrypt(true), .decrypt(true), .wrap(true), .unwrap(true)], sensitive: true,
                                                   extractable: false)
                }
            }
        } catch {
            await pool.shutdown()
            throw error
        }
        await pool.shutdown()
    }

    static func deleteKey(_ fixture: SoftHSMFixture, token: String, label: String) async throws {
        let pool = try fixture.pool(token, maxSessions: 1)
        try await pool.withSession { session in
            for object in try session.findObjects([.class(.secretKey), .label(label)]) { try session.destroyObject(object) }
        }
        await pool.shutdown()
    }

    static func auditCount(_ gateway: Gateway, _ operation: String, target: String? = nil) throws -> Int {
        try gateway.audit.store.records(AuditQuery(operation: operation, limit: 500)).records.filter { target == nil || $0.target == target }.count
    }

    // MARK: Restore

    @Test(arguments: ["hsm", "other"])
    func aRestoreWithASecondAdministratorsApprovalBringsTheSameL2Back(keystore: String) async throws {
        try await ServerHarness().test { client, gateway in
            let tenant = "restore-\(keystore)"
            let link = try await Self.linked(client, tenant, keystore: keystore)
            let before = try await Self.material(gateway, try #require(try await gateway.registry.l2Key(linkID: link)))
            let l2Ref = try #require(try await gateway.registry.l2Key(linkID: link)?.id)
            try await Self.revoke(client, tenant, link)
            let bob = try await Self.secondAdmin(client, gateway)
            let restoreURI = "/api/v1/tenants/\(tenant)/l1-links/\(link)/restore"

            // Alone, the requester gets nowhere.
            let alone = try await Self.call(client, .post, restoreURI, "{}")
            #expect(alone.status == .forbidden && alone.errorCode == "approval_required", "\(alone.text)")
            let requested = try await Self.call(client, .post, "/api/v1/approvals",
                                                #"{"operation":"link.restore","tenant":"\#(tenant)","link":"\#(link)","reason":"customer's L1 is back"}"#)
            #expect(requested.status == .created, "\(requested.text)")
            let request = try requested.json()
            let id = try #require(request["id"] as? String)
            #expect(request["state"] as? String == "PENDING" && request["requiredPeople"] as? Int == 2 && request["requestedBy"] as? String == "harness-admin")
            let duplicate = try await Self.call(client, .post, "/api/v1/approvals", #"{"operation":"link.restore","tenant":"\#(tenant)","link":"\#(link)"}"#)
            #expect(duplicate.status == .conflict && duplicate.errorCode == "approval_pending")
            let selfApproval = try await Self.call(client, .post, "/api/v1/approvals/\(id)/approve")
            #expect(selfApproval.status == .forbidden && selfApproval.errorCode == "self_approval")
            let pending = try await Self.call(client, .post, restoreURI, #"{"approval":"\#(id)"}"#)
            #expect(pending.status == .forbidden && pending.errorCode == "approval_required")
            // Visible to both, in the list.
            let listed = try await Self.call(client, .get, "/api/v1/approvals?state=PENDING", as: bob.headers)
            #expect(try (listed.json()["items"] as? [[String: Any]])?.compactMap { $0["id"] as? String } == [id])
            let approved = try await Self.call(client, .post, "/api/v1/approvals/\(id)/approve", as: bob.headers)
            #expect(try approved.status == .ok && (approved.json()["state"] as? String) == "APPROVED", "\(approved.text)")
            let twice = try await Self.call(client, .post, "/api/v1/approvals/\(id)/approve", as: bob.headers)
            #expect(twice.status == .conflict && twice.errorCode == "already_voted")
            #expect(try await gateway.registry.link(tenantID: tenant, id: link).state == .revoked, "approval alone changes nothing")

            let restored = try await Self.call(client, .post, restoreURI, #"{"approval":"\#(id)"}"#)
            #expect(restored.status == .ok, "\(restored.text)")
            let answer = try #require(try restored.json()["link"] as? [String: Any])
            #expect(answer["state"] as? String == "LINKED" && answer["epoch"] as? Int == 2 && answer["id"] as? String == link)
            #expect((answer["l2"] as? [String: Any])?["ref"] as? String == l2Ref && (answer["l2"] as? [String: Any])?["state"] as? String == "ACTIVE")
            #expect(try (restored.json()["event"] as? [String: Any])?["type"] as? String == "l1.restored")
            // The same L2: the bytes under the new active binding are the ones before the revocation.
            let after = try await Self.material(gateway, try #require(try await gateway.registry.l2Key(linkID: link)))
            #expect(after == before)
            // Used once; the link is live again.
            let used = try await Self.call(client, .get, "/api/v1/approvals/\(id)")
            #expect(try (used.json()["state"] as? String) == "EXECUTED" && (used.json()["executedBy"] as? String) == "harness-admin")
            let again = try await Self.call(client, .post, restoreURI, #"{"approval":"\#(id)"}"#)
            #expect(again.status == .conflict && again.errorCode == "link_not_revoked")
            // Every step is on the record, with the L1 requests it made.
            #expect(try Self.auditCount(gateway, "approval.request") == 2)
            #expect(try Self.auditCount(gateway, "approval.approve") == 3)
            #expect(try Self.auditCount(gateway, "link.restore", target: link) == 4)
            let l1Unwraps = try gateway.audit.store.records(AuditQuery(operation: "l1.unwrap", limit: 500)).records
            #expect(l1Unwraps.contains { $0.target == link && $0.outcome == .success })
        }
    }

    @Test func aRestoreIsRefusedWhenL1IsGoneOrWasReplacedAndChangesNothing() async throws {
        let harness = try ServerHarness()
        try await Self.makeKey(harness.fixture, token: "server-b", label: "swap-l1", replacing: true)
        try await harness.test { client, gateway in
            let link = try await Self.linked(client, "swap", keystore: "other", key: "pkcs11:object=swap-l1")
            try await Self.revoke(client, "swap", link)
            let bob = try await Self.secondAdmin(client, gateway)
            let id = try await Self.approved(client, "link.restore", "swap", link, by: bob)
            let before = (try await gateway.registry.link(tenantID: "swap", id: link), try await gateway.registry.l2Key(linkID: link))

            // The customer replaced the key with another of the same name: it probes fine, but
            // the sovereign binding does not open.
            try await Self.makeKey(harness.fixture, token: "server-b", label: "swap-l1", replacing: true)
            let mismatch = try await Self.call(client, .post, "/api/v1/tenants/swap/l1-links/\(link)/restore", #"{"approval":"\#(id)"}"#)
            #expect(mismatch.status == .conflict && mismatch.errorCode == "l1_key_mismatch", "\(mismatch.text)")
            #expect(mismatch.text.contains("not the key the L2 was bound to"))
            // The key is gone altogether: the probe says so, in its words.
            try await Self.deleteKey(harness.fixture, token: "server-b", label: "swap-l1")
            let gone = try await Self.call(client, .post, "/api/v1/tenants/swap/l1-links/\(link)/restore", #"{"approval":"\#(id)"}"#)
            #expect(gone.status == .unprocessableContent && gone.errorCode == "probe_failed", "\(gone.text)")
            let probe = try #require((try gone.json()["error"] as? [String: Any])?["probe"] as? [String: Any])
            #expect((probe["checks"] as? [[String: Any]])?.last?["name"] as? String == "key_found")
            // Nothing changed; the approval is still there to use once L1 is back.
            #expect(try await gateway.registry.link(tenantID: "swap", id: link) == before.0)
            #expect(try await gateway.registry.l2Key(linkID: link) == before.1)
            #expect(try await gateway.registry.approvalRequest(id).storedState == .approved)
        }
    }

    @Test func expiredRejectedAndMismatchedRequestsAreRefusedWithTheirCodes() async throws {
        try await ServerHarness().test { client, gateway in
            let link = try await Self.linked(client, "expiry")
            try await Self.revoke(client, "expiry", link)
            let bob = try await Self.secondAdmin(client, gateway)
            // A request made long ago, past its expiry.
            let past = Date().addingTimeInterval(-7200)
            let old = try await gateway.registry.createApprovalRequest(
                operation: .restore, tenantID: "expiry", target: link, parameters: "{}", reason: nil, requestedBy: ServerHarness.adminName,
                requesterRole: "security_admin", requiredApprovals: 1, expiresAt: past.addingTimeInterval(60), at: past)
            let late = try await Self.call(client, .post, "/api/v1/approvals/\(old.id)/approve", as: bob.headers)
            #expect(late.status == .conflict && late.errorCode == "approval_expired")
            #expect(try await Self.call(client, .get, "/api/v1/approvals/\(old.id)").json()["state"] as? String == "EXPIRED")
            let useExpired = try await Self.call(client, .post, "/api/v1/tenants/expiry/l1-links/\(link)/restore", #"{"approval":"\#(old.id)"}"#)
            #expect(useExpired.status == .forbidden || useExpired.status == .conflict)
            // Rejected: closed for everyone.
            let requested = try await Self.call(client, .post, "/api/v1/approvals", #"{"operation":"link.restore","tenant":"expiry","link":"\#(link)"}"#)
            let id = try #require(try requested.json()["id"] as? String)
            let rejected = try await Self.call(client, .post, "/api/v1/approvals/\(id)/reject", as: bob.headers)
            #expect(try rejected.status == .ok && (rejected.json()["state"] as? String) == "REJECTED")
            let carol = try await Self.secondAdmin(client, gateway, "carol")
            let afterRejection = try await Self.call(client, .post, "/api/v1/approvals/\(id)/approve", as: carol.headers)
            #expect(afterRejection.status == .conflict && afterRejection.errorCode == "approval_closed")
            // An approved shred does not restore.
            let shred = try await Self.approved(client, "link.shred", "expiry", link, by: bob)
            let wrongKind = try await Self.call(client, .post, "/api/v1/tenants/expiry/l1-links/\(link)/restore", #"{"approval":"\#(shred)"}"#)
            #expect(wrongKind.status == .conflict && wrongKind.errorCode == "approval_mismatch")
            // Bad input: unknown request, unknown operation, a request for a link that is live.
            #expect(try await Self.call(client, .post, "/api/v1/approvals/nope/approve", as: bob.headers).status == .notFound)
            #expect(try await Self.call(client, .post, "/api/v1/approvals", #"{"operation":"link.explode","tenant":"expiry","link":"\#(link)"}"#).status == .badRequest)
            let live = try await Self.linked(client, "live")
            let notRevoked = try await Self.call(client, .post, "/api/v1/approvals", #"{"operation":"link.restore","tenant":"live","link":"\#(live)"}"#)
            #expect(notRevoked.status == .conflict && notRevoked.errorCode == "link_not_revoked")
            // An auditor sees requests and votes on none; a token cannot take part.
            var auditor = try await TestUser.make(gateway, "audrey", role: .auditor)
            try await auditor.logIn(client)
            #expect(try await Self.call(client, .get, "/api/v1/approvals", as: auditor.headers).status == .ok)
            #expect(try await Self.call(client, .post, "/api/v1/approvals/\(shred)/reject", as: auditor.headers).status == .forbidden)
            #expect(try await gateway.registry.link(tenantID: "expiry", id: link).state == .revoked)
        }
    }

    // MARK: Crypto-shred

    @Test func aShredIsScheduledCancelledAndRunAndThenNothingComesBack() async throws {
        let harness = try ServerHarness()
        let sealedCopy = SendableBox<Data>()
        try await harness.test { client, gateway in
            let link = try await Self.linked(client, "shred")
            try await Self.revoke(client, "shred", link)
            let bob = try await Self.secondAdmin(client, gateway)
            let uri = "/api/v1/tenants/shred/l1-links/\(link)/shred"
            #expect(try Self.code(await Self.call(client, .post, uri, "{}")) == "approval_required")
            let tooShort = try await Self.call(client, .post, "/api/v1/approvals",
                                               #"{"operation":"link.shred","tenant":"shred","link":"\#(link)","waitingPeriodHours":1}"#)
            #expect(tooShort.status == .badRequest, "the waiting period is at least the configured one (7 days)")
            let id = try await Self.approved(client, "link.shred", "shred", link, by: bob, extra: #","waitingPeriodHours":240"#)
            let scheduled = try await Self.call(client, .post, uri, #"{"approval":"\#(id)"}"#)
            #expect(scheduled.status == .accepted, "\(scheduled.text)")
            let shredAfter = try #require(RFC3339Date.parse(try scheduled.json()["shredAfter"] as? String ?? ""))
            #expect(abs(shredAfter.timeIntervalSinceNow - 240 * 3600) < 60)
            #expect(try scheduled.json()["state"] as? String == "SHRED_SCHEDULED")
            // While scheduled: not restorable, not yet due.
            #expect(try Self.code(await Self.call(client, .post, "/api/v1/tenants/shred/l1-links/\(link)/restore", "{}")) == "shred_scheduled")
            #expect(await gateway.runDueShreds(now: Date().addingTimeInterval(3600)).isEmpty)
            // Cancelled by one person, back to REVOKED; scheduling again needs a new approval.
            let cancelled = try await Self.call(client, .delete, uri)
            #expect(try cancelled.status == .ok && (cancelled.json()["state"] as? String) == "REVOKED", "\(cancelled.text)")
            #expect(try Self.code(await Self.call(client, .delete, uri)) == "shred_not_scheduled")
            #expect(try Self.code(await Self.call(client, .post, uri, #"{"approval":"\#(id)"}"#)) == "approval_closed")
            let second = try await Self.approved(client, "link.shred", "shred", link, by: bob)
            #expect(try await Self.call(client, .post, uri, #"{"approval":"\#(second)"}"#).status == .accepted)
            let l2 = try #require(try await gateway.registry.l2Key(linkID: link))
            let sealed = try #require(l2.sovereignBinding)
            sealedCopy.set(sealed)

            // The waiting period (7 days by default) passes.
            let ran = await gateway.runDueShreds(now: Date().addingTimeInterval(8 * 86_400))
            #expect(ran.map(\.id) == [link])
            let gone = try #require(try await gateway.registry.l2Key(linkID: link))
            #expect(gone.state == .shredded && gone.sovereignBinding == nil && gone.activeBinding == nil)
            #expect(gone.shreddedBindingSHA256 == Data(SHA256.hash(data: sealed)))
            let shown = try await Self.call(client, .get, "/api/v1/tenants/shred/l1-links/\(link)")
            #expect(try shown.json()["state"] as? String == "SHREDDED")
            // Proof in the audit log: the record names the L2 and the hash of what was destroyed.
            let proof = try #require(try gateway.audit.store.records(AuditQuery(operation: "l2.shred")).records.first)
            #expect(proof.target == link && proof.details["l2Ref"] == l2.id && proof.details["fenced"] == "true")
            #expect(proof.details["sovereignBindingSHA256"] == Hex.encode(Array(SHA256.hash(data: sealed))))
            // For good: restore, a new shred, cancel.
            let restore = try await Self.call(client, .post, "/api/v1/tenants/shred/l1-links/\(link)/restore", "{}")
            #expect(restore.status == .gone && restore.errorCode == "link_shredded")
            #expect(try await Self.call(client, .delete, uri).status == .gone)
            // Once shredded, the tenant can be deleted and linked afresh (a new L2).
            let relinked = try await Self.call(client, .post, "/api/v1/tenants/shred/l1-links", #"{"provider":"pkcs11","keystore":"hsm","key":"pkcs11:object=l1"}"#)
            #expect(relinked.status == .created, "\(relinked.text)")
        }
        // Not in any registry file: the database and its write-ahead log were fenced.
        let sealed = try #require(sealedCopy.get())
        for file in ["cmk.sqlite", "cmk.sqlite-wal"] {
            if let bytes = FileManager.default.contents(atPath: "\(harness.directory)/\(file)") {
                #expect(bytes.range(of: sealed) == nil, "the shredded binding survives in \(file)")
            }
        }
    }

    // MARK: The fence around a revocation

    @Test func afterARevocationNoIVKOnlyPathOpensTheL2() async throws {
        let harness = try ServerHarness()
        let captured = SendableBox<Data>()
        try await harness.test { client, gateway in
            let link = try await Self.linked(client, "fence")
            let l2 = try #require(try await gateway.registry.l2Key(linkID: link))
            captured.set(try #require(l2.activeBinding))
            try await Self.revoke(client, "fence", link)
            #expect(await gateway.fence())
            let locked = try #require(try await gateway.registry.l2Key(linkID: link))
            #expect(locked.activeBinding == nil)
            // With the IVK alone, the sovereign binding opens only to L1's wrapping of L2.
            let sovereign = try await gateway.sovereignBinding(of: locked)
            let ivk = try await gateway.ivkReference(version: try #require(locked.sovereignIVKVersion))
            await #expect(throws: KeystoreError.self) { try await gateway.platform.unwrap(sovereign, with: ivk) }
        }
        // A backup of the registry after the revocation holds no active binding (the copy of
        // the files is what a backup would take).
        let active = try #require(captured.get())
        for file in ["cmk.sqlite", "cmk.sqlite-wal"] {
            if let bytes = FileManager.default.contents(atPath: "\(harness.directory)/\(file)") {
                #expect(bytes.range(of: active) == nil, "the active binding survives in \(file)")
            }
        }
        // Opened again (after a restart, or from a backup), the registry has nothing to unseal.
        let reopened = try Registry(path: "\(harness.directory)/cmk.sqlite")
        #expect(try await reopened.links(tenantID: "fence", limit: 10, after: nil).items.first?.state == .revoked)
        #expect(try await reopened.l2Keys(tenantID: "fence").allSatisfy { $0.activeBinding == nil })
    }

    // MARK: What a node hears

    /// A node enrolled by the harness's platform operator.
    static func node(_ client: Client, region: String) async throws -> SimulatedNode {
        let issued = try await call(client, .post, "/api/v1/nodes/enrolments", #"{"region":"\#(region)"}"#, as: ServerHarness.operatorAuth)
        let token = try #require(try issued.json()["token"] as? String)
        var node = SimulatedNode()
        let enrolled = try await client.execute(uri: "/node/v1/enrol", method: .post, headers: [.contentType: "application/json"],
                                                body: body(try node.enrolBody(token: token)))
        node.id = try #require(try enrolled.json()["id"] as? String)
        return node
    }

    static func unseal(_ client: Client, _ node: SimulatedNode, _ tenant: String) async throws -> TestResponse {
        let text = #"{"tenant":"\#(tenant)"}"#
        return try await client.execute(uri: "/node/v1/unseal", method: .post, headers: try node.headers("POST", "/node/v1/unseal", body: text),
                                        body: body(text))
    }

    @Test func eachStateAndRegionGivesANodeItsOwnCode() async throws {
        try await ServerHarness().test { client, gateway in
            let link = try await Self.linked(client, "codes")
            let eu = try await Self.node(client, region: "eu-west-1"), us = try await Self.node(client, region: "us-east-1")
            let first = try await Self.unseal(client, eu, "codes")
            #expect(try first.status == .ok && (first.json()["epoch"] as? Int) == 1)
            #expect(try await Self.unseal(client, us, "codes").status == .ok)
            // The tenant narrows its regions: the other region is refused.
            let narrowed = try await Self.call(client, .patch, "/api/v1/tenants/codes", #"{"allowedRegions":["eu-west-1"]}"#)
            #expect(try narrowed.status == .ok && (narrowed.json()["allowedRegions"] as? [String]) == ["eu-west-1"], "\(narrowed.text)")
            let outside = try await Self.unseal(client, us, "codes")
            #expect(outside.status == .forbidden && outside.errorCode == "region_not_allowed")
            let regionEvents = try await gateway.registry.events(after: 0, limit: 50).filter { $0.type == "tenant.regions" }
            #expect(regionEvents.count == 1)
            #expect(try await Self.call(client, .patch, "/api/v1/tenants/codes", #"{"allowedRegions":["EU WEST"]}"#).status == .badRequest)
            #expect(try await Self.call(client, .patch, "/api/v1/tenants/codes", "{}").status == .badRequest)

            try await Self.revoke(client, "codes", link)
            let revoked = try await Self.unseal(client, eu, "codes")
            #expect(revoked.status == .conflict && revoked.errorCode == "key_revoked")
            let bob = try await Self.secondAdmin(client, gateway)
            let shred = try await Self.approved(client, "link.shred", "codes", link, by: bob)
            #expect(try await Self.call(client, .post, "/api/v1/tenants/codes/l1-links/\(link)/shred", #"{"approval":"\#(shred)"}"#).status == .accepted)
            let scheduled = try await Self.unseal(client, eu, "codes")
            #expect(scheduled.status == .conflict && scheduled.errorCode == "key_shred_scheduled")
            await gateway.runDueShreds(now: Date().addingTimeInterval(8 * 86_400))
            let shredded = try await Self.unseal(client, eu, "codes")
            #expect(shredded.status == .gone && shredded.errorCode == "key_shredded")
            // The node is told by events too: restored (epoch) and shredded.
            let types = try await gateway.registry.events(after: 0, limit: 50).map(\.type)
            #expect(types.contains("l1.revoked") && types.contains("l2.shredded"))
        }
    }

    // MARK: Rotations

    @Test func rotatingL1KeepsTheL2AndARevokedLinkRestoresWithTheNewKey() async throws {
        let harness = try ServerHarness()
        try await Self.makeKey(harness.fixture, token: "server", label: "l1-next")
        try await harness.test { client, gateway in
            let link = try await Self.linked(client, "rotate")
            let before = try await Self.material(gateway, try #require(try await gateway.registry.l2Key(linkID: link)))
            let same = try await Self.call(client, .post, "/api/v1/tenants/rotate/l1-links/\(link)/rotate", #"{"key":"pkcs11:object=l1"}"#)
            #expect(same.status == .badRequest, "a PKCS#11 rotation names another key")
            let missing = try await Self.call(client, .post, "/api/v1/tenants/rotate/l1-links/\(link)/rotate", #"{"key":"pkcs11:object=nope"}"#)
            #expect(missing.status == .unprocessableContent && missing.errorCode == "probe_failed")
            let rotated = try await Self.call(client, .post, "/api/v1/tenants/rotate/l1-links/\(link)/rotate", #"{"key":"pkcs11:object=l1-next"}"#)
            #expect(rotated.status == .ok, "\(rotated.text)")
            let answer = try rotated.json()
            #expect(answer["l1Version"] as? Int == 2 && (answer["keyReference"] as? String)?.contains("object=l1-next") == true)
            #expect((answer["l2"] as? [String: Any])?["l1Version"] as? Int == 2)
            #expect(try await gateway.registry.l1KeyVersions(linkID: link).map(\.version) == [1, 2])
            // The sovereign binding opens with the new key and holds the same L2.
            let l2 = try #require(try await gateway.registry.l2Key(linkID: link))
            let sovereign = try await gateway.sovereignBinding(of: l2)
            let opened = try await gateway.platform.unwrap(sovereign, with: try KeyReference(parsing: "pkcs11:token=server;object=l1-next;type=secret-key"))
            #expect(opened.withUnsafeBytes { Array($0) } == before)
            // Revoke and restore: L1 is now the new key.
            try await Self.revoke(client, "rotate", link)
            let bob = try await Self.secondAdmin(client, gateway)
            let id = try await Self.approved(client, "link.restore", "rotate", link, by: bob)
            #expect(try await Self.call(client, .post, "/api/v1/tenants/rotate/l1-links/\(link)/restore", #"{"approval":"\#(id)"}"#).status == .ok)
            #expect(try await Self.material(gateway, try #require(try await gateway.registry.l2Key(linkID: link))) == before)
        }
    }

    @Test func aRotationJobMovesEveryTenantAndReportsProgress() async throws {
        let harness = try ServerHarness()
        try await Self.makeKey(harness.fixture, token: "server-b", label: "bulk-next")
        try await harness.test { client, gateway in
            var links: [String] = []
            for tenant in ["bulk-a", "bulk-b", "bulk-c"] { links.append(try await Self.linked(client, tenant, keystore: "other")) }
            try await Self.revoke(client, "bulk-b", links[1])
            let started = try await Self.call(client, .post, "/api/v1/l1-rotations",
                                              #"{"keystore":"other","fromKey":"pkcs11:object=l1","toKey":"pkcs11:object=bulk-next"}"#)
            #expect(started.status == .accepted, "\(started.text)")
            let id = try #require(try started.json()["id"] as? String)
            #expect(try started.json()["total"] as? Int == 3 && (try started.json()["state"] as? String) == "RUNNING")
            await gateway.runRotations()
            let done = try await Self.call(client, .get, "/api/v1/rotations/\(id)").json()
            #expect(done["state"] as? String == "COMPLETED" && done["done"] as? Int == 3 && done["failed"] as? Int == 0, "\(done)")
            for (tenant, link) in zip(["bulk-a", "bulk-b", "bulk-c"], links) {
                let rotated = try await gateway.registry.link(tenantID: tenant, id: link)
                #expect(rotated.l1Version == 2 && rotated.keyReference.contains("bulk-next"))
            }
            #expect(try Self.auditCount(gateway, "rotation.complete", target: id) == 1)
            let nothing = try await Self.call(client, .post, "/api/v1/l1-rotations",
                                              #"{"keystore":"other","fromKey":"pkcs11:object=l1","toKey":"pkcs11:object=bulk-next"}"#)
            #expect(nothing.status == .notFound, "no link uses the old key any more")
        }
    }

    @Test func anIVKRotationMovesEveryBindingAndSecretAndKeepsEverythingWorking() async throws {
        try await ServerHarness().test { client, gateway in
            let live = try await Self.linked(client, "ivk-live")
            let revoked = try await Self.linked(client, "ivk-revoked", keystore: "other")
            let liveBefore = try await Self.material(gateway, try #require(try await gateway.registry.l2Key(linkID: live)))
            try await Self.revoke(client, "ivk-revoked", revoked)
            var dana = try await TestUser.make(gateway, "dana", role: .securityAdmin)
            let refused = try await Self.call(client, .post, "/api/v1/ivk-rotations")
            #expect(refused.status == .forbidden, "the IVK is the platform operator's")
            let started = try await Self.call(client, .post, "/api/v1/ivk-rotations", as: ServerHarness.operatorAuth)
            #expect(started.status == .accepted, "\(started.text)")
            let id = try #require(try started.json()["id"] as? String)
            await gateway.runRotations()
            let job = try await gateway.registry.rotationJob(id)
            #expect(job.state == .completed && job.failed == 0 && job.done == job.total && job.toIVKVersion == 2)
            #expect(try await gateway.registry.recordsUsingIVK(1) == 0)
            let l2 = try #require(try await gateway.registry.l2Key(linkID: live))
            #expect(l2.activeIVKVersion == 2 && l2.sovereignIVKVersion == 2)
            #expect(try await Self.material(gateway, l2) == liveBefore)
            // TOTP secrets were re-sealed: people still log in.
            try await dana.logIn(client)
            // The revoked tenant's sealed binding moved too, and still restores with L1.
            let bob = try await Self.secondAdmin(client, gateway)
            let approval = try await Self.approved(client, "link.restore", "ivk-revoked", revoked, by: bob)
            let restored = try await Self.call(client, .post, "/api/v1/tenants/ivk-revoked/l1-links/\(revoked)/restore", #"{"approval":"\#(approval)"}"#)
            #expect(restored.status == .ok, "\(restored.text)")
        }
    }

    // MARK: Separation of duties

    @Test func theEscalationPathsAreClosed() async throws {
        try await ServerHarness().test { client, gateway in
            // A security administrator cannot make a platform operator (nor enrol nodes itself).
            let operatorByAdmin = try await Self.call(client, .post, "/api/v1/users",
                                                      #"{"username":"eve","password":"a long passphrase 0123","role":"platform_operator"}"#)
            #expect(operatorByAdmin.status == .forbidden, "\(operatorByAdmin.text)")
            let adminByOperator = try await Self.call(client, .post, "/api/v1/users",
                                                      #"{"username":"eve","password":"a long passphrase 0123","role":"security_admin"}"#,
                                                      as: ServerHarness.operatorAuth)
            #expect(adminByOperator.status == .forbidden)
            #expect(try await Self.call(client, .post, "/api/v1/nodes/enrolments", #"{"region":"eu-west-1"}"#).status == .forbidden)
            #expect(try await Self.call(client, .post, "/api/v1/nodes/enrolments", #"{"region":"eu-west-1"}"#, as: ServerHarness.operatorAuth).status == .created)

            // An automation token: no people, nothing that outlives or outranks it.
            let issued = try await Self.call(client, .post, "/api/v1/tokens", #"{"name":"ci","role":"security_admin","ttlSeconds":3600}"#)
            let token = try #require(try issued.json()["token"] as? String)
            let bearer: HTTPFields = [.authorization: "Bearer \(token)", .contentType: "application/json"]
            let person = try await Self.call(client, .post, "/api/v1/users",
                                             #"{"username":"mallory","password":"a long passphrase 0123","role":"security_admin"}"#, as: bearer)
            #expect(person.status == .forbidden)
            #expect(try await gateway.registry.account(username: "mallory") == nil)
            let longer = try await Self.call(client, .post, "/api/v1/tokens", #"{"name":"ci-2","role":"security_admin","ttlSeconds":31536000}"#, as: bearer)
            #expect(longer.status == .forbidden)
            let operatorToken = try await Self.call(client, .post, "/api/v1/tokens", #"{"name":"ci-3","role":"platform_operator","ttlSeconds":600}"#, as: bearer)
            #expect(operatorToken.status == .forbidden)
            let shorter = try await Self.call(client, .post, "/api/v1/tokens", #"{"name":"ci-4","role":"auditor"}"#, as: bearer)
            #expect(shorter.status == .created, "\(shorter.text)")
            let expires = try #require(RFC3339Date.parse(try shorter.json()["expiresAt"] as? String ?? ""))
            #expect(expires.timeIntervalSinceNow <= 3600, "cut to the parent's lifetime")

            // A revoked tenant is neither deleted (a shred without approval) nor relinked (a restore without it).
            let link = try await Self.linked(client, "evade")
            try await Self.revoke(client, "evade", link)
            let deleted = try await Self.call(client, .delete, "/api/v1/tenants/evade")
            #expect(deleted.status == .conflict, "\(deleted.text)")
            let relinked = try await Self.call(client, .post, "/api/v1/tenants/evade/l1-links", #"{"provider":"pkcs11","keystore":"hsm","key":"pkcs11:object=l1"}"#)
            #expect(relinked.status == .conflict && relinked.errorCode == "link_restorable")
            // A token cannot restore, request or approve.
            #expect(try await Self.call(client, .post, "/api/v1/tenants/evade/l1-links/\(link)/restore", "{}", as: bearer).status == .forbidden)
            #expect(try await Self.call(client, .post, "/api/v1/approvals", #"{"operation":"link.restore","tenant":"evade","link":"\#(link)"}"#, as: bearer).status == .forbidden)
            #expect(try await gateway.registry.link(tenantID: "evade", id: link).state == .revoked)
        }
    }

    @Test func nodeEnrolmentNeedsASecondOperatorWhenConfigured() async throws {
        var harness = try ServerHarness()
        harness.configuration.lifecycle.approvals.nodeEnrolment = 2
        try await harness.test { client, gateway in
            let alone = try await Self.call(client, .post, "/api/v1/nodes/enrolments", #"{"region":"eu-west-1"}"#, as: ServerHarness.operatorAuth)
            #expect(alone.status == .forbidden && alone.errorCode == "approval_required")
            let requested = try await Self.call(client, .post, "/api/v1/approvals", #"{"operation":"node.enrolment","region":"eu-west-1","ttlSeconds":600}"#,
                                                as: ServerHarness.operatorAuth)
            #expect(requested.status == .created, "\(requested.text)")
            let id = try #require(try requested.json()["id"] as? String)
            // A security administrator is not on this side of the duty.
            #expect(try await Self.call(client, .post, "/api/v1/approvals/\(id)/approve").status == .forbidden)
            let olga = try await Self.secondAdmin(client, gateway, "olga", role: .platformOperator)
            #expect(try await Self.call(client, .post, "/api/v1/approvals/\(id)/approve", as: olga.headers).status == .ok)
            let wrongRegion = try await Self.call(client, .post, "/api/v1/nodes/enrolments", #"{"region":"us-east-1","approval":"\#(id)"}"#,
                                                  as: ServerHarness.operatorAuth)
            #expect(wrongRegion.status == .conflict && wrongRegion.errorCode == "approval_mismatch")
            let issued = try await Self.call(client, .post, "/api/v1/nodes/enrolments", #"{"region":"eu-west-1","approval":"\#(id)"}"#,
                                             as: ServerHarness.operatorAuth)
            #expect(issued.status == .created, "\(issued.text)")
            let expires = try #require(RFC3339Date.parse(try issued.json()["expiresAt"] as? String ?? ""))
            #expect(expires.timeIntervalSinceNow <= 600, "the approved lifetime")
            #expect(try await Self.call(client, .post, "/api/v1/nodes/enrolments", #"{"region":"eu-west-1","approval":"\#(id)"}"#,
                                        as: ServerHarness.operatorAuth).errorCode == "approval_closed")
        }
    }
}

/// A value a test closure sets and the test reads after the harness has stopped.
final class SendableBox<Value: Sendable>: @unchecked Sendable {
    private var value: Value?
    private let lock = NSLock()
    func set(_ newValue: Value) { lock.lock(); value = newValue; lock.unlock() }
    func get() -> Value? { lock.lock(); defer { lock.unlock() }; return value }
}

enum RFC3339Date {
    static func parse(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.date(from: text) ?? ISO8601DateFormatter().date(from: text)
    }
}
