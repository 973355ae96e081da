public import Foundation

extension JSONEncoder {
    /// The encoder of every JSON answer, REST or node protocol: sorted keys, RFC 3339 dates with
    /// milliseconds (as the registry keeps them). Made once: building an encoder per response
    /// showed in the kill-switch profile.
    public static let api: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(RFC3339.format(date))
        }
        return encoder
    }()
}
