/// A key on a KMIP server, named by its Unique Identifier: `kmip:<unique-identifier>`. The
/// server itself is the keystore's (its configuration names host, port and TLS identity), so a
/// reference cannot send the gateway's client certificate elsewhere. KMIP identifiers are
/// server-chosen text (PyKMIP: `1`, `2`, …; others: UUIDs); any printable ASCII without spaces,
/// up to 256 characters, is accepted.
public struct KMIPKeyReference: Sendable, Hashable, CustomStringConvertible {
    public let uniqueIdentifier: String

    public static let scheme = "kmip:"

    public init(uniqueIdentifier: String) throws {
        guard !uniqueIdentifier.isEmpty else {
            throw KeystoreError(.invalidInput, "malformed KMIP key reference: expected kmip:<unique identifier>, the identifier is empty")
        }
        guard uniqueIdentifier.utf8.count <= 256 else {
            throw KeystoreError(.invalidInput, "malformed KMIP key reference: the unique identifier is longer than 256 characters")
        }
        guard uniqueIdentifier.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw KeystoreError(.invalidInput, "malformed KMIP key reference: the unique identifier must be printable ASCII without spaces")
        }
        self.uniqueIdentifier = uniqueIdentifier
    }

    public init(parsing text: String) throws {
        guard text.lowercased().hasPrefix(Self.scheme) else {
            throw KeystoreError(.invalidInput, "malformed KMIP key reference: expected kmip:<unique identifier>")
        }
        try self.init(uniqueIdentifier: String(text.dropFirst(Self.scheme.count)))
    }

    public var description: String { Self.scheme + uniqueIdentifier }
}
