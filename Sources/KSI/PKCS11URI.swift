import Foundation

/// A PKCS#11 URI (RFC 7512): the name of a token, a key on it, and optionally the module and
/// PIN source, in one string an operator can paste.
///
///     pkcs11:token=acme;object=root;type=secret-key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=env:HSM_PIN
///
/// The parser follows the RFC's grammar: path attributes separated by `;`, query attributes by
/// `&`, each attribute at most once, values percent-decoded (`pk11-pchar`, `pk11-qchar`),
/// vendor attributes kept aside. Whether a parsed URI is acceptable to the gateway (a PIN value
/// in the URI, vendor attributes it cannot honour) is decided by `KeyReference`, not here.
public struct PKCS11URI: Sendable, Hashable, CustomStringConvertible {
    // Path attributes.
    public var token: String?
    public var manufacturer: String?
    public var serial: String?
    public var model: String?
    public var libraryManufacturer: String?
    public var libraryDescription: String?
    public var libraryVersion: String?
    public var object: String?
    public var type: String?
    public var id: [UInt8]?
    public var slotDescription: String?
    public var slotManufacturer: String?
    public var slotID: UInt?
    /// Vendor path attributes, in order.
    public var vendorPath: [(name: String, value: String)] = []

    // Query attributes.
    public var pinSource: String?
    public var pinValue: String?
    public var moduleName: String?
    public var modulePath: String?
    /// Vendor query attributes, in order.
    public var vendorQuery: [(name: String, value: String)] = []

    public init() {}

    public static let objectTypes: Set<String> = ["public", "private", "cert", "secret-key", "data"]

    public struct ParseError: Error, Sendable, Hashable, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    public init(parsing text: String) throws {
        guard text.count <= 4096 else { throw ParseError(message: "the PKCS#11 URI is longer than 4096 characters") }
        guard let colon = text.firstIndex(of: ":"), text[..<colon].lowercased() == "pkcs11" else {
            throw ParseError(message: "a PKCS#11 URI starts with \"pkcs11:\"")
        }
        let rest = text[text.index(after: colon)...]
        let path: Substring
        let query: Substring?
        if let mark = rest.firstIndex(of: "?") {
            path = rest[..<mark]
            query = rest[rest.index(after: mark)...]
        } else {
            path = rest
            query = nil
        }
        if rest.contains("#") { throw ParseError(message: "a PKCS#11 URI has no fragment; \"#\" must be written %23") }
        var seen = Set<String>()
        if !path.isEmpty {
            for component in path.split(separator: ";", omittingEmptySubsequences: false) {
                let (name, raw) = try Self.splitAttribute(component, component: "path")
                guard seen.insert(name).inserted else {
                    throw ParseError(message: "path attribute \"\(name)\" appears more than once")
                }
                try Self.checkCharacters(raw, allowed: Self.pathCharacters, attribute: name)
                if name == "id" {
                    id = try Self.percentDecode(raw, attribute: name)
                    continue
                }
                let value = try Self.decodeText(raw, attribute: name)
                switch name {
                case "token": token = value
                case "manufacturer": manufacturer = value
                case "serial": serial = value
                case "model": model = value
                case "library-manufacturer": libraryManufacturer = value
                case "library-description": libraryDescription = value
                case "library-version":
                    guard value.range(of: #"^[0-9]+(\.[0-9]+)?$"#, options: .regularExpression) != nil else {
                        throw ParseError(message: "library-version must be MAJOR or MAJOR.MINOR, got \"\(value)\"")
                    }
                    libraryVersion = value
                case "object": object = value
                case "type":
                    guard Self.objectTypes.contains(value) else {
                        throw ParseError(message: "type must be one of public, private, cert, secret-key, data; got \"\(value)\"")
                    }
                    type = value
                case "slot-description": slotDescription = value
                case "slot-manufacturer": slotManufacturer = value
                case "slot-id":
                    guard let number = UInt(value) else {
                        throw ParseError(message: "slot-id must be a decimal number, got \"\(value)\"")
                    }
                    slotID = number
                default: vendorPath.append((name, value))
                }
            }
        }
        if let query, !query.isEmpty {
            var seenQuery = Set<String>()
            for component in query.split(separator: "&", omittingEmptySubsequences: false) {
                let (name, raw) = try Self.splitAttribute(component, component: "query")
                guard seenQuery.insert(name).inserted else {
                    throw ParseError(message: "query attribute \"\(name)\" appears more than once")
                }
                try Self.checkCharacters(raw, allowed: Self.queryCharacters, attribute: name)
                let value = try Self.decodeText(raw, attribute: name)
                switch name {
                case "pin-source": pinSource = value
                case "pin-value": pinValue = value
                case "module-name": moduleName = value
                case "module-path": modulePath = value
                default: vendorQuery.append((name, value))
                }
            }
            if moduleName != nil && modulePath != nil {
                // RFC 7512 §2.3: module-path takes precedence; both are allowed. Keep both.
            }
        }
    }

    private static func splitAttribute(_ component: Substring, component kind: String) throws -> (String, Substring) {
        guard let equals = component.firstIndex(of: "=") else {
            throw ParseError(message: "\(kind) attribute \"\(component)\" has no \"=\"")
        }
        let name = String(component[..<equals])
        guard !name.isEmpty, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else {
            throw ParseError(message: "\"\(name)\" is not a valid \(kind) attribute name")
        }
        return (name, component[component.index(after: equals)...])
    }

    static let unreserved = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
    static let reservedAvailable = Set(":[]@!$'()*+,=")
    static let pathCharacters = unreserved.union(reservedAvailable).union(["&", "%"])
    static let queryCharacters = unreserved.union(reservedAvailable).union(["/", "?", "|", "%"])

    private static func checkCharacters(_ raw: Substring, allowed: Set<Character>, attribute: String) throws {
        if let bad = raw.first(where: { !allowed.contains($0) }) {
            let shown = bad == " " ? "a space" : "\"\(bad)\""
            throw ParseError(message: "attribute \"\(attribute)\" contains \(shown), which must be percent-encoded")
        }
    }

    static func percentDecode(_ raw: Substring, attribute: String) throws -> [UInt8] {
        var bytes: [UInt8] = []
        var iterator = Array(raw.utf8)[...]
        while let byte = iterator.popFirst() {
            if byte == UInt8(ascii: "%") {
                guard iterator.count >= 2,
                      let high = hexValue(iterator[iterator.startIndex]),
                      let low = hexValue(iterator[iterator.startIndex + 1]) else {
                    throw ParseError(message: "attribute \"\(attribute)\" has a \"%\" not followed by two hex digits")
                }
                bytes.append(high << 4 | low)
                iterator = iterator.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        return bytes
    }

    private static func decodeText(_ raw: Substring, attribute: String) throws -> String {
        let bytes = try percentDecode(raw, attribute: attribute)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw ParseError(message: "attribute \"\(attribute)\" is not valid UTF-8 once decoded")
        }
        return text
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    static func percentEncode<S: Sequence>(_ bytes: S, allowed: Set<Character>) -> String where S.Element == UInt8 {
        var text = ""
        for byte in bytes {
            let character = Character(Unicode.Scalar(byte))
            if byte < 0x80, allowed.contains(character), character != "%" {
                text.append(character)
            } else {
                text += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return text
    }

    /// The canonical text form: path attributes in RFC order, values percent-encoded where the
    /// grammar requires. Parsing it gives back an equal URI.
    public var description: String {
        var path: [String] = []
        func add(_ name: String, _ value: String?) {
            if let value { path.append("\(name)=\(Self.percentEncode(value.utf8, allowed: Self.pathCharacters))") }
        }
        add("token", token)
        add("manufacturer", manufacturer)
        add("serial", serial)
        add("model", model)
        add("library-manufacturer", libraryManufacturer)
        add("library-description", libraryDescription)
        add("library-version", libraryVersion)
        add("object", object)
        add("type", type)
        if let id { path.append("id=" + id.map { "%" + String($0, radix: 16, uppercase: true).leftPadded(to: 2) }.joined()) }
        add("slot-description", slotDescription)
        add("slot-manufacturer", slotManufacturer)
        if let slotID { path.append("slot-id=\(slotID)") }
        for (name, value) in vendorPath { add(name, value) }
        var query: [String] = []
        func addQuery(_ name: String, _ value: String?) {
            if let value { query.append("\(name)=\(Self.percentEncode(value.utf8, allowed: Self.queryCharacters))") }
        }
        addQuery("pin-source", pinSource)
        // A PIN value is never printed back.
        if pinValue != nil { query.append("pin-value=REDACTED") }
        addQuery("module-name", moduleName)
        addQuery("module-path", modulePath)
        for (name, value) in vendorQuery { addQuery(name, value) }
        return "pkcs11:" + path.joined(separator: ";") + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
    }

    public static func == (lhs: PKCS11URI, rhs: PKCS11URI) -> Bool { lhs.description == rhs.description && lhs.pinValue == rhs.pinValue }
    public func hash(into hasher: inout Hasher) { hasher.combine(description) }
}

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
