public import CMKCore
import Foundation
import NIOConcurrencyHelpers
public import PKCS11

/// The KSI driver for a token reached through a PKCS#11 module.
public final class PKCS11Token: Token, WrappedKeyGenerating, KeyListing, LoginRenewing {
    public struct Configuration: Sendable, Hashable {
        public var name: String
        public var modulePath: String
        /// `C_Initialize`'s `pReserved` string (NSS's softoken), nil for most modules.
        public var initArguments: String?
        public var token: TokenSelector
        public var pinSource: PINSource?
        public var maxSessions: Int
        public var waitTimeout: Duration
        /// Wrap mechanisms in order of preference; the first the token supports is used.
        public var wrapMechanisms: [MechanismType]
        public var codes: MechanismCodes
        /// Put `CKA_VALUE_LEN` in unwrap templates (a vendor quirk, see `HSMProfile`).
        public var unwrapTemplateValueLength: Bool

        public init(name: String, modulePath: String, token: TokenSelector, pinSource: PINSource?, maxSessions: Int = 4,
                    waitTimeout: Duration = .seconds(5), wrapMechanisms: [MechanismType] = [.aesKeyWrapPad, .aesKeyWrap],
                    codes: MechanismCodes = MechanismCodes(), unwrapTemplateValueLength: Bool = false,
                    initArguments: String? = nil) {
            self.name = name
            self.modulePath = modulePath
            self.initArguments = initArguments
            self.token = token
            self.pinSource = pinSource
            self.maxSessions = maxSessions
            self.waitTimeout = waitTimeout
            self.wrapMechanisms = wrapMechanisms
            self.codes = codes
            self.unwrapTemplateValueLength = unwrapTemplateValueLength
        }

        /// The configuration a profile describes.
        public init(profile: HSMProfile) throws {
            try profile.validate(source: "profile \(profile.name)")
            self.init(
                name: profile.name, modulePath: profile.module,
                token: TokenSelector(label: profile.token.label, serial: profile.token.serial),
                pinSource: try PINSource(parsing: profile.pinSource),
                maxSessions: profile.pool.maxSessions, waitTimeout: .milliseconds(profile.pool.waitTimeoutMilliseconds),
                wrapMechanisms: profile.wrapMechanisms.compactMap(MechanismType.init(parsing:)),
                codes: try profile.mechanismCodes(), unwrapTemplateValueLength: profile.unwrapTemplateValueLength ?? false,
                initArguments: profile.initArguments)
        }
    }

    public let configuration: Configuration
    public let pool: SessionPool
    public var name: String { configuration.name }
    public var provider: Provider { .pkcs11 }
    /// The wrap mechanism chosen for this token, once known.
    private let chosenMechanism = NIOLockedValueBox<MechanismType?>(nil)
    /// What the known-answer tests said when the mechanism was chosen, for the probe's report.
    let mechanismEvidence = NIOLockedValueBox<[String]>([])
    /// Requests made with each key (as wrapping key, unwrapping key or probe target), counted
    /// here in the KSI and independently of the audit log, so tests can hold one against the other.
    private let uses = NIOLockedValueBox<[String: Int]>([:])

    /// How many requests have used `key` (by its URI) since the token was opened.
    public func useCount(of key: KeyReference) -> Int { uses.withLockedValue { $0[key.description] ?? 0 } }

    func countUse(of key: KeyReference) { uses.withLockedValue { $0[key.description, default: 0] += 1 } }

    /// Prepares the session pool on a loaded module (`PKCS11Keystore` loads it). The token is
    /// found and logged in at first use.
    public init(configuration: Configuration, module: Module) {
        self.configuration = configuration
        self.pool = SessionPool(module: module, configuration: .init(
            token: configuration.token, pinSource: configuration.pinSource, maxSessions: configuration.maxSessions,
            waitTimeout: configuration.waitTimeout, mechanismCodes: configuration.codes))
    }

    public func shutdown() async { await pool.shutdown() }

    /// The threads this token's PKCS#11 calls run on. A task that runs with
    /// `withTaskExecutorPreference(token.executor)` calls the module without a thread hand-off.
    public var executor: PKCS11Executor { pool.executor }

    // MARK: Key references

    /// The object query a URI names, after checking that the URI points at this token.
    func query(for key: KeyReference, objectClass: ObjectClass = .secretKey) throws -> ObjectQuery {
        guard case .pkcs11(let uri) = key else {
            throw KeystoreError(.invalidInput, "token \(name) is a PKCS#11 token; \(key) is not a PKCS#11 URI")
        }
        try Self.checkUsable(uri)
        if let label = uri.token, let configured = configuration.token.label, label != configured {
            throw KeystoreError(.invalidInput, "the URI names token \"\(label)\" but token \(name) is \"\(configured)\"")
        }
        if let serial = uri.serial, let configured = configuration.token.serial, serial != configured {
            throw KeystoreError(.invalidInput, "the URI names token serial \(serial) but token \(name) has serial \(configured)")
        }
        guard uri.object != nil || uri.id != nil else {
            throw KeystoreError(.invalidInput, "the URI names no key: add object=LABEL and/or id=%XX")
        }
        if let type = uri.type, type != objectClass.uriName {
            throw KeystoreError(.invalidInput, "the URI asks for type=\(type); an L1 key is a \(objectClass.uriName)")
        }
        return ObjectQuery(label: uri.object, id: uri.id, objectClass: objectClass)
    }

    /// Refuses what the gateway will not honour: a PIN written in the URI, and vendor
    /// attributes it cannot enforce (a misspelt `objekt=` must not silently match any key).
    static func checkUsable(_ uri: PKCS11URI) throws {
        if uri.pinValue != nil {
            throw KeystoreError(.invalidInput, "the URI carries pin-value; PINs in URIs are refused (they leak into logs and shell history): use pin-source=file:/path or env:NAME")
        }
        if let (name, _) = uri.vendorPath.first {
            throw KeystoreError(.invalidInput, "the URI has path attribute \"\(name)\", which this gateway does not support")
        }
        if let (name, _) = uri.vendorQuery.first {
            throw KeystoreError(.invalidInput, "the URI has query attribute \"\(name)\", which this gateway does not support")
        }
        if uri.slotID != nil || uri.slotDescription != nil || uri.slotManufacturer != nil {
            throw KeystoreError(.invalidInput, "slot attributes are not accepted: slot ids change when tokens are initialised; name the token by label or serial")
        }
    }

    // MARK: Mechanism choice

    /// The first preferred wrap mechanism the token can wrap and unwrap with, found once.
    func wrapMechanism(in session: Session) throws -> MechanismType {
        if let chosen = chosenMechanism.withLockedValue({ $0 }) { return chosen }
        let available = Set(try session.module.mechanisms(session.slot))
        var refused: [String] = []
        for preferred in configuration.wrapMechanisms {
            let code = configuration.codes.code(for: preferred)
            guard available.contains(code) else { continue }
            let info = try session.module.mechanismInfo(code, slot: session.slot)
            guard info.canWrap && info.canUnwrap else { continue }
            // Offered is not enough: the code must make the standard's bytes, or blobs made
            // here would not unwrap on another vendor's HSM holding the same L1 key.
            let answer = Self.knownAnswer(preferred, in: session)
            if case .differs(let length) = answer {
                refused.append("\(preferred) as code \(Self.hex(code)) is not \(preferred == .aesKeyWrapPad ? "RFC 5649" : "RFC 3394") on this module (the known-answer test got a \(length)-byte blob that differs from the standard's)")
                continue
            }
            chosenMechanism.withLockedValue { $0 = preferred }
            mechanismEvidence.withLockedValue { $0 = refused + ["\(preferred) \(answer.summary)"] }
            return preferred
        }
        let names = configuration.wrapMechanisms.map { "\($0) (code \(Self.hex(configuration.codes.code(for: $0))))" }
        let why = refused.isEmpty ? "" : "; " + refused.joined(separator: "; ") + (refused.contains { $0.hasPrefix("CKM_AES_KEY_WRAP_PAD") } ? "; if the module offers RFC 5649 under CKM_AES_KEY_WRAP_KWP (0x210B), map CKM_AES_KEY_WRAP_PAD to 0x210B in mechanismOverrides" : "")
        throw KeystoreError(.unsupported, "the token supports none of the wrap mechanisms \(names.joined(separator: ", ")) for both wrap and unwrap\(why); check the profile's wrapMechanisms and mechanismOverrides")
    }

    static func hex(_ code: MechanismType) -> String { "0x" + String(code.rawValue, radix: 16, uppercase: true) }

    static func mechanism(_ type: MechanismType) throws -> Mechanism {
        switch type {
        case .aesKeyWrapPad: return .aesKeyWrapPad
        case .aesKeyWrap: return .aesKeyWrap
        default: throw KeystoreError(.unsupported, "wrap mechanism \(type) is not supported for L1 keys")
        }
    }

    static func mechanism(named name: String) throws -> Mechanism {
        guard let type = MechanismType(parsing: name) else {
            throw KeystoreError(.invalidInput, "the wrapped key names an unknown mechanism \"\(name)\"")
        }
        return try mechanism(type)
    }

    /// Session keys the KSI makes to carry material: never token objects, so nothing persists
    /// on the customer's HSM if the process dies mid-operation.
    static let sessionKeyTemplate: [Attribute] = [.class(.secretKey), .keyType(.aes), .token(false), .private(true)]
    /// An unwrapped key that stays inside the token and can only encrypt (probe, verification).
    static let sealedSessionKeyTemplate = sessionKeyTemplate + [.sensitive(true), .extractable(false), .encrypt(true)]

    // MARK: Token operations

    public func wrap(_ key: SecretBytes, with kek: KeyReference) async throws -> WrappedKey {
        countUse(of: kek)
        let query = try query(for: kek)
        guard [16, 24, 32].contains(key.count) else {
            throw KeystoreError(.invalidInput, "only AES keys of 16, 24 or 32 bytes can be wrapped, got \(key.count) bytes")
        }
        return try await translating("wrap") {
            try await pool.withSession { [self] session in
                let kekHandle = try pool.resolve(query, in: session)
                let type = try wrapMechanism(in: session)
                let mechanism = try Self.mechanism(type)
                let carrier = try session.createSecretKey(
                    value: key, template: Self.sessionKeyTemplate + [.sensitive(true), .extractable(true), .encrypt(true)])
                defer { Self.destroy(carrier, in: session) }
                let blob = try session.wrapKey(carrier, with: kekHandle, mechanism: mechanism)
                return WrappedKey(mechanism: type.name, blob: blob)
            }
        }
    }

    public func unwrap(_ wrapped: WrappedKey, with kek: KeyReference) async throws -> SecretBytes {
        countUse(of: kek)
        let query = try query(for: kek)
        let mechanism = try Self.mechanism(named: wrapped.mechanism)
        try Self.checkBlob(wrapped)
        return try await translating("unwrap") {
            try await pool.withSession { [self] session in
                let kekHandle = try pool.resolve(query, in: session)
                let carrier = try Self.unwrapChecked(session, wrapped.blob, kekHandle, mechanism,
                                                     unwrapTemplate(Self.sessionKeyTemplate + [.sensitive(false), .extractable(true), .encrypt(true)],
                                                                    blobLength: wrapped.blob.count))
                defer { Self.destroy(carrier, in: session) }
                return try session.secretValue(of: carrier)
            }
        }
    }

    public func generateWrappedKey(with kek: KeyReference) async throws -> WrappedKey {
        countUse(of: kek)
        let query = try query(for: kek)
        return try await translating("generate wrapped key") {
            try await pool.withSession { [self] session in
                let kekHandle = try pool.resolve(query, in: session)
                let type = try wrapMechanism(in: session)
                let key = try session.generateAESKey(bits: 256, token: false, usages: [.encrypt(true), .decrypt(true)],
                                                     sensitive: true, extractable: true)
                defer { Self.destroy(key, in: session) }
                let blob = try session.wrapKey(key, with: kekHandle, mechanism: try Self.mechanism(type))
                return WrappedKey(mechanism: type.name, blob: blob)
            }
        }
    }

    /// Wraps a key that already lives on the token (named by its URI) with `kek`: one
    /// `C_WrapKey`, the key material never leaves the token unwrapped.
    public func wrapResidentKey(_ key: KeyReference, with kek: KeyReference) async throws -> WrappedKey {
        countUse(of: kek)
        let targetQuery = try query(for: key)
        let kekQuery = try query(for: kek)
        return try await translating("wrap") {
            try await pool.withSession { [self] session in
                let target = try pool.resolve(targetQuery, in: session)
                let kekHandle = try pool.resolve(kekQuery, in: session)
                let type = try wrapMechanism(in: session)
                let blob = try session.wrapKey(target, with: kekHandle, mechanism: try Self.mechanism(type))
                return WrappedKey(mechanism: type.name, blob: blob)
            }
        }
    }

    /// Proves that `wrapped` still opens under `kek` without its material leaving the token:
    /// unwraps into a non-extractable session key and destroys it at once.
    public func verifyUnwrap(_ wrapped: WrappedKey, with kek: KeyReference) async throws {
        countUse(of: kek)
        let query = try query(for: kek)
        let mechanism = try Self.mechanism(named: wrapped.mechanism)
        try Self.checkBlob(wrapped)
        try await translating("unwrap") {
            try await pool.withSession { [self] session in
                let kekHandle = try pool.resolve(query, in: session)
                let key = try Self.unwrapChecked(session, wrapped.blob, kekHandle, mechanism,
                                                 unwrapTemplate(Self.sealedSessionKeyTemplate, blobLength: wrapped.blob.count))
                do {
                    try session.destroyObject(key)
                } catch {
                    session.mustClose = true
                    throw error
                }
            }
        }
    }

    /// Destroys a temporary key; if the token refuses, the session is closed instead of
    /// reused, which destroys its session objects with it.
    static func destroy(_ object: ObjectHandle, in session: Session) {
        do {
            try session.destroyObject(object)
        } catch {
            session.mustClose = true
        }
    }

    /// The unwrap template, with `CKA_VALUE_LEN` when the profile says the module needs it. AES
    /// key wrap adds 8 bytes to a key of 16, 24 or 32 bytes.
    func unwrapTemplate(_ template: [Attribute], blobLength: Int) -> [Attribute] {
        configuration.unwrapTemplateValueLength ? template + [.valueLen(blobLength - 8)] : template
    }

    static func checkBlob(_ wrapped: WrappedKey) throws {
        guard (16...1024).contains(wrapped.blob.count), wrapped.blob.count % 8 == 0 else {
            throw KeystoreError(.invalidInput, "the wrapped blob has \(wrapped.blob.count) bytes; an AES-wrapped key has a multiple of 8 between 16 and 1024")
        }
    }

    /// `C_UnwrapKey` where a refused blob reads as what it is. SoftHSM answers a blob that fails
    /// its integrity check with `CKR_GENERAL_ERROR`; in this call that means "not wrapped by
    /// this key, or altered".
    ///
    /// A refused `C_UnwrapKey` can leave an empty object behind (SoftHSM does, with some
    /// templates): the session is then closed rather than reused, which destroys its session
    /// objects, so a failed unwrap leaves the token as it was.
    static func unwrapChecked(_ session: Session, _ blob: [UInt8], _ kek: ObjectHandle, _ mechanism: Mechanism,
                              _ template: [Attribute]) throws -> ObjectHandle {
        do {
            return try session.unwrapKey(blob, with: kek, mechanism: mechanism, template: template)
        } catch let error as PKCS11Error {
            session.mustClose = true
            guard error.code == .returnValue(.generalError) || error.code == .returnValue(.functionFailed) else { throw error }
            throw KeystoreError(.invalidInput, "the wrapped blob does not unwrap with this key: it is corrupt or was wrapped by another key",
                                detail: error.description)
        }
    }

    public func keys() async throws -> [KeyDescription] {
        try await translating("list keys") {
            try await pool.withSession { [self] session in
                let handles = try session.findObjects([.token(true)], limit: 10_000)
                let tokenLabel = pool.tokenInfo?.label ?? configuration.token.label ?? ""
                return try handles.map { handle -> KeyDescription in
                    let info = try session.info(of: handle)
                    var uri = PKCS11URI()
                    uri.token = tokenLabel
                    uri.object = info.label.isEmpty ? nil : info.label
                    uri.id = info.id.isEmpty ? nil : info.id
                    uri.type = info.objectClass
                    let bits = info.valueLength.map { $0 * 8 } ?? info.modulusBits
                    return KeyDescription(
                        uri: uri.description, label: info.label, idHex: info.idHex, objectClass: info.objectClass,
                        keyType: info.keyType, bits: bits, tokenObject: info.isTokenObject, canWrap: info.wrap,
                        canUnwrap: info.unwrap, sensitive: info.sensitive, extractable: info.extractable,
                        usableAsL1: info.objectClass == "secret-key" && info.keyType == "CKK_AES" && info.wrap == true && info.unwrap == true)
                }.sorted { ($0.label, $0.idHex) < ($1.label, $1.idHex) }
            }
        }
    }

    /// The operator's re-login: clears a refused login and connects, which reads the PIN source
    /// again and makes one `C_Login` (none when the pool is connected and logged in already).
    /// Concurrent requests share the pool's connection lock, so they make one attempt between
    /// them; one refused again leaves the token `login_refused` until the next request, and an
    /// unreadable PIN source (`invalid_input`) leaves everything as it was.
    public func loginAgain() async throws -> TokenStatus {
        try await translating("login") { try await pool.retryRefusedLogin() }
        return await status()
    }

    public func status() async -> TokenStatus {
        var status = TokenStatus(name: name, provider: .pkcs11, state: .notConnected, reason: nil,
                                 label: configuration.token.label, serial: configuration.token.serial,
                                 manufacturer: nil, model: nil, wrapMechanisms: [])
        do {
            let mechanisms = try await pool.withSession { [self] session -> [String] in
                let available = Set(try session.module.mechanisms(session.slot))
                return configuration.wrapMechanisms.filter { available.contains(configuration.codes.code(for: $0)) }.map(\.name)
            }
            if let info = pool.tokenInfo {
                status.label = info.label
                status.serial = info.serial
                status.manufacturer = info.manufacturer
                status.model = info.model
            }
            status.state = .available
            status.wrapMechanisms = mechanisms
        } catch let error as PKCS11Error {
            let translated = KeystoreError(error)
            status.state = error.recovery == .neverRetry ? .loginRefused : .unavailable
            status.reason = translated.reason
        } catch {
            status.state = .unavailable
            status.reason = (error as? KeystoreError)?.reason ?? "unexpected error"
        }
        return status
    }
}
