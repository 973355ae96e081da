import Foundation

/// The Registry's input rules, checked before any write so that bad input changes nothing and
/// gets an `invalidInput` that says what is wrong.
enum Validation {
    static func tenantID(_ id: String) throws {
        let bytes = Array(id.utf8)
        let allowed = bytes.allSatisfy { (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x2D }
        guard (1...63).contains(bytes.count), allowed, bytes.first != 0x2D, bytes.last != 0x2D else {
            throw RegistryError(.invalidInput,
                                "a tenant id is 1–63 characters of a–z, 0–9 and '-', not starting or ending with '-'")
        }
    }

    /// A region name: 1–63 characters of `[a-z0-9-]` (`eu-central-1`).
    static func region(_ region: String) throws {
        guard region.range(of: #"^[a-z0-9][a-z0-9-]{0,62}$"#, options: .regularExpression) != nil else {
            throw RegistryError(.invalidInput, "a region is 1-63 characters of a-z, 0-9 and -")
        }
    }

    /// A tenant's allowed regions: nil (every region), or 1–64 distinct region names, kept
    /// sorted as JSON text.
    static func regions(_ regions: [String]?) throws -> String? {
        guard let regions else { return nil }
        guard (1...64).contains(regions.count), Set(regions).count == regions.count else {
            throw RegistryError(.invalidInput, "allowedRegions lists 1-64 distinct regions (or is null for every region)")
        }
        for region in regions { try self.region(region) }
        return String(decoding: try JSONEncoder().encode(regions.sorted()), as: UTF8.self)
    }

    static func tenantName(_ name: String) throws {
        guard (1...200).contains(name.count) else {
            throw RegistryError(.invalidInput, "a tenant name is 1–200 characters")
        }
        try noControlCharacters(name, "a tenant name")
    }

    /// A short identifier (provider, keystore id, attempt id, mechanism): 1–256 characters,
    /// printable.
    static func text(_ value: String, _ what: String, maxLength: Int = 256) throws {
        guard (1...maxLength).contains(value.count) else {
            throw RegistryError(.invalidInput, "\(what) must be 1–\(maxLength) characters")
        }
        try noControlCharacters(value, what)
    }

    /// A key reference (PKCS#11 URI, ARN, key URI, CryptoKey name). The Registry holds
    /// references only: a PKCS#11 URI with `pin-value` would put a secret into the system of
    /// record, its backups and every API response, so it is refused (`pin-source` is fine: it
    /// names a file, not the PIN).
    static func keyReference(_ reference: String) throws {
        try text(reference, "a key reference", maxLength: 2048)
        if reference.lowercased().contains("pin-value") {
            throw RegistryError(.invalidInput,
                                "a key reference must not carry a PIN (pin-value); give the PIN through a pin-source or the environment")
        }
    }

    static func json(_ text: String, _ what: String) throws {
        guard (try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])) != nil else {
            throw RegistryError(.invalidInput, "\(what) is not valid JSON")
        }
    }

    static func newL2(_ l2: NewL2) throws {
        guard UUID(uuidString: l2.id) != nil else {
            throw RegistryError(.invalidInput, "an L2 reference is a UUID string")
        }
        guard !l2.sovereignBinding.isEmpty, !l2.activeBinding.isEmpty else {
            throw RegistryError(.invalidInput, "the L2 bindings must not be empty")
        }
        try text(l2.sovereignMechanism, "the sovereign binding's mechanism")
        try text(l2.activeMechanism, "the active binding's mechanism")
        guard l2.sovereignIVKVersion >= 1, l2.activeIVKVersion >= 1 else {
            throw RegistryError(.invalidInput, "IVK versions start at 1")
        }
    }

    private static func noControlCharacters(_ value: String, _ what: String) throws {
        if value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            throw RegistryError(.invalidInput, "\(what) must not contain control characters")
        }
    }
}
