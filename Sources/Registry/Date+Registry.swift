import Foundation

/// The Registry stores instants as INTEGER milliseconds since 1970-01-01T00:00:00Z: UTC by
/// construction, exact on a round trip (GRDB's default text format goes through a calendar and
/// can come back a few nanoseconds off, which would break `Equatable` and keyset cursors), and
/// ordered as numbers. In sqlite3: `datetime(created_at / 1000, 'unixepoch')`.
extension Date {
    /// Rounds to the nearest millisecond (not down: `Double(ms) / 1000 * 1000` can land just
    /// below `ms`, and flooring would then lose a millisecond on every round trip).
    var registryMilliseconds: Int64 {
        Int64((timeIntervalSince1970 * 1000).rounded())
    }

    init(registryMilliseconds milliseconds: Int64) {
        self.init(timeIntervalSince1970: Double(milliseconds) / 1000)
    }

    /// The value this date has once stored: what a later read returns.
    var registryNormalized: Date { Date(registryMilliseconds: registryMilliseconds) }

    /// ISO 8601 in UTC with milliseconds, for event payloads read by other programs.
    var registryISO8601: String {
        Date.ISO8601FormatStyle(includingFractionalSeconds: true, timeZone: .gmt).format(self)
    }
}
