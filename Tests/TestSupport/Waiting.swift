import Foundation

/// What a test waited for and did not see in time.
public struct TimedOut: Error, CustomStringConvertible {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}

/// Waits for a condition instead of for an amount of time: checks `condition` every `interval`
/// until it holds, and throws `TimedOut` naming `what` when `timeout` (real time) passes first.
/// An error thrown by `condition` counts as "not yet" (a server that does not answer yet), and
/// the last one is named in the failure.
public func waitUntil(_ what: String, timeout: Duration = .seconds(15), every interval: Duration = .milliseconds(20),
                      _ condition: () async throws -> Bool) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now.advanced(by: timeout)
    var lastError: (any Error)?
    while true {
        do {
            if try await condition() { return }
            lastError = nil
        } catch {
            lastError = error
        }
        guard clock.now < deadline else {
            throw TimedOut("timed out after \(timeout) waiting for \(what)" + (lastError.map { " (last error: \($0))" } ?? ""))
        }
        try await Task.sleep(for: interval)
    }
}

/// As `waitUntil`, for synchronous code that may block its thread (starting a child process
/// from a synchronous initialiser).
public func blockUntil(_ what: String, timeout: Duration = .seconds(30), every interval: Duration = .milliseconds(20),
                       _ condition: () throws -> Bool) throws {
    let clock = ContinuousClock()
    let deadline = clock.now.advanced(by: timeout)
    var lastError: (any Error)?
    while true {
        do {
            if try condition() { return }
            lastError = nil
        } catch {
            lastError = error
        }
        guard clock.now < deadline else {
            throw TimedOut("timed out after \(timeout) waiting for \(what)" + (lastError.map { " (last error: \($0))" } ?? ""))
        }
        let parts = interval.components
        usleep(useconds_t(parts.seconds * 1_000_000 + parts.attoseconds / 1_000_000_000_000))
    }
}
