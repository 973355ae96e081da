import CPKCS11
import Foundation
@testable import PKCS11
import Testing
import TestSupport

/// The pool on the `pool` token: concurrency, bounds, recovery.
@Suite(.serialized) struct SessionPoolTests {
    let fixture = SoftHSMFixture.shared
    static let l1 = ObjectQuery(label: "l1", objectClass: .secretKey)

    /// Wraps a fresh session key with L1 and unwraps it again; destroys both.
    @Sendable static func roundTrip(_ session: Session, _ pool: SessionPool) throws {
        let kek = try pool.resolve(l1, in: session)
        let key = try session.generateAESKey(bits: 256, usages: [.encrypt(true)], extractable: true)
        defer { try? session.destroyObject(key) }
        let blob = try session.wrapKey(key, with: kek, mechanism: .aesKeyWrapPad)
        let copy = try session.unwrapKey(blob, with: kek, mechanism: .aesKeyWrapPad,
                                         template: [.class(.secretKey), .keyType(.aes), .token(false), .encrypt(true)])
        try session.destroyObject(copy)
    }

    @Test func manyConcurrentTasksShareABoundedPool() async throws {
        let pool = try fixture.pool("pool", maxSessions: 3, waitTimeout: .seconds(30))
        let before = try await fixture.objectList("pool")
        try await pool.withSession { try Self.roundTrip($0, pool) }
        let baseline = pool.statistics
        #expect(baseline.openSessions == 1 && baseline.loginSessionOpen)

        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<48 {
                group.addTask {
                    for _ in 0..<10 { try await pool.withSession { try Self.roundTrip($0, pool) } }
                }
            }
            try await group.waitForAll()
        }

        let after = pool.statistics
        #expect(after.inUse == 0)
        #expect(after.waiting == 0)
        #expect(after.openSessions <= 3, "never more sessions than the cap")
        #expect(after.openSessions == after.idleSessions)
        await pool.closeIdleSessions()
        #expect(pool.statistics.openSessions == 0, "back to the baseline: only the login session")
        #expect(pool.statistics.loginSessionOpen)
        #expect(try await fixture.objectList("pool") == before, "no object left behind")
        await pool.shutdown()
    }

    /// The wait timeout runs on the pool's clock: a manual one here, so the test moves time past
    /// the timeout instead of waiting for it, and a session held by another caller is held
    /// until the test lets go of it (no sleeping on either side).
    @Test func waitersTimeOutWhenThePoolStaysBusy() async throws {
        let clock = ManualClock()
        let pool = try fixture.pool("pool", maxSessions: 1, waitTimeout: .seconds(5), clock: clock)
        try await pool.connect()
        let release = DispatchSemaphore(value: 0)
        defer { release.signal() }
        let (held, holding) = AsyncStream<Void>.makeStream()
        let holder = Task {
            try await pool.withSession { _ in
                holding.yield()
                release.wait()
            }
        }
        var iterator = held.makeAsyncIterator()
        await iterator.next()

        let waiter = Task { try await pool.withSession { _ in } }
        try await clock.waitForSleepers(1, "the waiter's timeout")
        #expect(pool.statistics.waiting == 1)
        clock.advance(by: .milliseconds(4_999))
        #expect(pool.statistics.waiting == 1, "still waiting just before the timeout")
        clock.advance(by: .milliseconds(1))
        let error = await #expect(throws: PKCS11Error(.poolTimeout)) { try await waiter.value }
        #expect(error?.reason.contains("pool size") == true)
        #expect(pool.statistics.waiting == 0)

        // A caller that waits less than the timeout gets the session as soon as it is free.
        let served = Task { try await pool.withSession { try Self.roundTrip($0, pool) } }
        try await clock.waitForSleepers(1, "the second waiter's timeout")
        release.signal()
        try await holder.value
        try await served.value
        clock.advance(by: .seconds(5))
        try await pool.withSession { try Self.roundTrip($0, pool) }
        await pool.shutdown()
    }

    struct CallerError: Error {}

    @Test func aCallersOwnErrorReturnsTheSessionToThePool() async throws {
        let pool = try fixture.pool("pool", maxSessions: 2)
        try await pool.withSession { try Self.roundTrip($0, pool) }
        for _ in 0..<5 {
            await #expect(throws: CallerError.self) { try await pool.withSession { _ in throw CallerError() } }
        }
        let statistics = pool.statistics
        #expect(statistics.openSessions == 1 && statistics.idleSessions == 1 && statistics.inUse == 0)
        await pool.shutdown()
    }

    /// An error in a borrow says on which token it arose, beside the function and module.
    @Test func errorsNameTheTokenTheyAroseOn() async throws {
        let pool = try fixture.pool("pool", maxSessions: 1)
        let error = await #expect(throws: PKCS11Error(.objectNotFound)) {
            try await pool.withSession { session in _ = try pool.resolve(ObjectQuery(label: "no-such-key", objectClass: .secretKey), in: session) }
        }
        #expect(error?.token == "pool")
        #expect(error?.description.contains(#"token "pool""#) == true, "\(String(describing: error))")
        let refused = await #expect(throws: PKCS11Error.self) {
            try await pool.withSession { session in _ = try session.unwrapKey([1, 2, 3], with: ObjectHandle(rawValue: 0xFFFF_FFF0), mechanism: .aesKeyWrapPad,
                                                                          template: [.class(.secretKey), .keyType(.aes), .token(false)]) }
        }
        #expect(refused?.function == .C_UnwrapKey && refused?.token == "pool", "\(String(describing: refused))")
        await pool.shutdown()
    }

    @Test func recoversWhenSessionsAreClosedBehindItsBack() async throws {
        let pool = try fixture.pool("pool")
        try await pool.withSession { try Self.roundTrip($0, pool) }
        let slot = try #require(pool.slot)
        // Every session of this process on the token goes, and the login with them.
        try pool.module.closeAllSessions(slot)
        try await pool.withSession { try Self.roundTrip($0, pool) }
        #expect(pool.health == .ready)
        try await pool.withSession { try Self.roundTrip($0, pool) }
        await pool.shutdown()
    }

    @Test func staleHandlesAreLookedUpAgain() async throws {
        let pool = try fixture.pool("pool")
        let label = "rotating-\(UInt32.random(in: 0...UInt32.max))"
        let query = ObjectQuery(label: label, objectClass: .secretKey)
        let first = try await pool.withSession { session in
            let key = try session.generateAESKey(bits: 256, token: true, label: label, usages: [.encrypt(true)])
            #expect(try pool.resolve(query, in: session) == key)
            return key
        }
        // Replace the key behind the cache's back: same label, new object, new handle.
        let second = try await pool.withSession { session in
            try session.destroyObject(first)
            return try session.generateAESKey(bits: 256, token: true, label: label, usages: [.encrypt(true)])
        }
        #expect(first != second)
        let ciphertext = try await pool.withSession { session in
            try session.encrypt(Array(repeating: 0, count: 16), with: try pool.resolve(query, in: session), mechanism: .aesECB)
        }
        #expect(ciphertext.count == 16)
        #expect(pool.statistics.cachedHandles >= 1)
        try await pool.withSession { session in try session.destroyObject(try pool.resolve(query, in: session)) }
        await pool.shutdown()
    }

    @Test func reinitialisesAfterTheModuleLosesItsInitialisation() async throws {
        let pool = try fixture.pool("pool")
        try await pool.withSession { try Self.roundTrip($0, pool) }
        // C_Finalize behind everyone's back: every call now answers CKR_CRYPTOKI_NOT_INITIALIZED.
        _ = pool.module.functions.pointee.C_Finalize?(nil)
        try await pool.withSession { try Self.roundTrip($0, pool) }
        #expect(pool.health == .ready)
        #expect(pool.statistics.reconnects >= 1)
        await pool.shutdown()
    }

    /// The backoff runs on the pool's clock: inside the window the pool does not touch the
    /// module; once it has passed, it tries again, and the next window is twice as long.
    @Test func unknownTokenIsReportedWithBackoff() async throws {
        let module = try ModuleManager.shared.module(at: SoftHSMFixture.modulePath)
        _ = fixture
        let clock = ManualClock()
        let pool = SessionPool(module: module, configuration: .init(token: TokenSelector(label: "absent"), pinSource: nil,
                                                                    backoffInitial: .seconds(60), backoffMaximum: .seconds(600), clock: clock))
        await #expect(throws: PKCS11Error(.tokenNotFound)) { try await pool.withSession { _ in } }
        let second = await #expect(throws: PKCS11Error(.tokenUnavailable)) { try await pool.withSession { _ in } }
        #expect(second?.reason.contains("next re-initialisation attempt in 60.0 seconds") == true, "\(String(describing: second))")
        if case .unavailable = pool.health {} else { Issue.record("health should be unavailable, is \(pool.health)") }

        clock.advance(by: .seconds(59))
        let third = await #expect(throws: PKCS11Error(.tokenUnavailable)) { try await pool.withSession { _ in } }
        #expect(third?.reason.contains("in 1.0 seconds") == true, "\(String(describing: third))")
        clock.advance(by: .seconds(1))
        await #expect(throws: PKCS11Error(.tokenNotFound), "the window has passed: the module is asked again") {
            try await pool.withSession { _ in }
        }
        let doubled = await #expect(throws: PKCS11Error(.tokenUnavailable)) { try await pool.withSession { _ in } }
        #expect(doubled?.reason.contains("in 120.0 seconds") == true, "\(String(describing: doubled))")
        await pool.shutdown()
    }
}

/// A wrong PIN costs the token one failed attempt, never more.
@Suite(.serialized) struct LoginTests {
    let fixture = SoftHSMFixture.shared

    @Test func wrongPINIsNeverRetriedAndTheRightOneStillWorks() async throws {
        let pinPath = NSTemporaryDirectory() + "wrong-pin-\(getpid())"
        try Data("00000000".utf8).write(to: URL(fileURLWithPath: pinPath))
        defer { try? FileManager.default.removeItem(atPath: pinPath) }
        let pool = try fixture.pool("pin", pinSource: .file(pinPath))

        let error = await #expect(throws: PKCS11Error(.returnValue(.pinIncorrect))) { try await pool.withSession { _ in } }
        #expect(error?.function == .C_Login)
        #expect(!(error?.description.contains("00000000") ?? true), "the PIN never appears in an error")

        // Correct the file: the pool still refuses without calling C_Login again, until reset.
        try Data(SoftHSMFixture.userPIN.utf8).write(to: URL(fileURLWithPath: pinPath))
        await #expect(throws: PKCS11Error(.returnValue(.pinIncorrect))) { try await pool.withSession { _ in } }
        if case .loginRefused = pool.health {} else { Issue.record("health should be loginRefused, is \(pool.health)") }

        pool.resetLogin()
        let state = try await pool.withSession { try $0.state() }
        #expect(state == 3, "CKS_RW_USER_FUNCTIONS: logged in with the right PIN; the token was not locked")
        let module = try ModuleManager.shared.module(at: SoftHSMFixture.modulePath)
        let info = try module.findToken(TokenSelector(label: "pin")).info
        #expect(!info.userPinLocked)
        await pool.shutdown()
    }
}
