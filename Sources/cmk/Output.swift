import ArgumentParser
import Foundation
import KSI

/// The CLI's exit codes (sysexits.h numbers, so scripts can tell the cases apart).
enum ExitStatus: Int32 {
    case success = 0
    case badInput = 64
    case refused = 65
    case unavailable = 69
    case `internal` = 70

    init(_ code: KeystoreError.Code) {
        switch code {
        case .invalidInput: self = .badInput
        case .notFound, .permissionDenied, .unsupported, .conflict: self = .refused
        case .unavailable: self = .unavailable
        case .internal: self = .internal
        }
    }
}

struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print JSON instead of text.")
    var json = false
}

enum Output {
    static func json<T: Encodable>(_ value: T) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(value) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    struct ErrorBody: Encodable {
        struct Inner: Encodable {
            var code: String
            var message: String
            var detail: String?
        }
        var error: Inner
    }

    /// Prints the error (JSON on stdout with `--json`, text on stderr otherwise) and returns the
    /// exit code for it. Anything that is not a `KeystoreError` prints as an opaque internal error.
    static func fail(_ error: any Error, json: Bool) -> ExitCode {
        let keystoreError = error as? KeystoreError ?? KeystoreError(.internal, "unexpected error: \(type(of: error))")
        if json {
            print(Self.json(ErrorBody(error: .init(code: keystoreError.code.rawValue, message: keystoreError.reason, detail: keystoreError.detail))))
        } else {
            var text = "error: \(keystoreError.reason)"
            if let detail = keystoreError.detail { text += "\n  cause: \(detail)" }
            FileHandle.standardError.write(Data((text + "\n").utf8))
        }
        return ExitCode(ExitStatus(keystoreError.code).rawValue)
    }

    /// A probe report, check by check; a failed probe exits with its keystore code's status.
    static func probe(_ report: ProbeReport, json: Bool) throws {
        if json {
            print(Output.json(report))
        } else {
            print("probe of \(report.key)")
            for check in report.checks {
                print("  \(check.passed ? "ok  " : "FAIL") \(check.name.padding(toLength: 13, withPad: " ", startingAt: 0)) \(check.detail)")
            }
            let latency = String(format: "%.1f ms", report.latencyMilliseconds)
            if report.passed {
                print("PASSED with \(report.mechanism ?? "?") in \(latency)")
            } else {
                print("FAILED in \(latency): \(report.failure?.reason ?? "")")
                if let detail = report.failure?.detail { print("  cause: \(detail)") }
            }
        }
        if let failure = report.failure {
            throw ExitCode(ExitStatus(failure.code).rawValue)
        }
    }
}
