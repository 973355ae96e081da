import CMKCore
import Foundation
import KSI
@testable import PKCS11
import Testing
import TestSupport

/// The recovery table (Docs/PKCS11Recovery.md, section 1), row by row, against real SoftHSM
/// sessions under the fault-injecting module: each test makes one `C_*` call fail with the
/// row's code and checks, by the module's own call counts, what the session pool did about it
/// (dropped the session, logged in again, looked the key up again, re-initialised, or nothing).
///
/// Every test uses its own `PKCS11Token` on the `fault` token, so one test's pool state (a
/// refused login, a backoff) never reaches the next.
@Suite(.serialized) struct FaultInjectionTests {
    let fixture = SoftHSMFixture.shared
    let faults = FaultModule.shared
    var kek: KeyReference { .pkcs11(fixture.l1URI("fault")) }
    let material = SecretBytes(copying: (0..<32).map { UInt8(truncatingIfNeeded: $0 * 11 + 5) })

    /// A token on the shim, connected and warmed (mechanism chosen, L1's handle cached), with
    /// the counts starting from zero.
    func warmToken(pinSource: PINSource? = nil, maxSessions: Int = 2, waitTimeout: Duration = .seconds(5)) async throws -> PKCS11Token {
        try faults.inject()
        let module = try ModuleManager.shared.module(at: faults.path)
        let token = PKCS11Token(configuration: .init(
            name: "fault", modulePath: faults.path, token: TokenSelector(label: "fault"),
            pinSource: pinSource ?? .file(fixture.pinFile("fault")), maxSessions: maxSessions, waitTimeout: waitTimeout), module: module)
        _ = try await token.wrap(material, with: kek)
        return token
    }

    /// A rule's code in the form the shim reads.
    static func code(_ rv: ReturnValue) -> String { "0x" + String(rv.rawValue, radix: 16) }

    /// Wraps and checks the blob opens again, so a "recovered" call is a working one.
    func roundTrip(_ token: PKCS11Token) async throws {
        let wrapped = try await token.wrap(material, with: kek)
        let back = try await token.unwrap(wrapped, with: kek)
        #expect(back.isEqual(to: material))
    }

    // MARK: replaceSession

    @Test(arguments: [ReturnValue.sessionHandleInvalid, .sessionClosed])
    func lostSessionIsReplacedAndTheCallRetriedOnce(_ rv: ReturnValue) async throws {
        let token = try await warmToken()
        try faults.inject(["C_WrapKey 1 \(Self.code(rv))"])
        _ = try await token.wrap(material, with: kek)
        let counts = faults.counts()
        #expect(counts["C_WrapKey"] == 2, "one failure, one retry")
        #expect(counts["C_CloseSession"] == 1, "the failed session was dropped")
        #expect(counts["C_OpenSession"] == 1, "a new one was opened for the retry")
        #expect(counts["C_Login"] == nil, "the login session was still logged in: no login")
        #expect(counts["C_FindObjectsInit"] == nil, "the key handle stays cached: it did not go stale")
        #expect(token.pool.statistics.reconnects == 0)

        // Failing on the retry too: reported after exactly one retry, nothing more.
        try faults.inject(["C_WrapKey 1+ \(Self.code(rv))"])
        let error = await #expect(throws: KeystoreError.self) { try await token.wrap(material, with: kek) }
        #expect(error?.code == .internal)
        #expect(error?.detail?.contains(rv.name) == true)
        #expect(faults.count("C_WrapKey") == 2)
        try faults.inject()
        try await roundTrip(token)
        await token.shutdown()
    }

    /// A stale handle after a re-login: every session went (a real `C_Logout` takes the login
    /// state of the whole application with it), the operation's session reports
    /// `SESSION_HANDLE_INVALID`, the pool reconnects, logs in once and looks L1 up again by
    /// its label instead of trusting the cached handle.
    @Test func lostLoginBehindALostSessionReconnectsAndFindsTheKeyAgain() async throws {
        let token = try await warmToken()
        try await token.pool.withSession { try $0.logout() }
        // The first call of the operation (making the carrier key) is the one that fails.
        try faults.inject(["C_CreateObject 1 SESSION_HANDLE_INVALID"])
        _ = try await token.wrap(material, with: kek)
        let counts = faults.counts()
        #expect(counts["C_Login"] == 1, "logged in again, once")
        #expect(counts["C_FindObjectsInit"] == 1, "the cached L1 handle was looked up again")
        #expect(counts["C_CreateObject"] == 2 && counts["C_WrapKey"] == 1)
        #expect(token.pool.statistics.reconnects == 1)
        await token.shutdown()
    }

    // MARK: loginAgain

    /// The login state lost while the sessions survive (a real `C_Logout`): SoftHSM itself
    /// answers `CKR_USER_NOT_LOGGED_IN`, the pool logs in once from the PIN source and retries.
    @Test func lostLoginIsRenewedOnceFromThePINSource() async throws {
        let token = try await warmToken()
        try await token.pool.withSession { try $0.logout() }
        try faults.inject()
        _ = try await token.wrap(material, with: kek)
        #expect(faults.count("C_Login") == 1)
        #expect(faults.count("C_WrapKey") == 1)
        #expect(token.pool.statistics.reconnects == 0, "the login session survived: no reconnection")
        await token.shutdown()
    }

    /// `CKR_USER_NOT_LOGGED_IN` while the login session is in fact still logged in (another
    /// caller logged in meanwhile): no `C_Login` at all, the call is retried.
    @Test func userNotLoggedInWithTheLoginIntactRetriesWithoutALogin() async throws {
        let token = try await warmToken()
        try faults.inject(["C_WrapKey 1 USER_NOT_LOGGED_IN"])
        _ = try await token.wrap(material, with: kek)
        #expect(faults.count("C_Login") == 0)
        #expect(faults.count("C_WrapKey") == 2)
        await token.shutdown()
    }

    /// The re-login refused: the PIN error stops the pool; nothing tries the PIN again.
    @Test func reloginWithAWrongPINIsTriedOnceAndStopsThePool() async throws {
        let token = try await warmToken()
        try await token.pool.withSession { try $0.logout() }
        try faults.inject(["C_Login 1+ PIN_INCORRECT"])
        let error = await #expect(throws: KeystoreError.self) { try await token.wrap(material, with: kek) }
        #expect(error?.code == .permissionDenied)
        _ = await #expect(throws: KeystoreError.self) { try await token.wrap(material, with: kek) }
        #expect(await token.status().state == .loginRefused)
        #expect(faults.count("C_Login") == 1, "one C_Login for the whole sequence")
        await token.shutdown()
    }

    /// The re-login finds its login session closed, reconnects, and that connection's login is
    /// refused: the pool stops there too (the table used to say this path left the pool
    /// `notConnected`, which would have let the next call try the PIN again; it does not).
    @Test func reloginThatMustReconnectAndIsRefusedStopsThePool() async throws {
        let token = try await warmToken()
        try await token.pool.withSession { try $0.logout() }
        try faults.inject(["C_Login 1 SESSION_HANDLE_INVALID", "C_Login 2+ PIN_INCORRECT"])
        _ = await #expect(throws: KeystoreError.self) { try await token.wrap(material, with: kek) }
        _ = await #expect(throws: KeystoreError.self) { try await token.wrap(material, with: kek) }
        #expect(await token.status().state == .loginRefused)
        #expect(faults.count("C_Login") == 2, "the closed login session's attempt, then one PIN attempt, then none")
        await token.shutdown()
    }

    // MARK: refindObject

    @Test(arguments: [ReturnValue.objectHandleInvalid, .keyHandleInvalid, .wrappingKeyHandleInvalid])
    func staleKeyHandleIsLookedUpAgainOnTheSameSession(_ rv: ReturnValue) async throws {
        let token = try await warmToken()
        try faults.inject(["C_WrapKey 1 \(Self.code(rv))"])
        _ = try await token.wrap(material, with: kek)
        let counts = faults.counts()
        #expect(counts["C_FindObjectsInit"] == 1, "L1 found again by its label")
        #expect(counts["C_WrapKey"] == 2)
        #expect(counts["C_OpenSession"] == nil && counts["C_CloseSession"] == nil, "the session was kept")
        #expect(counts["C_Login"] == nil)
        await token.shutdown()
    }

    @Test func staleUnwrappingKeyHandleIsLookedUpAgain() async throws {
        let token = try await warmToken()
        let wrapped = try await token.wrap(material, with: kek)
        try faults.inject(["C_UnwrapKey 1 UNWRAPPING_KEY_HANDLE_INVALID"])
        let back = try await token.unwrap(wrapped, with: kek)
        #expect(back.isEqual(to: material))
        #expect(faults.count("C_FindObjectsInit") == 1)
        #expect(faults.count("C_UnwrapKey") == 2)
        await token.shutdown()
    }

    // MARK: reinitializeToken

    /// The device or token went away once: every session is dropped, the token is found again
    /// by its label, logged in once, L1 looked up again (its cached handle belonged to the old
    /// connection), and the call succeeds on the retry.
    @Test(arguments: [ReturnValue.deviceError, .tokenNotPresent, .deviceRemoved, .tokenNotRecognized, .slotIDInvalid, .cryptokiNotInitialized])
    func vanishedDeviceIsReinitialisedAndTheCallRetriedOnce(_ rv: ReturnValue) async throws {
        let token = try await warmToken()
        try faults.inject(["C_WrapKey 1 \(Self.code(rv))"])
        _ = try await token.wrap(material, with: kek)
        let counts = faults.counts()
        #expect(counts["C_WrapKey"] == 2)
        #expect((counts["C_CloseSession"] ?? 0) >= 2, "the working and the login session were closed")
        #expect((counts["C_GetSlotList"] ?? 0) >= 1, "the token was searched again")
        #expect(counts["C_Login"] == 1, "logged in once on the new connection")
        #expect(counts["C_FindObjectsInit"] == 1, "the stale L1 handle was looked up again")
        #expect(token.pool.statistics.reconnects == 1)
        #expect(token.pool.health == .ready)
        await token.shutdown()
    }

    /// Failing again after the re-initialisation: reported as unavailable, the token waits out
    /// its backoff without calling the module, and works again after it.
    @Test func deviceErrorOnTheRetryMarksTheTokenUnavailableWithBackoff() async throws {
        let token = try await warmToken()
        try faults.inject(["C_WrapKey 1+ DEVICE_ERROR"])
        let error = await #expect(throws: KeystoreError.self) { try await token.wrap(material, with: kek) }
        #expect(error?.code == .unavailable)
        #expect(faults.count("C_WrapKey") == 2, "retried exactly once")
        #expect(faults.count("C_Login") == 1)
        let searches = faults.count("C_GetSlotList")

        // Within the backoff (0.5 s): refused at once, the module is not called.
        let early = await #expect(throws: KeystoreError.self) { try await token.wrap(material, with: kek) }
        #expect(early?.code == .unavailable)
        #expect(early?.detail?.contains("next re-initialisation attempt") == true)
        #expect(faults.count("C_WrapKey") == 2 && faults.count("C_GetSlotList") == searches)
        if case .unavailable = token.pool.health {} else { Issue.record("health: \(token.pool.health)") }

        try faults.inject()
        try await Task.sleep(for: .milliseconds(700))
        try await roundTrip(token)
        #expect(token.pool.health == .ready)
        await token.shutdown()
    }

    // MARK: neverRetry

    /// A wrong PIN is tried exactly once: `C_Login` once, the token reports `login_refused`,
    /// and later calls fail at once without reaching `C_Login`, until an operator resets it.
    @Test(arguments: [ReturnValue.pinIncorrect, .pinInvalid, .pinLenRange, .pinExpired, .pinLocked, .userPinNotInitialized])
    func pinErrorIsTriedExactlyOnce(_ rv: ReturnValue) async throws {
        try faults.inject(["C_Login 1+ \(Self.code(rv))"])
        let module = try ModuleManager.shared.module(at: faults.path)
        let token = PKCS11Token(configuration: .init(name: "fault", modulePath: faults.path, token: TokenSelector(label: "fault"),
                                                     pinSource: .file(fixture.pinFile("fault"))), module: module)
        let error = await #expect(throws: KeystoreError.self) { try await token.wrap(material, with: kek) }
        #expect(error?.code == .permissionDenied)
        #expect(error?.detail?.contains(rv.name) == true)
        for _ in 0..<3 {
            _ = await #expect(throws: KeystoreError.self) { try await token.wrap(material, with: kek) }
        }
        let status = await token.status()
        #expect(status.state == .loginRefused)
        #expect(faults.count("C_Login") == 1, "exactly one attempt, however many calls followed")
        #expect(faults.count("C_WrapKey") == 0)

        // Corrected (here: the fault lifted), then reset by the operator: one login, working.
        try faults.inject()
        token.pool.resetLogin()
        try await roundTrip(token)
        #expect(faults.count("C_Login") == 1)
        #expect(await token.status().state == .available)
        await token.shutdown()
    }

    /// The operator's re-login (`PKCS11Token.loginAgain`, behind the REST endpoint): one
    /// `C_Login` per request; an unreadable PIN source makes no attempt and keeps the refusal,
    /// so nothing logs in later without being asked; a token logged in already is left alone.
    @Test func operatorReLoginTriesOncePerRequestAndAnUnreadablePINSourceChangesNothing() async throws {
        let pinFile = faults.directory + "/relogin-\(UInt32.random(in: 0...UInt32.max)).pin"
        try Data(SoftHSMFixture.userPIN.utf8).write(to: URL(fileURLWithPath: pinFile))
        defer { try? FileManager.default.removeItem(atPath: pinFile) }
        try faults.inject(["C_Login 1+ PIN_INCORRECT"])
        let module = try ModuleManager.shared.module(at: faults.path)
        let token = PKCS11Token(configuration: .init(name: "fault", modulePath: faults.path, token: TokenSelector(label: "fault"),
                                                     pinSource: .file(pinFile)), module: module)
        _ = await #expect(throws: KeystoreError.self) { try await token.wrap(material, with: kek) }
        #expect(faults.count("C_Login") == 1)

        // Still refused: one more attempt for the request, and the refusal stays.
        let again = await #expect(throws: KeystoreError.self) { try await token.loginAgain() }
        #expect(again?.code == .permissionDenied)
        #expect(faults.count("C_Login") == 2)
        #expect(await token.status().state == .loginRefused)

        // The PIN file gone: invalid input, no attempt, still refused; nothing tries later.
        try FileManager.default.removeItem(atPath: pinFile)
        let unreadable = await #expect(throws: KeystoreError.self) { try await token.loginAgain() }
        #expect(unreadable?.code == .invalidInput)
        #expect(await token.status().state == .loginRefused)
        try Data(SoftHSMFixture.userPIN.utf8).write(to: URL(fileURLWithPath: pinFile))
        try faults.inject()
        _ = await #expect(throws: KeystoreError.self) { try await token.wrap(material, with: kek) }
        #expect(await token.status().state == .loginRefused)
        #expect(faults.count("C_Login") == 0, "no login without the operator's request")

        // Corrected and asked: one login; asked again while logged in: none.
        #expect(try await token.loginAgain().state == .available)
        #expect(faults.count("C_Login") == 1)
        #expect(try await token.loginAgain().state == .available)
        #expect(faults.count("C_Login") == 1)
        try await roundTrip(token)
        await token.shutdown()
    }

    // MARK: report

    @Test(arguments: [ReturnValue.generalError, .functionFailed, .keyFunctionNotPermitted, .sessionCount, .deviceMemory, .mechanismInvalid])
    func otherErrorsAreReportedAndNeverRetried(_ rv: ReturnValue) async throws {
        let token = try await warmToken()
        try faults.inject(["C_WrapKey 1 \(Self.code(rv))"])
        let error = await #expect(throws: KeystoreError.self) { try await token.wrap(material, with: kek) }
        #expect(error?.detail?.contains(rv.name) == true)
        let counts = faults.counts()
        #expect(counts["C_WrapKey"] == 1, "not retried")
        #expect(counts["C_OpenSession"] == nil && counts["C_Login"] == nil && counts["C_FindObjectsInit"] == nil)
        #expect(token.pool.statistics.idleSessions == 1, "the session went back to the pool")
        try await roundTrip(token)
        #expect(faults.count("C_OpenSession") == 0, "and was used again")
        await token.shutdown()
    }

    // MARK: Hangs and crashes

    /// A module call that hangs holds its session; the pool has no timeout on a call in
    /// progress (a C call cannot be interrupted), but its bounded wait keeps every other caller
    /// from waiting forever: they get `poolTimeout` (unavailable) after `waitTimeout`. When the
    /// call returns, the pool works as before.
    @Test func hungCallMakesOtherCallersTimeOutNotWaitForever() async throws {
        let token = try await warmToken(maxSessions: 1, waitTimeout: .milliseconds(500))
        try faults.inject(["C_WrapKey 1 hang:3"])
        let hung = Task { try await token.wrap(material, with: kek) }
        // Wait (bounded) until the hung call is inside the module.
        let deadline = ContinuousClock.now + .seconds(10)
        while faults.count("C_WrapKey") < 1 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(faults.count("C_WrapKey") == 1)

        let started = ContinuousClock.now
        let error = await #expect(throws: KeystoreError.self) { try await token.wrap(material, with: kek) }
        let waited = ContinuousClock.now - started
        #expect(error?.code == .unavailable)
        #expect(error?.detail?.contains("session pool timeout") == true)
        #expect(waited < .seconds(2), "bounded by waitTimeout, not by the hang (waited \(waited))")

        _ = try await hung.value
        try await roundTrip(token)
        await token.shutdown()
    }

    /// A module that crashes takes its process with it (isolating it is another task). In a
    /// child process (`cmk hsm probe` on the shim) the child dies of the signal, and this
    /// process, with the same module loaded, goes on working.
    @Test(arguments: ["abort", "segfault"])
    func crashInTheModuleKillsOnlyTheChildProcess(_ action: String) async throws {
        let (function, signal) = action == "abort" ? ("C_WrapKey", SIGABRT) : ("C_Login", SIGSEGV)
        let cmk = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("cmk").path
        try #require(FileManager.default.isExecutableFile(atPath: cmk), "build the cmk product first")
        let control = faults.directory + "/child-control-\(action)"
        let countsFile = faults.directory + "/child-counts-\(action)"
        try Data("\(function) 1 \(action)\n".utf8).write(to: URL(fileURLWithPath: control))
        var uri = fixture.l1URI("fault")
        uri.modulePath = faults.path

        let process = Process()
        process.executableURL = URL(fileURLWithPath: cmk)
        process.arguments = ["hsm", "probe", uri.description]
        var environment = ProcessInfo.processInfo.environment
        for (key, value) in faults.childEnvironment(control: control, counts: countsFile) { environment[key] = value }
        // Swift's backtracer would catch the signal and symbolicate for seconds first.
        environment["SWIFT_BACKTRACE"] = "enable=no"
        process.environment = environment
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationReason == .uncaughtSignal)
        #expect(process.terminationStatus == signal)
        #expect(faults.counts(at: countsFile)[function] == 1, "the child reached the fatal call")

        let token = try await warmToken()
        try await roundTrip(token)
        await token.shutdown()
    }
}
