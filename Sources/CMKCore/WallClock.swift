public import Foundation

/// The time of day, for code that compares against dates that come from outside the process
/// (an OAuth2 token's lifetime, a key's `exp` and `nbf`, a request signature's date). Injected,
/// with the system clock as the default, so that a test can move time instead of waiting for it
/// (Tests/TestSupport's `ManualClock`). Durations measured inside the process (timeouts,
/// backoff) use Swift's `Clock` protocol instead, with `ContinuousClock` as the default.
public protocol WallClock: Sendable {
    var now: Date { get }
}

/// The system's wall clock: `Date()`.
public struct SystemWallClock: WallClock {
    public init() {}

    public var now: Date { Date() }
}

extension WallClock where Self == SystemWallClock {
    /// The system's wall clock, the default wherever a `WallClock` is injected.
    public static var system: SystemWallClock { SystemWallClock() }
}
