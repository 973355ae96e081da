import CPKCS11
import Foundation
import NIOConcurrencyHelpers

/// The sessions of one token, lent to one caller at a time.
///
/// - One persistent session holds the login: PKCS#11 login state belongs to the
///   application and lasts while any of its sessions on the token is open.
/// - Up to `capacity` read-write working sessions (the configured size, lowered to the token's
///   own maximum), opened on demand and kept for reuse.
/// - Callers beyond the capacity wait, at most `waitTimeout`, then get `poolTimeout`.
/// - Every `C_*` call runs on the pool's own threads (`PKCS11Executor`, one per session), never
///   on Swift's cooperative pool: PKCS#11 calls block, sometimes for milliseconds on a network HSM.
/// - Failures follow the recovery table (`Recovery`): a lost session is replaced, a lost login
///   is renewed, a stale handle is looked up again, each retried once; a vanished device marks
///   the token unavailable and it is re-initialised with exponential backoff; a refused PIN is
///   never retried.
public final class SessionPool: Sendable {
    public struct Configuration: Sendable {
        public var token: TokenSelector
        public var pinSource: PINSource?
        public var maxSessions: Int
        public var waitTimeout: Duration
        public var mechanismCodes: MechanismCodes
        public var backoffInitial: Duration
        public var backoffMaximum: Duration
        /// What the wait timeout and the re-initialisation backoff are measured on: the
        /// continuous clock, or in tests a manual one that moves only when told to.
        public var clock: any Clock<Duration>

        public init(token: TokenSelector, pinSource: PINSource?, maxSessions: Int = 4, waitTimeout: Duration = .seconds(5),
                    mechanismCodes: MechanismCodes = MechanismCodes(), backoffInitial: Duration = .milliseconds(500),
                    backoffMaximum: Duration = .seconds(30), clock: any Clock<Duration> = ContinuousClock()) {
            self.token = token
            self.pinSource = pinSource
            self.maxSessions = maxSessions
            self.waitTimeout = waitTimeout
            self.mechanismCodes = mechanismCodes
            self.backoffInitial = backoffInitial
            self.backoffMaximum = backoffMaximum
            self.clock = clock
        }
    }

    public enum Health: Sendable, Equatable, CustomStringConvertible {
        case notConnected
        case ready
        case unavailable(reason: String)
        case loginRefused(reason: String)
        case closed

        public var description: String {
            switch self {
            case .notConnected: return "not connected"
            case .ready: return "ready"
            case .unavailable(let reason): return "unavailable: \(reason)"
            case .loginRefused(let reason): return "login refused: \(reason)"
            case .closed: return "closed"
            }
        }
    }

    public struct Statistics: Sendable, Equatable {
        /// Working sessions open (idle + in use), not counting the login session.
        public var openSessions: Int
        public var idleSessions: Int
        public var inUse: Int
        public var waiting: Int
        public var capacity: Int
        public var loginSessionOpen: Bool
        public var reconnects: Int
        public var cachedHandles: Int
    }

    /// A session while the pool owns it (idle, or the login session). The only place a
    /// `Session` crosses threads: the pool hands each to one borrower at a time, on its own
    /// threads, and takes it back when the borrow ends.
    struct Owned: @unchecked Sendable {
        let session: Session
    }

    struct Connection: Sendable {
        var slot: SlotID
        var info: TokenInfo
        private var owned: Owned
        var generation: Int
        var loginSession: Session { owned.session }

        init(slot: SlotID, info: TokenInfo, loginSession: Session, generation: Int) {
            (self.slot, self.info, self.owned, self.generation) = (slot, info, Owned(session: loginSession), generation)
        }
    }

    private enum Phase {
        case notConnected
        case connected(Connection)
        /// `retryAt`: on the pool's clock, as time since the pool was made.
        case unavailable(PKCS11Error, attempts: Int, retryAt: Duration)
        case loginRefused(PKCS11Error)
        case closed
    }

    private struct Waiter {
        var id: UInt64
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var phase: Phase = .notConnected
        var idle: [(owned: Owned, generation: Int)] = []
        var openSessions = 0
        var inUse = 0
        var capacity: Int
        var waiters: [Waiter] = []
        var nextWaiterID: UInt64 = 0
        var handles: [ObjectQuery: ObjectHandle] = [:]
        var generation = 0
        var reconnects = 0
    }

    public let module: Module
    public let configuration: Configuration
    private let state: NIOLockedValueBox<State>
    /// Serialises (re)connection; only ever taken on the pool's own threads.
    private let connectLock = NIOLock()
    /// The pool's own threads; `PKCS11Token.executor` exposes them to callers that want to run
    /// on them (see `PKCS11Executor`).
    public let executor: PKCS11Executor
    private let clock: ElapsedTime

    public init(module: Module, configuration: Configuration) {
        self.module = module
        self.configuration = configuration
        self.clock = ElapsedTime(configuration.clock)
        let capacity = max(1, configuration.maxSessions)
        self.state = NIOLockedValueBox(State(capacity: capacity))
        let label = configuration.token.label ?? configuration.token.serial ?? "token"
        self.executor = PKCS11Executor(name: "pkcs11-\(label)", threads: capacity)
    }

    deinit {
        executor.shutdown()
    }

    // MARK: Public operations

    /// Runs `body` with a session of this token, on one of the pool's threads. The session is
    /// the caller's alone until `body` returns; it must not escape.
    public func withSession<T: Sendable>(_ body: @escaping @Sendable (Session) throws -> T) async throws -> T {
        do {
            try await reserve()
        } catch let error as PKCS11Error {
            throw error.on(token: configuredLabel)
        }
        do {
            let result = try await executor.run { try self.run(body) }
            release()
            return result
        } catch let error as PKCS11Error {
            release()
            throw error.on(token: configuredLabel)
        } catch {
            release()
            throw error
        }
    }

    /// The handle of the one object matching `query`, from the cache or a lookup on `session`.
    /// Call it inside `withSession`; a stale handle is refreshed by the recovery table.
    public func resolve(_ query: ObjectQuery, in session: Session) throws -> ObjectHandle {
        if let cached = state.withLockedValue({ $0.handles[query] }) { return cached }
        let found = try session.findObjects(query.template, limit: 2)
        guard let handle = found.first else {
            throw PKCS11Error(.objectNotFound, module: module.path, reason: "no \(query) on token \"\(tokenLabel)\"")
        }
        guard found.count == 1 else {
            throw PKCS11Error(.ambiguousObject, module: module.path,
                              reason: "more than one \(query) on token \"\(tokenLabel)\"; name the key by label and id")
        }
        state.withLockedValue { $0.handles[query] = handle }
        return handle
    }

    /// Forgets cached handles (after keys were deleted or re-created on the token).
    public func invalidateHandles() {
        state.withLockedValue { $0.handles.removeAll() }
    }

    /// Connects now (finds the token, opens the login session, logs in) instead of at first use.
    public func connect() async throws {
        do {
            _ = try await executor.run { try self.ensureConnected() }
        } catch let error as PKCS11Error {
            throw error.on(token: configuredLabel)
        }
    }

    public var health: Health {
        state.withLockedValue { state in
            switch state.phase {
            case .notConnected: return .notConnected
            case .connected: return .ready
            case .unavailable(let error, _, _): return .unavailable(reason: error.description)
            case .loginRefused(let error): return .loginRefused(reason: error.description)
            case .closed: return .closed
            }
        }
    }

    public var statistics: Statistics {
        state.withLockedValue { state in
            var loginOpen = false
            if case .connected = state.phase { loginOpen = true }
            return Statistics(openSessions: state.openSessions, idleSessions: state.idle.count, inUse: state.inUse,
                              waiting: state.waiters.count, capacity: state.capacity, loginSessionOpen: loginOpen,
                              reconnects: state.reconnects, cachedHandles: state.handles.count)
        }
    }

    /// The token as found at connection, if connected.
    public var tokenInfo: TokenInfo? {
        state.withLockedValue { state in
            if case .connected(let connection) = state.phase { return connection.info }
            return nil
        }
    }

    /// The slot the token sits in while connected.
    public var slot: SlotID? {
        state.withLockedValue { state in
            if case .connected(let connection) = state.phase { return connection.slot }
            return nil
        }
    }

    private var tokenLabel: String { tokenInfo?.label ?? configuredLabel }
    /// Safe to use while holding the state lock.
    private var configuredLabel: String { configuration.token.label ?? configuration.token.serial ?? "?" }

    /// Clears a refused login after an operator corrected the PIN source. The next operation
    /// logs in once more. Never called automatically; the operator's request
    /// (`POST /api/v1/keystores/{keystore}/login`) uses `retryRefusedLogin()`.
    public func resetLogin() {
        state.withLockedValue { state in
            if case .loginRefused = state.phase { state.phase = .notConnected }
        }
    }

    /// The operator's re-login after a refused PIN: clears the refusal and connects, which reads
    /// the PIN source and makes one `C_Login`; connected already, it does nothing. Under the
    /// connection lock, so concurrent requests and operations make one attempt between them.
    /// If the PIN source cannot be read, nothing was tried and nothing changes: the refusal
    /// stays (clearing it would let the next operation try whatever the file holds later,
    /// without anyone asking).
    public func retryRefusedLogin() async throws {
        do {
            _ = try await executor.run {
                try self.connectLock.withLock {
                    let refused = self.state.withLockedValue { state -> PKCS11Error? in
                        guard case .loginRefused(let error) = state.phase else { return nil }
                        state.phase = .notConnected
                        return error
                    }
                    do {
                        return try self.ensureConnectedLocked()
                    } catch let error as PKCS11Error where error.code == .pinSourceUnavailable {
                        if let refused {
                            self.state.withLockedValue { state in
                                if case .notConnected = state.phase { state.phase = .loginRefused(refused) }
                            }
                        }
                        throw error
                    }
                }
            }
        } catch let error as PKCS11Error {
            throw error.on(token: configuredLabel)
        }
    }

    /// Closes the idle working sessions (they reopen on demand); the login session stays.
    public func closeIdleSessions() async {
        let idle = state.withLockedValue { state -> [Owned] in
            let sessions = state.idle.map(\.owned)
            state.openSessions -= sessions.count
            state.idle.removeAll()
            return sessions
        }
        _ = try? await executor.run { for owned in idle { owned.session.close() } }
    }

    /// Closes every session and stops the pool's threads. Waiting callers get `poolClosed`.
    public func shutdown() async {
        let (sessions, waiters) = state.withLockedValue { state -> ([Owned], [Waiter]) in
            var sessions = state.idle.map(\.owned)
            if case .connected(let connection) = state.phase { sessions.append(Owned(session: connection.loginSession)) }
            state.idle.removeAll()
            state.openSessions = state.inUse
            state.phase = .closed
            let waiters = state.waiters
            state.waiters.removeAll()
            return (sessions, waiters)
        }
        for waiter in waiters {
            waiter.continuation.resume(throwing: PKCS11Error(.poolClosed, module: module.path))
        }
        _ = try? await executor.run { for owned in sessions { owned.session.close() } }
        executor.shutdown()
    }

    // MARK: Reservation (bounded concurrency, wait timeout)

    private func reserve() async throws {
        enum Decision { case go, wait(UInt64), fail(PKCS11Error) }
        // Decide and enqueue under one lock, so that a release between the two cannot be missed.
        func decide(_ state: inout State, _ continuation: CheckedContinuation<Void, any Error>?) -> Decision {
            if case .closed = state.phase { return .fail(PKCS11Error(.poolClosed, module: module.path)) }
            if state.inUse < state.capacity {
                state.inUse += 1
                return .go
            }
            guard let continuation else { return .wait(0) }
            state.nextWaiterID += 1
            state.waiters.append(Waiter(id: state.nextWaiterID, continuation: continuation))
            return .wait(state.nextWaiterID)
        }
        switch state.withLockedValue({ decide(&$0, nil) }) {
        case .go: return
        case .fail(let error): throw error
        case .wait: break
        }
        let timeout = configuration.waitTimeout
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            switch state.withLockedValue({ decide(&$0, continuation) }) {
            case .go:
                continuation.resume()
            case .fail(let error):
                continuation.resume(throwing: error)
            case .wait(let id):
                Task { [weak self, clock] in
                    try? await clock.sleep(for: timeout)
                    self?.expireWaiter(id)
                }
            }
        }
    }

    private func expireWaiter(_ id: UInt64) {
        let waiter = state.withLockedValue { state -> Waiter? in
            guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return state.waiters.remove(at: index)
        }
        waiter?.continuation.resume(throwing: PKCS11Error(
            .poolTimeout, module: module.path,
            reason: "no session of token \"\(tokenLabel)\" became free within \(configuration.waitTimeout); raise the pool size or lower the load"))
    }

    private func release() {
        let next = state.withLockedValue { state -> Waiter? in
            if !state.waiters.isEmpty, state.inUse <= state.capacity {
                // The slot passes straight to the next caller: inUse stays the same.
                return state.waiters.removeFirst()
            }
            state.inUse -= 1
            return nil
        }
        next?.continuation.resume()
    }

    // MARK: Running on a pool thread

    private func run<T>(_ body: (Session) throws -> T) throws -> T {
        var connection = try ensureConnected()
        var lease = try checkOut(connection)
        // One attempt, and after a recovery one retry, whose failure is reported.
        for retry in [true, false] {
            do {
                let result = try body(lease.session)
                checkIn(lease)
                return result
            } catch let error as PKCS11Error {
                try recover(from: error, lease: lease, connection: &connection, retry: retry)
                lease = try checkOut(connection)
            } catch {
                // An error of the caller's own (a KSI check): the session is fine.
                checkIn(lease)
                throw error
            }
        }
        preconditionFailure("the last attempt returns or throws")
    }

    /// Does what the recovery table says for `error` (Docs/PKCS11Recovery.md) with the borrowed
    /// session, and returns when the operation may be tried again (`retry`, on a fresh session
    /// of `connection`); otherwise throws `error`.
    private func recover(from error: PKCS11Error, lease: Lease, connection: inout Connection, retry: Bool) throws {
        switch error.recovery {
        case .report:
            checkIn(lease)
            throw error
        case .refindObject:
            checkIn(lease)
            guard retry else { throw error }
            invalidateHandles()
        case .replaceSession:
            discard(lease)
            guard retry else { throw error }
            // If every session was closed (C_CloseAllSessions, a module restart), the login
            // went with them: reconnect, which logs in again from the PIN source.
            if !connection.loginSession.isLoggedIn && configuration.pinSource != nil {
                disconnect(after: error, generation: connection.generation)
                connection = try ensureConnected()
            }
        case .loginAgain:
            discard(lease)
            guard retry else { throw error }
            try relogin(connection)
        case .reinitializeToken:
            discard(lease)
            // A second failure after re-initialising marks the token unavailable (backoff).
            disconnect(after: error, generation: connection.generation, markUnavailable: !retry)
            guard retry else { throw error }
            connection = try ensureConnected()
        case .neverRetry:
            discard(lease)
            state.withLockedValue { $0.phase = .loginRefused(error) }
            throw error
        }
    }

    private struct Lease {
        var session: Session
        var generation: Int
    }

    private func checkOut(_ connection: Connection) throws -> Lease {
        let reused = state.withLockedValue { state -> Lease? in
            while let (owned, generation) = state.idle.popLast() {
                if generation == state.generation { return Lease(session: owned.session, generation: generation) }
                state.openSessions -= 1
                owned.session.close()
            }
            state.openSessions += 1
            return nil
        }
        if let reused { return reused }
        do {
            let session = try module.openSession(connection.slot, readWrite: true, codes: configuration.mechanismCodes)
            return Lease(session: session, generation: connection.generation)
        } catch {
            state.withLockedValue { $0.openSessions -= 1 }
            if let error = error as? PKCS11Error, error.recovery == .reinitializeToken {
                disconnect(after: error, generation: connection.generation)
            }
            throw error
        }
    }

    private func checkIn(_ lease: Lease) {
        let stale = state.withLockedValue { state -> Bool in
            guard lease.generation == state.generation, case .connected = state.phase, !lease.session.mustClose else {
                state.openSessions -= 1
                return true
            }
            state.idle.append((Owned(session: lease.session), lease.generation))
            return false
        }
        if stale { lease.session.close() }
    }

    private func discard(_ lease: Lease) {
        state.withLockedValue { $0.openSessions -= 1 }
        lease.session.close()
    }

    // MARK: Connection, login, re-initialisation

    private func currentConnection() throws -> Connection? {
        try state.withLockedValue { state -> Connection? in
            switch state.phase {
            case .connected(let connection): return connection
            case .closed: throw PKCS11Error(.poolClosed, module: module.path)
            case .loginRefused(let error): throw error
            case .unavailable(let error, _, let retryAt):
                let now = clock.elapsed()
                if now < retryAt {
                    throw PKCS11Error(.tokenUnavailable, module: module.path,
                                      reason: "token \"\(configuredLabel)\" is unavailable (\(error.code)); next re-initialisation attempt in \(retryAt - now)")
                }
                return nil
            case .notConnected: return nil
            }
        }
    }

    private func ensureConnected() throws -> Connection {
        if let connection = try currentConnection() { return connection }
        return try connectLock.withLock { try ensureConnectedLocked() }
    }

    private func openConnection() throws -> Connection {
        let found: (slot: SlotID, info: TokenInfo)
        do {
            found = try module.findToken(configuration.token)
        } catch let error as PKCS11Error where error.code == .returnValue(.cryptokiNotInitialized) {
            // The module lost its initialisation (finalised behind our back): initialise again.
            try module.reinitialize()
            found = try module.findToken(configuration.token)
        }
        let generation = state.withLockedValue { state -> Int in
            state.reconnects += state.generation > 0 ? 1 : 0
            return state.generation + 1
        }
        let capacity = Self.capacity(configured: configuration.maxSessions, token: found.info)
        state.withLockedValue { $0.capacity = capacity }
        // Read-write: some modules (AWS CloudHSM's) refuse C_Login on a read-only session.
        let loginSession = try module.openSession(found.slot, readWrite: true, codes: configuration.mechanismCodes)
        if let pinSource = configuration.pinSource, found.info.loginRequired {
            // The PIN lives in wiped memory for the length of this scope only.
            let pin = try pinSource.read()
            try loginSession.login(pin: pin)
        }
        return Connection(slot: found.slot, info: found.info, loginSession: loginSession, generation: generation)
    }

    /// The configured size, lowered to what the token allows (`ulMaxRwSessionCount` and
    /// `ulMaxSessionCount`, each minus the read-write login session).
    static func capacity(configured: Int, token: TokenInfo) -> Int {
        var capacity = max(1, configured)
        if let maxRw = token.maxRwSessionCount { capacity = min(capacity, max(1, Int(maxRw) - 1)) }
        if let maxAll = token.maxSessionCount { capacity = min(capacity, max(1, Int(maxAll) - 1)) }
        return max(1, capacity)
    }

    private func relogin(_ connection: Connection) throws {
        guard let pinSource = configuration.pinSource else {
            throw PKCS11Error(.returnValue(.userNotLoggedIn), function: .C_Login, module: module.path,
                              reason: "the token requires a login and no PIN source is configured")
        }
        try connectLock.withLock {
            // Another caller may have logged in, or been refused, while this one waited.
            if case .loginRefused(let error) = state.withLockedValue({ $0.phase }) { throw error }
            if connection.loginSession.isLoggedIn { return }
            let pin = try pinSource.read()
            do {
                try connection.loginSession.login(pin: pin)
            } catch let error as PKCS11Error where error.recovery == .neverRetry {
                state.withLockedValue { $0.phase = .loginRefused(error) }
                throw error
            } catch let error as PKCS11Error where error.recovery == .replaceSession {
                // The login session itself was closed: reconnect from scratch, with the same
                // rules as a first connection (a refused PIN stops every later attempt).
                disconnect(after: error, generation: connection.generation, markUnavailable: false)
                _ = try ensureConnectedLocked()
            }
        }
    }

    /// Connects unless connected; the caller holds `connectLock`. A refused PIN puts the pool in
    /// `loginRefused` (never retried); other failures start the backoff, except an unreadable
    /// PIN source, which is the operator's to fix and costs the token nothing.
    private func ensureConnectedLocked() throws -> Connection {
        if let connection = try currentConnection() { return connection }
        do {
            let connection = try openConnection()
            state.withLockedValue { state in
                state.phase = .connected(connection)
                state.generation = connection.generation
                state.handles.removeAll()
            }
            return connection
        } catch let error as PKCS11Error {
            if error.recovery == .neverRetry {
                state.withLockedValue { $0.phase = .loginRefused(error) }
            } else if error.code != .pinSourceUnavailable {
                markUnavailable(error)
            }
            throw error
        }
    }

    private func disconnect(after error: PKCS11Error, generation: Int, markUnavailable mark: Bool = false) {
        let sessions = state.withLockedValue { state -> [Owned] in
            guard case .connected(let connection) = state.phase, connection.generation == generation else { return [] }
            var sessions = state.idle.map(\.owned)
            sessions.append(Owned(session: connection.loginSession))
            state.openSessions -= state.idle.count
            state.idle.removeAll()
            state.handles.removeAll()
            state.phase = .notConnected
            return sessions
        }
        for owned in sessions { owned.session.close() }
        if mark { markUnavailable(error) }
    }

    private func markUnavailable(_ error: PKCS11Error) {
        state.withLockedValue { state in
            let attempts: Int
            if case .unavailable(_, let previous, _) = state.phase { attempts = previous + 1 } else { attempts = 1 }
            let delay = Self.backoff(attempt: attempts, initial: configuration.backoffInitial, maximum: configuration.backoffMaximum)
            state.phase = .unavailable(error, attempts: attempts, retryAt: clock.elapsed() + delay)
        }
    }

    /// Exponential backoff: initial × 2^(attempt-1), capped.
    static func backoff(attempt: Int, initial: Duration, maximum: Duration) -> Duration {
        let factor = 1 << min(max(attempt - 1, 0), 20)
        let delay = initial * factor
        return delay > maximum ? maximum : delay
    }
}

/// A clock seen as the time elapsed since it was handed over, so that the pool need not be
/// generic over its clock's instant type; sleeping goes to the clock itself.
struct ElapsedTime: Sendable {
    let elapsed: @Sendable () -> Duration
    private let sleeper: @Sendable (Duration) async throws -> Void

    init<C: Clock>(_ clock: C) where C.Duration == Duration {
        let origin = clock.now
        elapsed = { origin.duration(to: clock.now) }
        sleeper = { try await clock.sleep(for: $0) }
    }

    func sleep(for duration: Duration) async throws { try await sleeper(duration) }
}
