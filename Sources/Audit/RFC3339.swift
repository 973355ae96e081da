import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// RFC 3339 timestamps in UTC with milliseconds (`2026-11-29T07:25:00.123Z`), the one form the
/// API, the registry and the audit log use. Written by hand: a Foundation date formatter costs
/// more to create than the rest of a response (it was 17% of the re-probe route's CPU).
public enum RFC3339 {
    public static func format(_ date: Date) -> String {
        format(milliseconds: Int64((date.timeIntervalSince1970 * 1000).rounded(.down)))
    }

    public static func format(milliseconds: Int64) -> String {
        let (secondsPart, fraction) = milliseconds.quotientAndRemainderFloored(dividingBy: 1000)
        var seconds = time_t(secondsPart)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int, _ width: Int) -> String {
            let text = String(value)
            return text.count >= width ? text : String(repeating: "0", count: width - text.count) + text
        }
        return "\(pad(Int(parts.tm_year) + 1900, 4))-\(pad(Int(parts.tm_mon) + 1, 2))-\(pad(Int(parts.tm_mday), 2))T"
            + "\(pad(Int(parts.tm_hour), 2)):\(pad(Int(parts.tm_min), 2)):\(pad(Int(parts.tm_sec), 2)).\(pad(Int(fraction), 3))Z"
    }

    /// Parses the form `format` writes, and also whole seconds, other fractions and numeric
    /// offsets, as callers type them in filters. Returns milliseconds since 1970.
    public static func parseMilliseconds(_ text: String) -> Int64? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) { return Int64((date.timeIntervalSince1970 * 1000).rounded(.down)) }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: text).map { Int64(($0.timeIntervalSince1970 * 1000).rounded(.down)) }
    }
}

extension Int64 {
    /// Division rounding towards negative infinity, so dates before 1970 format correctly.
    public func quotientAndRemainderFloored(dividingBy divisor: Int64) -> (quotient: Int64, remainder: Int64) {
        var (quotient, remainder) = quotientAndRemainder(dividingBy: divisor)
        if remainder < 0 {
            quotient -= 1
            remainder += divisor
        }
        return (quotient, remainder)
    }
}
