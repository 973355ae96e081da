import CPKCS11

/// A slot identifier. Slot ids are not stable (SoftHSM renumbers at `--init-token`): find
/// tokens by label or serial with `TokenSelector`.
public struct SlotID: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }
    public var description: String { String(rawValue) }
}

/// What `C_GetTokenInfo` reports, with fields in readable form.
public struct TokenInfo: Sendable, Hashable, Codable {
    public var label: String
    public var manufacturer: String
    public var model: String
    public var serial: String
    public var flags: UInt
    /// `nil` when the token reports no limit (`CK_EFFECTIVELY_INFINITE`) or does not say.
    public var maxSessionCount: UInt?
    public var sessionCount: UInt?
    public var maxRwSessionCount: UInt?
    public var rwSessionCount: UInt?
    public var minPinLength: UInt
    public var maxPinLength: UInt
    public var hardwareVersion: String
    public var firmwareVersion: String

    public var isInitialized: Bool { flags & 0x400 != 0 }
    public var loginRequired: Bool { flags & 0x4 != 0 }
    public var userPinInitialized: Bool { flags & 0x8 != 0 }
    public var userPinCountLow: Bool { flags & 0x10000 != 0 }
    public var userPinFinalTry: Bool { flags & 0x20000 != 0 }
    public var userPinLocked: Bool { flags & 0x40000 != 0 }
    public var writeProtected: Bool { flags & 0x2 != 0 }
}

/// Chooses a token the way RFC 7512's token attributes do: every attribute given must match.
public struct TokenSelector: Sendable, Hashable, CustomStringConvertible {
    public var label: String?
    public var serial: String?
    public var manufacturer: String?
    public var model: String?

    public init(label: String? = nil, serial: String? = nil, manufacturer: String? = nil, model: String? = nil) {
        self.label = label
        self.serial = serial
        self.manufacturer = manufacturer
        self.model = model
    }

    public func matches(_ info: TokenInfo) -> Bool {
        if let label, label != info.label { return false }
        if let serial, serial != info.serial { return false }
        if let manufacturer, manufacturer != info.manufacturer { return false }
        if let model, model != info.model { return false }
        return true
    }

    public var description: String {
        var parts: [String] = []
        if let label { parts.append("label \"\(label)\"") }
        if let serial { parts.append("serial \(serial)") }
        if let manufacturer { parts.append("manufacturer \"\(manufacturer)\"") }
        if let model { parts.append("model \"\(model)\"") }
        return parts.isEmpty ? "any token" : parts.joined(separator: ", ")
    }
}

extension Module {
    /// Slots (`C_GetSlotList`), by default only those with a token present.
    public func slots(tokenPresent: Bool = true) throws -> [SlotID] {
        var count: UInt = 0
        let present: CK_BBOOL = tokenPresent ? 1 : 0
        try check(functions.pointee.C_GetSlotList?(present, nil, &count) ?? Self.notSupported, .C_GetSlotList)
        var ids = [CK_SLOT_ID](repeating: 0, count: Int(count))
        if count > 0 {
            try check(functions.pointee.C_GetSlotList?(present, &ids, &count) ?? Self.notSupported, .C_GetSlotList)
        }
        return ids.prefix(Int(count)).map(SlotID.init(rawValue:))
    }

    public func tokenInfo(_ slot: SlotID) throws -> TokenInfo {
        var info = CK_TOKEN_INFO()
        try check(functions.pointee.C_GetTokenInfo?(slot.rawValue, &info) ?? Self.notSupported, .C_GetTokenInfo)
        func count(_ value: UInt) -> UInt? {
            // 0 is CK_EFFECTIVELY_INFINITE, ~0 is CK_UNAVAILABLE_INFORMATION.
            value == 0 || value == UInt.max ? nil : value
        }
        return TokenInfo(
            label: paddedString(info.label), manufacturer: paddedString(info.manufacturerID),
            model: paddedString(info.model), serial: paddedString(info.serialNumber), flags: info.flags,
            maxSessionCount: count(info.ulMaxSessionCount), sessionCount: info.ulSessionCount == UInt.max ? nil : info.ulSessionCount,
            maxRwSessionCount: count(info.ulMaxRwSessionCount), rwSessionCount: info.ulRwSessionCount == UInt.max ? nil : info.ulRwSessionCount,
            minPinLength: info.ulMinPinLen, maxPinLength: info.ulMaxPinLen,
            hardwareVersion: "\(info.hardwareVersion.major).\(info.hardwareVersion.minor)",
            firmwareVersion: "\(info.firmwareVersion.major).\(info.firmwareVersion.minor)")
    }

    /// Every present token with its slot.
    public func tokens() throws -> [(slot: SlotID, info: TokenInfo)] {
        var result: [(slot: SlotID, info: TokenInfo)] = []
        for slot in try slots(tokenPresent: true) {
            let info = try tokenInfo(slot)
            // An uninitialised token (SoftHSM's free slot) cannot hold keys; it is not a candidate.
            if info.isInitialized { result.append((slot, info)) }
        }
        return result
    }

    /// The one token matching `selector`.
    public func findToken(_ selector: TokenSelector) throws -> (slot: SlotID, info: TokenInfo) {
        let all = try tokens()
        let matching = all.filter { selector.matches($0.info) }
        switch matching.count {
        case 1:
            return matching[0]
        case 0:
            let available = all.map { "\"\($0.info.label)\" (serial \($0.info.serial))" }
            let list = available.isEmpty ? "the module has no initialised token" : "available: " + available.joined(separator: ", ")
            throw PKCS11Error(.tokenNotFound, module: path, reason: "no token with \(selector); \(list)")
        default:
            throw PKCS11Error(.ambiguousToken, module: path,
                              reason: "\(matching.count) tokens match \(selector); name the token by serial as well")
        }
    }

    public func mechanisms(_ slot: SlotID) throws -> [MechanismType] {
        var count: UInt = 0
        try check(functions.pointee.C_GetMechanismList?(slot.rawValue, nil, &count) ?? Self.notSupported, .C_GetMechanismList)
        var types = [CK_MECHANISM_TYPE](repeating: 0, count: Int(count))
        if count > 0 {
            try check(functions.pointee.C_GetMechanismList?(slot.rawValue, &types, &count) ?? Self.notSupported, .C_GetMechanismList)
        }
        return types.prefix(Int(count)).map(MechanismType.init(rawValue:)).sorted()
    }

    public func mechanismInfo(_ type: MechanismType, slot: SlotID) throws -> MechanismInfo {
        // Zeroed first: SoftHSM ORs flags into what it is given.
        var info = CK_MECHANISM_INFO(ulMinKeySize: 0, ulMaxKeySize: 0, flags: 0)
        try check(functions.pointee.C_GetMechanismInfo?(slot.rawValue, type.rawValue, &info) ?? Self.notSupported, .C_GetMechanismInfo)
        return MechanismInfo(minKeySize: info.ulMinKeySize, maxKeySize: info.ulMaxKeySize, flags: info.flags)
    }

    /// Opens a session on `slot` (`C_OpenSession`), read-write unless asked otherwise.
    public func openSession(_ slot: SlotID, readWrite: Bool = true, codes: MechanismCodes = MechanismCodes()) throws -> Session {
        var handle: CK_SESSION_HANDLE = 0
        let flags: UInt = 0x4 | (readWrite ? 0x2 : 0)  // CKF_SERIAL_SESSION | CKF_RW_SESSION
        try check(functions.pointee.C_OpenSession?(slot.rawValue, flags, nil, nil, &handle) ?? Self.notSupported, .C_OpenSession)
        return Session(module: self, slot: slot, handle: handle, codes: codes)
    }

    /// Closes every session this process has on `slot` (`C_CloseAllSessions`).
    public func closeAllSessions(_ slot: SlotID) throws {
        try check(functions.pointee.C_CloseAllSessions?(slot.rawValue) ?? Self.notSupported, .C_CloseAllSessions)
    }
}
