public import Foundation
public import PKCS11

/// How the gateway loads one vendor's PKCS#11 module and finds its token: the JSON files of
/// `HSMConfig/` (format in `HSMConfig/README.md`). A profile names where the PIN is, never the PIN.
public struct HSMProfile: Sendable, Hashable, Codable {
    public struct TokenSelection: Sendable, Hashable, Codable {
        public var label: String?
        public var serial: String?

        public init(label: String? = nil, serial: String? = nil) {
            self.label = label
            self.serial = serial
        }
    }

    public struct Pool: Sendable, Hashable, Codable {
        public var maxSessions: Int
        public var waitTimeoutMilliseconds: Int

        public init(maxSessions: Int = 4, waitTimeoutMilliseconds: Int = 5000) {
            self.maxSessions = maxSessions
            self.waitTimeoutMilliseconds = waitTimeoutMilliseconds
        }
    }

    public var name: String
    public var description: String
    public var module: String
    public var environment: [String: String]?
    /// Passed to `C_Initialize` as `CK_C_INITIALIZE_ARGS.pReserved` (a C string). NSS's softoken
    /// reads its database directory from it; other modules want it absent.
    public var initArguments: String?
    public var token: TokenSelection
    public var pinSource: String
    public var pool: Pool
    public var wrapMechanisms: [String]
    public var mechanismOverrides: [String: String]?
    /// Put `CKA_VALUE_LEN` in `C_UnwrapKey` templates (Thales Luna before firmware 7.9.3 with
    /// AES-KW needs it; SoftHSM refuses it).
    public var unwrapTemplateValueLength: Bool?
    public var notes: [String]

    public init(name: String, description: String = "", module: String, environment: [String: String]? = nil,
                initArguments: String? = nil, token: TokenSelection, pinSource: String, pool: Pool = Pool(),
                wrapMechanisms: [String] = ["CKM_AES_KEY_WRAP_PAD", "CKM_AES_KEY_WRAP"],
                mechanismOverrides: [String: String]? = nil, unwrapTemplateValueLength: Bool? = nil, notes: [String] = []) {
        self.name = name
        self.description = description
        self.module = module
        self.environment = environment
        self.initArguments = initArguments
        self.token = token
        self.pinSource = pinSource
        self.pool = pool
        self.wrapMechanisms = wrapMechanisms
        self.mechanismOverrides = mechanismOverrides
        self.unwrapTemplateValueLength = unwrapTemplateValueLength
        self.notes = notes
    }

    static let allowedKeys: Set<String> = ["name", "description", "module", "environment", "initArguments", "token", "pinSource", "pool",
                                           "wrapMechanisms", "mechanismOverrides", "unwrapTemplateValueLength", "notes"]
    static let supportedWrapMechanisms: Set<String> = ["CKM_AES_KEY_WRAP_PAD", "CKM_AES_KEY_WRAP"]

    /// Reads and validates a profile file. Every problem is an `invalidInput` error naming the file.
    public static func load(from path: String) throws -> HSMProfile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw KeystoreError(.invalidInput, "cannot read HSM profile \(path)")
        }
        guard data.count <= 1 << 20 else { throw KeystoreError(.invalidInput, "HSM profile \(path) is larger than 1 MiB") }
        return try parse(data, source: path)
    }

    public static func parse(_ data: Data, source: String = "profile") throws -> HSMProfile {
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw KeystoreError(.invalidInput, "\(source) is not a JSON object")
        }
        // A misspelt key must not be silently ignored: it would leave a default in force.
        func checkKeys(_ object: [String: Any], _ allowed: Set<String>, _ path: String) throws {
            let unknown = Set(object.keys).subtracting(allowed)
            if !unknown.isEmpty {
                throw KeystoreError(.invalidInput, "\(source) has unknown keys \(path)\(unknown.sorted().joined(separator: ", ")) (allowed: \(allowed.sorted().joined(separator: ", ")))")
            }
        }
        try checkKeys(object, allowedKeys, "")
        if let token = object["token"] as? [String: Any] { try checkKeys(token, ["label", "serial"], "in token: ") }
        if let pool = object["pool"] as? [String: Any] { try checkKeys(pool, ["maxSessions", "waitTimeoutMilliseconds"], "in pool: ") }
        let profile: HSMProfile
        do {
            profile = try JSONDecoder().decode(HSMProfile.self, from: data)
        } catch let DecodingError.keyNotFound(key, _) {
            throw KeystoreError(.invalidInput, "\(source) lacks the required key \"\(key.stringValue)\"")
        } catch let DecodingError.typeMismatch(_, context) {
            throw KeystoreError(.invalidInput, "\(source): \(context.codingPath.map(\.stringValue).joined(separator: ".")) has the wrong type")
        } catch {
            throw KeystoreError(.invalidInput, "\(source) is not a valid HSM profile")
        }
        try profile.validate(source: source)
        return profile
    }

    public func validate(source: String = "profile") throws {
        func fail(_ message: String) -> KeystoreError { KeystoreError(.invalidInput, "\(source): \(message)") }
        guard module.hasPrefix("/") else { throw fail("module must be an absolute path, got \"\(module)\"") }
        if let initArguments {
            // Not echoed back: the message names the problem, not the value.
            guard !initArguments.utf8.contains(0) else { throw fail("initArguments may not contain a NUL byte") }
            guard initArguments.utf8.count <= Module.maxInitArgumentsLength else {
                throw fail("initArguments is \(initArguments.utf8.count) bytes long; at most \(Module.maxInitArgumentsLength) are accepted")
            }
            guard !initArguments.isEmpty else { throw fail("initArguments may not be empty; leave the key out for modules that want none") }
        }
        guard token.label != nil || token.serial != nil else { throw fail("token needs a label or a serial") }
        guard token.label?.isEmpty != true, token.serial?.isEmpty != true else { throw fail("token label and serial may not be empty") }
        do {
            _ = try PINSource(parsing: pinSource)
        } catch {
            throw fail("pinSource must be env:NAME or file:/absolute/path")
        }
        guard (1...1024).contains(pool.maxSessions) else { throw fail("pool.maxSessions must be between 1 and 1024") }
        guard (1...600_000).contains(pool.waitTimeoutMilliseconds) else { throw fail("pool.waitTimeoutMilliseconds must be between 1 and 600000") }
        guard !wrapMechanisms.isEmpty else { throw fail("wrapMechanisms must name at least one mechanism") }
        for name in wrapMechanisms where !Self.supportedWrapMechanisms.contains(name) {
            throw fail("wrap mechanism \(name) is not supported for L1 keys (supported: \(Self.supportedWrapMechanisms.sorted().joined(separator: ", ")))")
        }
        _ = try mechanismCodes(source: source)
    }

    /// The overrides as codes.
    public func mechanismCodes(source: String = "profile") throws -> MechanismCodes {
        var overrides: [MechanismType: MechanismType] = [:]
        for (standard, vendor) in mechanismOverrides ?? [:] {
            guard let from = MechanismType(parsing: standard), let to = MechanismType(parsing: vendor) else {
                throw KeystoreError(.invalidInput, "\(source): mechanismOverrides entry \"\(standard)\": \"\(vendor)\" names an unknown mechanism; use a CKM_ name or a 0x code")
            }
            overrides[from] = to
        }
        return MechanismCodes(overrides)
    }

    /// Sets the profile's environment variables that are not already set: the operator's own
    /// environment wins over the profile's defaults.
    public func applyEnvironment() {
        for (name, value) in environment ?? [:] where getenv(name) == nil {
            setenv(name, value, 0)
        }
    }
}
