import CMKCore
package import Foundation

extension Duration {
    /// Whole microseconds, for audit records' `latencyMicros`.
    package var microseconds: Int64 { components.seconds * 1_000_000 + components.attoseconds / 1_000_000_000_000 }
    /// Whole nanoseconds, for metrics timers.
    package var nanoseconds: Int64 { components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000 }
}

/// RFC 3339 with milliseconds, as the API and the registry write times.
package func rfc3339(_ date: Date) -> String { RFC3339.format(date) }
