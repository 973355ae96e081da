public import CMKCore
import Crypto
import Foundation
public import KSI
import NIOConcurrencyHelpers
import PKCS11

/// A PKCS#11-like token held entirely in memory, for unit tests that need a keystore but not
/// SoftHSM: AES keys held by label (and `CKA_ID`) and named by PKCS#11 URIs, wrap and unwrap
/// with RFC 5649 (`CKM_AES_KEY_WRAP_PAD`) or RFC 3394 (`CKM_AES_KEY_WRAP`), new keys made only
/// wrapped, and the probe with the PKCS#11 driver's checks in the same order, names and words.
///
/// It fails the way real keystores fail when told to (`inject`): unreachable, login refused,
/// key gone, operation refused by policy, mechanism not offered, a broken unwrap. Its errors are
/// the PKCS#11 driver's own: built as the `PKCS11Error` the module would raise and translated by
/// `KeystoreError(_:context:)`, so the codes and reasons a test sees are the gateway's.
///
/// What it does not model: sessions, handles, the pool and its recovery table, attribute
/// templates, vendor quirks. Those are tested against SoftHSM.
public final class InMemoryToken: Token, WrappedKeyGenerating, KeyListing, Sendable {
    public enum Mechanism: String, Sendable, CaseIterable {
        case aesKeyWrapPad = "CKM_AES_KEY_WRAP_PAD"
        case aesKeyWrap = "CKM_AES_KEY_WRAP"
    }

    public enum Operation: String, Sendable, Hashable {
        case wrap, unwrap
    }

    /// How a real keystore fails, and where the probe reports it.
    public enum Fault: Sendable, Hashable {
        /// The token cannot be reached (device removed, HSM or network down): `unavailable`,
        /// at the `token` check, and every operation fails the same way.
        case unavailable
        /// The login is refused (wrong PIN): `permissionDenied` at `login`. Like the pool after
        /// `CKR_PIN_INCORRECT`, every later operation is refused without a new attempt.
        case loginRefused
        /// The key is gone although it was added (deleted behind the gateway's back):
        /// `notFound` at `key_found`.
        case keyNotFound
        /// The keystore refuses this operation with the key (a policy; on PKCS#11
        /// `CKR_KEY_FUNCTION_NOT_PERMITTED`): `permissionDenied` at `wrap` or `unwrap`.
        case permissionDenied(Operation)
        /// The token offers none of the wrap mechanisms: `unsupported` at `mechanism`.
        case unsupportedMechanism
        /// A broken token: unwrap returns other bytes than were wrapped (`internal` at `compare`).
        case unwrapReturnsOtherBytes
    }

    /// One request made of the token with a key, for tests that count them.
    public struct Request: Sendable, Hashable {
        public var operation: String
        public var key: String
    }

    struct Object: Sendable {
        var label: String
        var id: [UInt8]
        /// `secret-key`, `private-key`, ... as PKCS#11 URIs name classes.
        var objectClass: String
        /// `CKK_AES`, `CKK_RSA`, ...
        var keyType: String
        /// The key material (AES keys only).
        var material: [UInt8]?
        var canWrap: Bool
        var canUnwrap: Bool
    }

    struct State {
        var objects: [Object] = []
        var faults: Set<Fault> = []
        var requests: [Request] = []
    }

    public let name: String
    public var provider: Provider { .pkcs11 }
    /// The token label the URIs name (`token=`); a URI naming another token is refused.
    public let label: String
    public let serial: String
    /// Wrap mechanisms the token offers, in the order it prefers them.
    public let mechanisms: [Mechanism]
    private let state = NIOLockedValueBox(State())
    static let module = "in-memory"

    public init(name: String = "memory", label: String = "memory", serial: String = "0000000000000001",
                mechanisms: [Mechanism] = [.aesKeyWrapPad, .aesKeyWrap]) {
        self.name = name
        self.label = label
        self.serial = serial
        self.mechanisms = mechanisms
    }

    // MARK: Contents and faults

    /// The URI of the object `label` on this token.
    public func reference(_ label: String, id: [UInt8]? = nil) -> KeyReference {
        var uri = PKCS11URI()
        uri.token = self.label
        uri.object = label
        uri.id = id
        uri.type = "secret-key"
        return .pkcs11(uri)
    }

    /// Adds an AES key (random 256 bits unless `material` is given: 16, 24 or 32 bytes) and
    /// returns its URI.
    @discardableResult
    public func addKey(_ label: String, id: [UInt8] = [], material: [UInt8]? = nil, canWrap: Bool = true,
                       canUnwrap: Bool = true) -> KeyReference {
        let material = material ?? SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
        precondition([16, 24, 32].contains(material.count), "an AES key has 16, 24 or 32 bytes")
        state.withLockedValue {
            $0.objects.append(Object(label: label, id: id, objectClass: "secret-key", keyType: "CKK_AES", material: material,
                                     canWrap: canWrap, canUnwrap: canUnwrap))
        }
        return reference(label, id: id.isEmpty ? nil : id)
    }

    /// Adds an object that is not an AES key: another class (`private-key`, `public`, `cert`)
    /// or a secret key of another type (`CKK_GENERIC_SECRET`).
    public func addObject(_ label: String, id: [UInt8] = [], objectClass: String, keyType: String) {
        state.withLockedValue {
            $0.objects.append(Object(label: label, id: id, objectClass: objectClass, keyType: keyType, material: nil,
                                     canWrap: false, canUnwrap: false))
        }
    }

    public func removeObjects(labelled label: String) {
        state.withLockedValue { $0.objects.removeAll { $0.label == label } }
    }

    /// Makes the token fail in this way until `clear` is called.
    public func inject(_ fault: Fault) {
        _ = state.withLockedValue { $0.faults.insert(fault) }
    }

    public func clear(_ fault: Fault) {
        _ = state.withLockedValue { $0.faults.remove(fault) }
    }

    public func clearFaults() {
        state.withLockedValue { $0.faults.removeAll() }
    }

    /// Every request made with a key, in order.
    public var requests: [Request] { state.withLockedValue { $0.requests } }

    /// How many requests have used `key`, as `PKCS11Token.useCount(of:)` counts them.
    public func useCount(of key: KeyReference) -> Int { requests.filter { $0.key == key.description }.count }

    /// Objects as (class, label, id) lines, sorted: what `SoftHSMFixture.objectList` shows of a
    /// real token, so a test can check that nothing was left behind.
    public var objectList: [String] {
        state.withLockedValue { $0.objects.map { "\($0.objectClass)|\($0.label)|\(Hex.encode($0.id))" }.sorted() }
    }

    private func has(_ fault: Fault) -> Bool { state.withLockedValue { $0.faults.contains(fault) } }

    private func record(_ operation: String, _ key: KeyReference) {
        state.withLockedValue { $0.requests.append(Request(operation: operation, key: key.description)) }
    }

    // MARK: The errors a PKCS#11 module raises, translated as the driver translates them

    private func moduleError(_ rv: ReturnValue, _ function: PKCS11Function, context: String? = nil) -> KeystoreError {
        KeystoreError(PKCS11Error(.returnValue(rv), function: function, module: Self.module).on(token: label), context: context)
    }

    /// The token and the login, as the pool's connection checks them.
    private func connectionError() -> KeystoreError? {
        if has(.unavailable) { return moduleError(.deviceRemoved, .C_GetTokenInfo) }
        if has(.loginRefused) { return moduleError(.pinIncorrect, .C_Login) }
        return nil
    }

    /// The object query a URI names, checked as `PKCS11Token.query(for:)` checks it.
    func query(for key: KeyReference) throws -> ObjectQuery {
        guard case .pkcs11(let uri) = key else {
            throw KeystoreError(.invalidInput, "token \(name) is a PKCS#11 token; \(key) is not a PKCS#11 URI")
        }
        if uri.pinValue != nil {
            throw KeystoreError(.invalidInput, "the URI carries pin-value; PINs in URIs are refused (they leak into logs and shell history): use pin-source=file:/path or env:NAME")
        }
        if let token = uri.token, token != label {
            throw KeystoreError(.invalidInput, "the URI names token \"\(token)\" but token \(name) is \"\(label)\"")
        }
        guard uri.object != nil || uri.id != nil else {
            throw KeystoreError(.invalidInput, "the URI names no key: add object=LABEL and/or id=%XX")
        }
        if let type = uri.type, type != "secret-key" {
            throw KeystoreError(.invalidInput, "the URI asks for type=\(type); an L1 key is a secret-key")
        }
        return ObjectQuery(label: uri.object, id: uri.id, objectClass: .secretKey)
    }

    private func matches(_ object: Object, _ query: ObjectQuery) -> Bool {
        (query.label.map { $0 == object.label } ?? true) && (query.id.map { $0 == object.id } ?? true)
    }

    /// The secret key `query` names, or the pool's `objectNotFound` / `ambiguousObject`.
    private func resolve(_ query: ObjectQuery, context: String? = nil) throws -> Object {
        let found = state.withLockedValue { state in state.objects.filter { $0.objectClass == "secret-key" && matches($0, query) } }
        if has(.keyNotFound) || found.isEmpty {
            throw KeystoreError(PKCS11Error(.objectNotFound, module: Self.module, reason: "no \(query) on token \"\(label)\"").on(token: label),
                                context: context)
        }
        guard found.count == 1 else {
            throw KeystoreError(PKCS11Error(.ambiguousObject, module: Self.module,
                                            reason: "more than one \(query) on token \"\(label)\"; name the key by label and id").on(token: label),
                                context: context)
        }
        return found[0]
    }

    /// The first preferred mechanism the token offers.
    private func wrapMechanism() throws -> Mechanism {
        if !has(.unsupportedMechanism), let first = mechanisms.first { return first }
        let names = Mechanism.allCases.map(\.rawValue).joined(separator: ", ")
        throw KeystoreError(.unsupported, "the token supports none of the wrap mechanisms \(names) for both wrap and unwrap; check the profile's wrapMechanisms and mechanismOverrides")
    }

    private func check(_ operation: Operation, allowedWith kek: Object, context: String) throws {
        let allowed = operation == .wrap ? kek.canWrap : kek.canUnwrap
        if !allowed || has(.permissionDenied(operation)) {
            throw moduleError(.keyFunctionNotPermitted, operation == .wrap ? .C_WrapKey : .C_UnwrapKey, context: context)
        }
    }

    private func seal(_ material: [UInt8], with kek: Object, _ mechanism: Mechanism) throws -> [UInt8] {
        let key = SymmetricKey(data: kek.material ?? [])
        switch mechanism {
        case .aesKeyWrapPad: return try AESKeyWrap.wrapPadded(material, kek: key)
        case .aesKeyWrap: return try AESKeyWrap.wrap(material, kek: key)
        }
    }

    private func open(_ blob: [UInt8], with kek: Object, _ mechanism: Mechanism) throws -> [UInt8] {
        let key = SymmetricKey(data: kek.material ?? [])
        do {
            var material: [UInt8]
            switch mechanism {
            case .aesKeyWrapPad: material = try AESKeyWrap.unwrapPadded(blob, kek: key)
            case .aesKeyWrap: material = try AESKeyWrap.unwrap(blob, kek: key)
            }
            if has(.unwrapReturnsOtherBytes) { material[0] ^= 0x01 }
            return material
        } catch is AESKeyWrap.Failure {
            // What the driver makes of SoftHSM's CKR_GENERAL_ERROR for a blob that fails its check.
            throw KeystoreError(.invalidInput, "the wrapped blob does not unwrap with this key: it is corrupt or was wrapped by another key",
                                detail: "C_UnwrapKey failed: CKR_GENERAL_ERROR (0x5)")
        }
    }

    // MARK: Token

    public func status() async -> TokenStatus {
        var status = TokenStatus(name: name, provider: .pkcs11, state: .available, label: label, serial: serial,
                                 manufacturer: "OpenKCM tests", model: "in-memory", wrapMechanisms: [])
        if let error = connectionError() {
            status.state = has(.unavailable) ? .unavailable : .loginRefused
            status.reason = error.reason
        } else {
            status.wrapMechanisms = has(.unsupportedMechanism) ? [] : mechanisms.map(\.rawValue)
        }
        return status
    }

    public func wrap(_ key: SecretBytes, with kek: KeyReference) async throws -> WrappedKey {
        record("wrap", kek)
        let query = try query(for: kek)
        guard [16, 24, 32].contains(key.count) else {
            throw KeystoreError(.invalidInput, "only AES keys of 16, 24 or 32 bytes can be wrapped, got \(key.count) bytes")
        }
        if let error = connectionError() { throw KeystoreError(error.code, "wrap: " + error.reason, detail: error.detail) }
        let object = try resolve(query, context: "wrap")
        let mechanism = try wrapMechanism()
        try check(.wrap, allowedWith: object, context: "wrap")
        let blob = try seal(key.withUnsafeBytes { Array($0) }, with: object, mechanism)
        return WrappedKey(mechanism: mechanism.rawValue, blob: blob)
    }

    public func unwrap(_ wrapped: WrappedKey, with kek: KeyReference) async throws -> SecretBytes {
        record("unwrap", kek)
        let query = try query(for: kek)
        guard let mechanism = Mechanism(rawValue: wrapped.mechanism) else {
            throw KeystoreError(.invalidInput, "the wrapped key names an unknown mechanism \"\(wrapped.mechanism)\"")
        }
        guard (16...1024).contains(wrapped.blob.count), wrapped.blob.count % 8 == 0 else {
            throw KeystoreError(.invalidInput, "the wrapped blob has \(wrapped.blob.count) bytes; an AES-wrapped key has a multiple of 8 between 16 and 1024")
        }
        if let error = connectionError() { throw KeystoreError(error.code, "unwrap: " + error.reason, detail: error.detail) }
        let object = try resolve(query, context: "unwrap")
        guard mechanisms.contains(mechanism), !has(.unsupportedMechanism) else {
            throw moduleError(.mechanismInvalid, .C_UnwrapKey, context: "unwrap")
        }
        try check(.unwrap, allowedWith: object, context: "unwrap")
        return SecretBytes(copying: try open(wrapped.blob, with: object, mechanism))
    }

    public func generateWrappedKey(with kek: KeyReference) async throws -> WrappedKey {
        // The new key exists only inside this call, as a session key would on a token.
        let key = SecretBytes(copying: SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) })
        return try await wrap(key, with: kek)
    }

    public func keys() async throws -> [KeyDescription] {
        if let error = connectionError() { throw KeystoreError(error.code, "list keys: " + error.reason, detail: error.detail) }
        return state.withLockedValue { $0.objects }.map { object in
            var uri = PKCS11URI()
            uri.token = label
            uri.object = object.label.isEmpty ? nil : object.label
            uri.id = object.id.isEmpty ? nil : object.id
            uri.type = object.objectClass
            let aes = object.objectClass == "secret-key" && object.keyType == "CKK_AES"
            return KeyDescription(uri: uri.description, label: object.label, idHex: Hex.encode(object.id), objectClass: object.objectClass,
                                  keyType: object.keyType, bits: object.material.map { UInt($0.count * 8) }, tokenObject: true,
                                  canWrap: object.canWrap, canUnwrap: object.canUnwrap, sensitive: true, extractable: false,
                                  usableAsL1: aes && object.canWrap && object.canUnwrap)
        }.sorted { ($0.label, $0.idHex) < ($1.label, $1.idHex) }
    }

    // MARK: Probe

    /// The noop handshake probe, check for check as `PKCS11Token.probe` makes it: the key
    /// reference, the token, the login, the key, its type and usage, the mechanism, then a
    /// random test key wrapped, unwrapped and compared. Nothing is added to the token.
    public func probe(_ key: KeyReference) async -> ProbeReport {
        record("probe", key)
        let start = ContinuousClock.now
        var checks: [ProbeReport.Check] = []
        var mechanism: String?

        func finish(_ failure: KeystoreError?) -> ProbeReport {
            let elapsed = ContinuousClock.now - start
            let milliseconds = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
            return ProbeReport(key: key.description, token: name, provider: .pkcs11, passed: failure == nil, mechanism: mechanism,
                               latencyMilliseconds: milliseconds, checks: checks,
                               failure: failure.map { ProbeReport.Failure(code: $0.code, reason: $0.reason, detail: $0.detail) })
        }
        func fail(_ check: String, _ error: KeystoreError) -> ProbeReport {
            checks.append(.init(check, passed: false, error.reason))
            return finish(error)
        }
        func pass(_ check: String, _ detail: String) { checks.append(.init(check, passed: true, detail)) }

        let query: ObjectQuery
        do { query = try self.query(for: key) } catch {
            return fail("key_reference", error as? KeystoreError ?? KeystoreError(.invalidInput, "the key reference is not usable"))
        }

        if has(.unavailable) { return fail("token", moduleError(.deviceRemoved, .C_GetTokenInfo)) }
        pass("token", "token \"\(label)\" (serial \(serial), OpenKCM tests in-memory) is present")
        if has(.loginRefused) { return fail("login", moduleError(.pinIncorrect, .C_Login)) }
        pass("login", "logged in as user with the PIN from memory")

        let object: Object
        do { object = try resolve(query) } catch let error as KeystoreError where error.code == .notFound {
            // As the driver explains it: what is there under that name instead.
            let other = state.withLockedValue { state in state.objects.first { $0.objectClass != "secret-key" && matches($0, query) } }
            let reason = other.map { "no secret key matches \(query) on token \"\(label)\"; there is a \($0.objectClass) object with that name: the L1 key must be a secret key" }
                ?? "no key matches \(query) on token \"\(label)\"; list the token's keys with `cmk hsm keys \(label)`"
            return fail("key_found", KeystoreError(.notFound, reason, detail: error.detail))
        } catch {
            return fail("key_found", error as? KeystoreError ?? KeystoreError(.internal, "unexpected error"))
        }
        pass("key_found", "found \(query)")

        guard object.keyType == "CKK_AES", let material = object.material, [16, 24, 32].contains(material.count) else {
            return fail("key_type", KeystoreError(.unsupported, "the L1 key must be an AES secret key (128, 192 or 256 bits); \(query) is \(object.keyType)"))
        }
        pass("key_type", "AES-\(material.count * 8) secret key")

        guard object.canWrap && object.canUnwrap else {
            let missing = [object.canWrap ? nil : "CKA_WRAP", object.canUnwrap ? nil : "CKA_UNWRAP"].compactMap { $0 }.joined(separator: " and ")
            return fail("key_usage", KeystoreError(.permissionDenied, "the key lacks \(missing): the token will not let it wrap and unwrap other keys; create the L1 key with CKA_WRAP=true and CKA_UNWRAP=true"))
        }
        pass("key_usage", "CKA_WRAP and CKA_UNWRAP are set")

        let chosen: Mechanism
        do { chosen = try wrapMechanism() } catch {
            return fail("mechanism", error as? KeystoreError ?? KeystoreError(.unsupported, "no wrap mechanism"))
        }
        mechanism = chosen.rawValue
        pass("mechanism", "\(chosen.rawValue) supported for wrap and unwrap")

        let testKey = SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
        pass("test_key", "random AES-256 session key generated on the token")
        let blob: [UInt8]
        do {
            try check(.wrap, allowedWith: object, context: "wrapping the test key with the L1 key")
            blob = try seal(testKey, with: object, chosen)
        } catch {
            return fail("wrap", error as? KeystoreError ?? KeystoreError(.internal, "the wrap failed"))
        }
        pass("wrap", "test key wrapped with the L1 key (\(blob.count)-byte blob)")
        let copy: [UInt8]
        do {
            try check(.unwrap, allowedWith: object, context: "unwrapping the blob with the L1 key")
            copy = try open(blob, with: object, chosen)
        } catch {
            return fail("unwrap", error as? KeystoreError ?? KeystoreError(.internal, "the unwrap failed"))
        }
        pass("unwrap", "blob unwrapped with the L1 key")
        guard copy == testKey else {
            return fail("compare", KeystoreError(.internal, "the unwrapped key differs from the original: the token's wrap/unwrap does not round-trip"))
        }
        pass("compare", "the unwrapped key equals the original")
        pass("cleanup", "both session keys destroyed; nothing left on the token")
        return finish(nil)
    }
}
