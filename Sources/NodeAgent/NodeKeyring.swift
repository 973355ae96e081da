public import CMKCore
public import Crypto
public import Foundation
import NIOConcurrencyHelpers
import NodeProtocol

/// What a regional node holds: each tenant's L2, in wiped memory, under a lease; application
/// encryption under data keys derived from it; and the purge that drops a revoked link's keys
/// and signs the acknowledgement. Memory only: nothing here is ever written to disk.
public final class NodeKeyring: Sendable {
    public enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        /// The tenant's L1 link was revoked: its keys were dropped (a restore with L1 can bring
        /// them back, under the link's next epoch).
        case keyRevoked(tenant: String)
        /// Revoked, and the tenant's key is scheduled for destruction (until cancelled).
        case keyShredScheduled(tenant: String)
        /// The tenant's key was destroyed: nothing encrypted under it can be decrypted again.
        case keyShredded(tenant: String)
        /// The tenant does not allow this node's region to hold its key.
        case regionNotAllowed(tenant: String)
        /// No key held (never unsealed, or the lease ended without renewal: fail closed).
        case keyUnavailable(tenant: String)
        /// Not a ciphertext of this format, altered, or made under another key.
        case invalidCiphertext
        /// The gateway knows no such tenant, or it has no L1 link.
        case unknownTenant(tenant: String)

        public var code: String {
            switch self {
            case .keyRevoked: ErrorCode.keyRevoked.rawValue
            case .keyShredScheduled: ErrorCode.keyShredScheduled.rawValue
            case .keyShredded: ErrorCode.keyShredded.rawValue
            case .regionNotAllowed: ErrorCode.regionNotAllowed.rawValue
            case .keyUnavailable: "key_unavailable"
            case .invalidCiphertext: "invalid_ciphertext"
            case .unknownTenant: "unknown_tenant"
            }
        }

        public var description: String {
            switch self {
            case .keyRevoked(let tenant): "the L1 link of tenant \(tenant) was revoked: its keys were dropped"
            case .keyShredScheduled(let tenant): "the L1 link of tenant \(tenant) was revoked and its key is scheduled to be shredded"
            case .keyShredded(let tenant): "the key of tenant \(tenant) was shredded: data under it can never be decrypted again"
            case .regionNotAllowed(let tenant): "tenant \(tenant) does not allow this node's region to hold its key"
            case .keyUnavailable(let tenant): "no key is held for tenant \(tenant) (not unsealed, or the lease ended)"
            case .invalidCiphertext: "the ciphertext is malformed, altered, or not made under this tenant's key"
            case .unknownTenant(let tenant): "the gateway has no tenant \(tenant) with an L1 link"
            }
        }
    }

    /// Why a tenant's requests are refused without asking the gateway (what it last said).
    public enum Refusal: Sendable, Equatable {
        case revoked, shredScheduled, shredded

        func failure(_ tenant: String) -> Failure {
            switch self {
            case .revoked: .keyRevoked(tenant: tenant)
            case .shredScheduled: .keyShredScheduled(tenant: tenant)
            case .shredded: .keyShredded(tenant: tenant)
            }
        }
    }

    struct Held {
        var l2Ref: String
        var link: String
        var epoch: Int
        var key: SecretBytes
        var leaseExpiresAt: Date
        var leaseSeconds: Int
    }

    /// A link at one epoch: a restore starts the next, which a revocation of an earlier one
    /// does not touch.
    struct LinkEpoch: Equatable {
        var link: String
        var epoch: Int
    }

    struct State {
        var held: [String: Held] = [:]
        /// Per link, the highest epoch revoked: its keys (and those of earlier epochs) are never
        /// installed again. A restore makes a new epoch; a new handshake a new link.
        var revoked: [String: Int] = [:]
        /// Links whose key was destroyed.
        var shredded: Set<String> = []
        /// Keys dropped because the gateway refused a renewal as revoked, before the event
        /// arrived, by link: the purge acknowledgement counts them.
        var droppedEarly: [String: Int] = [:]
        /// The link and epoch of the tenant's latest key (kept after its lease ends), and what
        /// the gateway last refused for it.
        var current: [String: LinkEpoch] = [:]
        var refusal: [String: Refusal] = [:]

        func isRevoked(_ link: String, _ epoch: Int) -> Bool { (revoked[link] ?? 0) >= epoch }

        /// Why the tenant's latest known key is refused, if it is.
        func refusal(_ tenant: String) -> Refusal? {
            guard let current = current[tenant] else { return refusal[tenant] }
            if shredded.contains(current.link) { return .shredded }
            guard isRevoked(current.link, current.epoch) else { return nil }
            return refusal[tenant] ?? .revoked
        }
    }

    public let nodeID: String
    private let signingKey: Curve25519.Signing.PrivateKey
    private let state = NIOLockedValueBox(State())
    private let now: @Sendable () -> Date

    public init(nodeID: String, signingKey: Curve25519.Signing.PrivateKey, now: @escaping @Sendable () -> Date = { Date() }) {
        self.nodeID = nodeID
        self.signingKey = signingKey
        self.now = now
    }

    /// Installs an unsealed L2 of `link` at `epoch` (replacing the tenant's previous one) until
    /// `leaseExpiresAt`. Refused for a revoked epoch of the link, or a shredded link.
    public func install(tenant: String, l2Ref: String, link: String, epoch: Int = 1, key: SecretBytes, leaseExpiresAt: Date,
                        leaseSeconds: Int = 30) throws {
        try state.withLockedValue { state in
            guard !state.shredded.contains(link) else { throw Failure.keyShredded(tenant: tenant) }
            guard !state.isRevoked(link, epoch) else { throw (state.refusal[tenant] ?? .revoked).failure(tenant) }
            state.held[tenant] = Held(l2Ref: l2Ref, link: link, epoch: epoch, key: key, leaseExpiresAt: leaseExpiresAt, leaseSeconds: leaseSeconds)
            state.current[tenant] = LinkEpoch(link: link, epoch: epoch)
            state.refusal[tenant] = nil
        }
    }

    /// The gateway refused the tenant's key (its event may not have arrived yet): the key held,
    /// if any, goes now, and requests are refused with `refusal` until the gateway says more.
    public func markRevoked(tenant: String, _ refusal: Refusal = .revoked) {
        state.withLockedValue { state in
            state.refusal[tenant] = refusal
            guard let held = state.held.removeValue(forKey: tenant) else {
                let current = state.current[tenant] ?? LinkEpoch(link: "", epoch: 1)
                state.current[tenant] = current
                state.revoked[current.link] = max(state.revoked[current.link] ?? 0, current.epoch)
                if refusal == .shredded { state.shredded.insert(current.link) }
                return
            }
            state.revoked[held.link] = max(state.revoked[held.link] ?? 0, held.epoch)
            if refusal == .shredded { state.shredded.insert(held.link) }
            state.droppedEarly[held.link, default: 0] += 1
        }
    }

    /// A revoked link was restored (`l1.restored`): its new epoch is served again; the next
    /// request unseals it without waiting for a re-check.
    public func restored(tenant: String, link: String, epoch: Int) {
        state.withLockedValue { state in
            guard !state.shredded.contains(link), !state.isRevoked(link, epoch) else { return }
            if let current = state.current[tenant], current.link == link, current.epoch > epoch { return }
            state.current[tenant] = LinkEpoch(link: link, epoch: epoch)
            state.refusal[tenant] = nil
        }
    }

    /// A link's key was destroyed (`l2.shredded`): refused for good.
    public func shredded(tenant: String, link: String) {
        state.withLockedValue { state in
            state.shredded.insert(link)
            if state.held[tenant]?.link == link { state.held[tenant] = nil }
            if state.current[tenant] == nil { state.current[tenant] = LinkEpoch(link: link, epoch: .max) }
        }
    }

    /// Drops the tenant's key, if held (its region is no longer allowed); returns whether one was.
    @discardableResult
    public func drop(tenant: String) -> Bool {
        state.withLockedValue { $0.held.removeValue(forKey: tenant) != nil }
    }

    /// Drops every key (at shutdown); returns how many.
    @discardableResult
    public func dropAll() -> Int {
        state.withLockedValue { state in
            defer { state.held = [:] }
            return state.held.count
        }
    }

    /// Whether the tenant's latest known key is refused (revoked, scheduled for shredding or
    /// shredded) and no newer key is held: requests are refused without asking the gateway.
    public func isRevoked(tenant: String) -> Bool {
        state.withLockedValue { $0.refusal(tenant) != nil }
    }

    /// Why the tenant is refused, if it is.
    public func refusal(tenant: String) -> Refusal? {
        state.withLockedValue { $0.refusal(tenant) }
    }

    /// Tenants whose lease ends within a third of its length (and at least `minimumMargin`
    /// seconds): to renew.
    public func leasesToRenew(minimumMargin: TimeInterval) -> [String] {
        let now = now()
        return state.withLockedValue { state in
            state.held.filter { $0.value.leaseExpiresAt.timeIntervalSince(now) < max(Double($0.value.leaseSeconds) / 3, minimumMargin) }
                .map(\.key).sorted()
        }
    }

    /// Lease ends of the keys held (for the status page): tenant → end.
    public var leases: [String: Date] { state.withLockedValue { $0.held.mapValues(\.leaseExpiresAt) } }

    /// Drops every key whose lease has ended; returns the tenants dropped (to log, and to tell
    /// the gateway on reconnect).
    @discardableResult
    public func expireLeases() -> [String] {
        let now = now()
        return state.withLockedValue { state in
            let ended = state.held.filter { $0.value.leaseExpiresAt <= now }.map(\.key)
            for tenant in ended { state.held[tenant] = nil }  // SecretBytes wipes on release
            return ended.sorted()
        }
    }

    /// Counts only, for the dashboard.
    public var keysHeld: Int { state.withLockedValue { $0.held.count } }

    // MARK: Application crypto

    /// Format: 0x01 ‖ salt (16) ‖ nonce (12) ‖ AES-256-GCM ciphertext ‖ tag (16). The data key
    /// is HKDF-SHA256(L2, salt, "openkcm/data-key/v1|tenant|l2Ref"): fresh per message, so no
    /// GCM nonce is ever reused under one key. The tenant and L2Ref are authenticated too.
    public func encrypt(tenant: String, _ plaintext: [UInt8]) throws -> [UInt8] {
        let (l2Ref, dataKeyMaterial) = try key(for: tenant)
        let salt = (0..<16).map { _ in UInt8.random(in: 0...255) }
        let dataKey = Self.dataKey(dataKeyMaterial, salt: salt, tenant: tenant, l2Ref: l2Ref)
        let sealed = try AES.GCM.seal(plaintext, using: dataKey, authenticating: Self.aad(tenant: tenant, l2Ref: l2Ref))
        return [0x01] + salt + Array(sealed.nonce) + Array(sealed.ciphertext) + Array(sealed.tag)
    }

    public func decrypt(tenant: String, _ ciphertext: [UInt8]) throws -> [UInt8] {
        let (l2Ref, dataKeyMaterial) = try key(for: tenant)
        guard ciphertext.count >= 1 + 16 + 12 + 16, ciphertext[0] == 0x01 else { throw Failure.invalidCiphertext }
        let salt = Array(ciphertext[1..<17])
        do {
            let box = try AES.GCM.SealedBox(nonce: AES.GCM.Nonce(data: ciphertext[17..<29]), ciphertext: ciphertext[29..<(ciphertext.count - 16)],
                                            tag: ciphertext[(ciphertext.count - 16)...])
            let dataKey = Self.dataKey(dataKeyMaterial, salt: salt, tenant: tenant, l2Ref: l2Ref)
            return Array(try AES.GCM.open(box, using: dataKey, authenticating: Self.aad(tenant: tenant, l2Ref: l2Ref)))
        } catch {
            throw Failure.invalidCiphertext
        }
    }

    private func key(for tenant: String) throws -> (String, SecretBytes) {
        try state.withLockedValue { state in
            guard let held = state.held[tenant], held.leaseExpiresAt > now() else {
                throw state.refusal(tenant)?.failure(tenant) ?? Failure.keyUnavailable(tenant: tenant)
            }
            return (held.l2Ref, held.key)
        }
    }

    static func dataKey(_ l2: SecretBytes, salt: [UInt8], tenant: String, l2Ref: String) -> SymmetricKey {
        l2.withUnsafeBytes { bytes in
            HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: bytes), salt: salt,
                                   info: Array("openkcm/data-key/v1|\(tenant)|\(l2Ref)".utf8), outputByteCount: 32)
        }
    }

    static func aad(tenant: String, l2Ref: String) -> [UInt8] { Array("openkcm/data/v1|\(tenant)|\(l2Ref)".utf8) }

    // MARK: Purge

    /// Drops the keys of a revoked link at `epoch` and before (the buffers are wiped as they are
    /// released), refuses them from now on, and returns the signed acknowledgement statement
    /// (canonical JSON) and its signature, as `POST /node/v1/acks` takes them. A key of a newer
    /// link of the same tenant (a new handshake), or of a later epoch of this one (a restore
    /// after this revocation), is not the revoked one and stays.
    public func purge(tenant: String, link: String, epoch: Int = 1, event: String) throws -> (statement: String, signature: Data) {
        let dropped = state.withLockedValue { state -> Int in
            state.revoked[link] = max(state.revoked[link] ?? 0, epoch)
            if state.current[tenant] == nil { state.current[tenant] = LinkEpoch(link: link, epoch: epoch) }
            let early = state.droppedEarly.removeValue(forKey: link) ?? 0
            guard let held = state.held[tenant], held.link == link, held.epoch <= epoch else { return early }
            state.held[tenant] = nil
            return early + 1
        }
        let statement = try NodeProtocol.ackStatement(event: event, link: link, node: nodeID, keysDropped: dropped, time: now())
        return (String(decoding: statement, as: UTF8.self), try signingKey.signature(for: statement))
    }
}
