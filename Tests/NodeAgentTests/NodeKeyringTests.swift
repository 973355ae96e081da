import Audit
import CMKCore
import Crypto
import Foundation
import NIOConcurrencyHelpers
@testable import NodeAgent
import PKCS11
import Testing

@Suite struct NodeKeyringTests {
    final class Clock: Sendable {
        let value = NIOLockedValueBox(Date(timeIntervalSince1970: 1_764_000_000))
        func advance(_ seconds: TimeInterval) { value.withLockedValue { $0.addTimeInterval(seconds) } }
        var now: Date { value.withLockedValue { $0 } }
    }

    func keyring(_ clock: Clock, signing: Curve25519.Signing.PrivateKey = .init()) -> NodeKeyring {
        NodeKeyring(nodeID: "node-1", signingKey: signing, now: { clock.now })
    }

    static let l2 = SecretBytes(copying: (0..<32).map { UInt8($0) })

    @Test func dataEncryptedUnderATenantsKeyDecryptsOnlyThere() throws {
        let clock = Clock()
        let ring = keyring(clock)
        try ring.install(tenant: "acme", l2Ref: "l2-a", link: "link-1", key: Self.l2, leaseExpiresAt: clock.now.addingTimeInterval(30))
        try ring.install(tenant: "globex", l2Ref: "l2-g", link: "link-g", key: SecretBytes(copying: [UInt8](repeating: 7, count: 32)),
                         leaseExpiresAt: clock.now.addingTimeInterval(30))
        let message = Array("card 4111-1111".utf8)
        let sealed = try ring.encrypt(tenant: "acme", message)
        #expect(try ring.decrypt(tenant: "acme", sealed) == message)
        #expect(try ring.encrypt(tenant: "acme", message) != sealed, "a fresh salt and nonce per message")
        #expect(throws: NodeKeyring.Failure.invalidCiphertext) { try ring.decrypt(tenant: "globex", sealed) }
        var altered = sealed
        altered[altered.count - 20] ^= 1
        #expect(throws: NodeKeyring.Failure.invalidCiphertext) { try ring.decrypt(tenant: "acme", altered) }
        #expect(throws: NodeKeyring.Failure.invalidCiphertext) { try ring.decrypt(tenant: "acme", [0x01, 2, 3]) }
    }

    @Test func theLeaseEndsAndTheNodeFailsClosed() throws {
        let clock = Clock()
        let ring = keyring(clock)
        try ring.install(tenant: "acme", l2Ref: "l2-a", link: "link-1", key: Self.l2, leaseExpiresAt: clock.now.addingTimeInterval(30))
        let sealed = try ring.encrypt(tenant: "acme", [1, 2, 3])
        clock.advance(31)
        // Refused even before the sweep runs, and dropped by it.
        #expect(throws: NodeKeyring.Failure.keyUnavailable(tenant: "acme")) { try ring.decrypt(tenant: "acme", sealed) }
        #expect(ring.expireLeases() == ["acme"])
        #expect(ring.keysHeld == 0)
        // A renewed lease (a new unseal) restores service.
        try ring.install(tenant: "acme", l2Ref: "l2-a", link: "link-1", key: Self.l2, leaseExpiresAt: clock.now.addingTimeInterval(30))
        #expect(try ring.decrypt(tenant: "acme", sealed) == [1, 2, 3])
    }

    @Test func aPurgeDropsTheKeysForGoodAndSignsTheAcknowledgement() throws {
        let clock = Clock()
        let signing = Curve25519.Signing.PrivateKey()
        let ring = keyring(clock, signing: signing)
        try ring.install(tenant: "acme", l2Ref: "l2-a", link: "link-1", key: Self.l2, leaseExpiresAt: clock.now.addingTimeInterval(30))
        let sealed = try ring.encrypt(tenant: "acme", [9, 9])
        let (statement, signature) = try ring.purge(tenant: "acme", link: "link-1", event: "event-1")
        #expect(signing.publicKey.isValidSignature(signature, for: Data(statement.utf8)))
        let value = try CanonicalJSON.parse(Array(statement.utf8))
        #expect(value["type"]?.stringValue == "openkcm-purge-ack/v1" && value["node"]?.stringValue == "node-1")
        #expect(value["event"]?.stringValue == "event-1" && value["link"]?.stringValue == "link-1" && value["keysDropped"]?.integerValue == 1)
        #expect(throws: NodeKeyring.Failure.keyRevoked(tenant: "acme")) { try ring.decrypt(tenant: "acme", sealed) }
        #expect(throws: NodeKeyring.Failure.keyRevoked(tenant: "acme")) { try ring.encrypt(tenant: "acme", [1]) }
        #expect(ring.isRevoked(tenant: "acme"))
        // Never installed again for the revoked link; a new link (a new handshake) is a new key.
        #expect(throws: NodeKeyring.Failure.keyRevoked(tenant: "acme")) {
            try ring.install(tenant: "acme", l2Ref: "l2-a", link: "link-1", key: Self.l2, leaseExpiresAt: clock.now.addingTimeInterval(30))
        }
        try ring.install(tenant: "acme", l2Ref: "l2-b", link: "link-2", key: Self.l2, leaseExpiresAt: clock.now.addingTimeInterval(30))
        #expect(!ring.isRevoked(tenant: "acme"))
        #expect(throws: NodeKeyring.Failure.invalidCiphertext) { try ring.decrypt(tenant: "acme", sealed) }
        // A replayed revocation of the old link leaves the new key alone.
        let replayed = try ring.purge(tenant: "acme", link: "link-1", event: "event-1")
        #expect(try CanonicalJSON.parse(Array(replayed.statement.utf8))["keysDropped"]?.integerValue == 0)
        #expect(try ring.decrypt(tenant: "acme", try ring.encrypt(tenant: "acme", [4])) == [4])
        #expect(NodeKeyring.Failure.keyRevoked(tenant: "acme").code == "key_revoked")
    }

    @Test func aRestoredLinkIsServedAgainUnderItsNextEpochAndAnOldRevocationLeavesIt() throws {
        let clock = Clock()
        let ring = keyring(clock)
        try ring.install(tenant: "acme", l2Ref: "l2-a", link: "link-1", epoch: 1, key: Self.l2, leaseExpiresAt: clock.now.addingTimeInterval(30))
        let sealed = try ring.encrypt(tenant: "acme", [1, 2, 3])
        _ = try ring.purge(tenant: "acme", link: "link-1", epoch: 1, event: "revoke-1")
        #expect(throws: NodeKeyring.Failure.keyRevoked(tenant: "acme")) { try ring.decrypt(tenant: "acme", sealed) }
        // An unseal answer of the revoked epoch (in flight before the revocation) is refused.
        #expect(throws: NodeKeyring.Failure.keyRevoked(tenant: "acme")) {
            try ring.install(tenant: "acme", l2Ref: "l2-a", link: "link-1", epoch: 1, key: Self.l2, leaseExpiresAt: clock.now.addingTimeInterval(30))
        }
        // The restore event: not refused any more (the next request unseals), and the same L2
        // under epoch 2 opens what was encrypted before the revocation.
        ring.restored(tenant: "acme", link: "link-1", epoch: 2)
        #expect(!ring.isRevoked(tenant: "acme"))
        #expect(throws: NodeKeyring.Failure.keyUnavailable(tenant: "acme")) { try ring.decrypt(tenant: "acme", sealed) }
        try ring.install(tenant: "acme", l2Ref: "l2-a", link: "link-1", epoch: 2, key: Self.l2, leaseExpiresAt: clock.now.addingTimeInterval(30))
        #expect(try ring.decrypt(tenant: "acme", sealed) == [1, 2, 3])
        // A replay of the first revocation (a node catching up) does not drop the restored key.
        let replay = try ring.purge(tenant: "acme", link: "link-1", epoch: 1, event: "revoke-1")
        #expect(try CanonicalJSON.parse(Array(replay.statement.utf8))["keysDropped"]?.integerValue == 0)
        #expect(try ring.decrypt(tenant: "acme", sealed) == [1, 2, 3])
        // The second revocation (of epoch 2) does.
        let second = try ring.purge(tenant: "acme", link: "link-1", epoch: 2, event: "revoke-2")
        #expect(try CanonicalJSON.parse(Array(second.statement.utf8))["keysDropped"]?.integerValue == 1)
        #expect(throws: NodeKeyring.Failure.keyRevoked(tenant: "acme")) { try ring.decrypt(tenant: "acme", sealed) }
    }

    @Test func eachRefusalHasItsOwnCodeAndAShreddedLinkNeverComesBack() throws {
        let clock = Clock()
        let ring = keyring(clock)
        try ring.install(tenant: "acme", l2Ref: "l2-a", link: "link-1", key: Self.l2, leaseExpiresAt: clock.now.addingTimeInterval(30))
        ring.markRevoked(tenant: "acme", .shredScheduled)
        #expect(throws: NodeKeyring.Failure.keyShredScheduled(tenant: "acme")) { try ring.encrypt(tenant: "acme", [1]) }
        #expect(ring.keysHeld == 0)
        ring.shredded(tenant: "acme", link: "link-1")
        #expect(throws: NodeKeyring.Failure.keyShredded(tenant: "acme")) { try ring.encrypt(tenant: "acme", [1]) }
        ring.restored(tenant: "acme", link: "link-1", epoch: 2)
        #expect(throws: NodeKeyring.Failure.keyShredded(tenant: "acme")) {
            try ring.install(tenant: "acme", l2Ref: "l2-a", link: "link-1", epoch: 2, key: Self.l2, leaseExpiresAt: clock.now.addingTimeInterval(30))
        }
        #expect(Set([NodeKeyring.Failure.keyRevoked(tenant: "t"), .keyShredScheduled(tenant: "t"), .keyShredded(tenant: "t"),
                     .regionNotAllowed(tenant: "t"), .keyUnavailable(tenant: "t")].map(\.code)).count == 5)
        // A tenant relinked after the shred (a new handshake, a new link) is served.
        try ring.install(tenant: "acme", l2Ref: "l2-b", link: "link-2", key: Self.l2, leaseExpiresAt: clock.now.addingTimeInterval(30))
        #expect(try ring.decrypt(tenant: "acme", try ring.encrypt(tenant: "acme", [5])) == [5])
    }
}
