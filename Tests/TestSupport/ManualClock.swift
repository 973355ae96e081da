public import CMKCore
public import Foundation
import NIOConcurrencyHelpers

/// A clock that moves only when a test says so: a Swift `Clock` (timeouts, backoff: inject it
/// where the code takes `any Clock<Duration>`) and, through `wall`, a `WallClock` at the same
/// time (token lifetimes, key expiry). A task sleeping on it wakes when `advance` passes its
/// deadline, never on its own, so a test that checks a 5-second timeout takes microseconds
/// and cannot be late on a loaded machine.
///
/// The one race a test must close itself: advancing before the code under test has started to
/// sleep moves time under nobody. `waitForSleepers(_:)` waits until it has.
public final class ManualClock: Clock, Sendable {
    public struct Instant: InstantProtocol, Sendable, Hashable, CustomStringConvertible {
        /// Time since the clock was made.
        public var offset: Duration

        public func advanced(by duration: Duration) -> Instant { Instant(offset: offset + duration) }
        public func duration(to other: Instant) -> Duration { other.offset - offset }
        public static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.offset < rhs.offset }
        public var description: String { "ManualClock(+\(offset))" }
    }

    /// `ManualClock`'s time of day.
    public struct Wall: WallClock {
        let clock: ManualClock
        public var now: Date { clock.date }
    }

    private struct Sleeper {
        var id: UInt64
        var deadline: Instant
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var now = Instant(offset: .zero)
        var sleepers: [Sleeper] = []
        var nextID: UInt64 = 0
        /// Sleeps cancelled before they were registered.
        var cancelled: Set<UInt64> = []
    }

    private let state = NIOLockedValueBox(State())
    /// The wall time at `Instant(offset: .zero)`.
    public let start: Date

    /// A clock whose wall time starts at `start` (a fixed date by default, so that a test reads
    /// the same on every run).
    public init(start: Date = Date(timeIntervalSince1970: 1_800_000_000)) {
        self.start = start
    }

    public var now: Instant { state.withLockedValue { $0.now } }
    public var minimumResolution: Duration { .zero }

    /// The wall time now: `start` plus the time advanced so far.
    public var date: Date {
        let offset = now.offset.components
        return start.addingTimeInterval(Double(offset.seconds) + Double(offset.attoseconds) / 1e18)
    }

    /// This clock as a `WallClock`.
    public var wall: Wall { Wall(clock: self) }

    /// How many tasks are sleeping on the clock now.
    public var sleepers: Int { state.withLockedValue { $0.sleepers.count } }

    /// Moves time forward and wakes every sleeper whose deadline it reaches, earliest first.
    public func advance(by duration: Duration) {
        precondition(duration >= .zero, "a clock does not go back")
        let woken = state.withLockedValue { state -> [Sleeper] in
            state.now = state.now.advanced(by: duration)
            let now = state.now
            let due = state.sleepers.filter { $0.deadline <= now }.sorted { $0.deadline < $1.deadline }
            state.sleepers.removeAll { $0.deadline <= now }
            return due
        }
        for sleeper in woken { sleeper.continuation.resume() }
    }

    /// Waits (in real time, up to `timeout`) until at least `count` tasks sleep on the clock;
    /// throws, naming `what`, if they do not.
    public func waitForSleepers(_ count: Int = 1, _ what: String = "the code under test to sleep on the clock",
                                timeout: Duration = .seconds(10)) async throws {
        try await waitUntil("\(count) sleeper(s): \(what)", timeout: timeout, every: .milliseconds(1)) { sleepers >= count }
    }

    public func sleep(until deadline: Instant, tolerance: Duration? = nil) async throws {
        try Task.checkCancellation()
        let id = state.withLockedValue { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                enum Outcome { case sleep, wake, cancel }
                let outcome = state.withLockedValue { state -> Outcome in
                    if state.cancelled.remove(id) != nil { return .cancel }
                    if deadline <= state.now { return .wake }
                    state.sleepers.append(Sleeper(id: id, deadline: deadline, continuation: continuation))
                    return .sleep
                }
                switch outcome {
                case .sleep: break
                case .wake: continuation.resume()
                case .cancel: continuation.resume(throwing: CancellationError())
                }
            }
        } onCancel: {
            let sleeper = state.withLockedValue { state -> Sleeper? in
                guard let index = state.sleepers.firstIndex(where: { $0.id == id }) else {
                    state.cancelled.insert(id)
                    return nil
                }
                return state.sleepers.remove(at: index)
            }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }
}
