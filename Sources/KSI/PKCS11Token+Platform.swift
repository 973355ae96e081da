import PKCS11

/// What the gateway does with its own keys (the IVK) on a PKCS#11 token, and the in-token L2
/// generation used when the L1 key and the IVK share a token.
extension PKCS11Token {
    /// The AES-GCM IV length and tag length used to seal data at rest under the IVK.
    static let gcmIVLength = 12
    static let gcmTagBits = 128

    /// Makes an AES-256 token key for the platform (an IVK version) unless one with `label`
    /// exists. Sensitive and never extractable: it only wraps, unwraps, encrypts and decrypts.
    public func ensurePlatformKey(label: String) async throws -> KeyReference {
        var uri = PKCS11URI()
        uri.token = configuration.token.label
        uri.serial = configuration.token.label == nil ? configuration.token.serial : nil
        uri.object = label
        uri.type = "secret-key"
        try await translating("create platform key") {
            try await pool.withSession { session in
                let existing = try session.findObjects([.class(.secretKey), .label(label)], limit: 2)
                if existing.isEmpty {
                    _ = try session.generateAESKey(bits: 256, token: true, label: label,
                                                   usages: [.encrypt(true), .decrypt(true), .wrap(true), .unwrap(true)],
                                                   sensitive: true, extractable: false)
                }
            }
        }
        return .pkcs11(uri)
    }

    /// Encrypts with AES-256-GCM under `key` on the token; the IV comes from the token's RNG.
    /// Output: IV (12 bytes) ‖ ciphertext ‖ tag (16 bytes).
    public func seal(_ data: [UInt8], with key: KeyReference, aad: [UInt8]) async throws -> [UInt8] {
        countUse(of: key)
        let query = try query(for: key)
        return try await translating("seal") {
            try await pool.withSession { [self] session in
                let handle = try pool.resolve(query, in: session)
                let iv = try session.generateRandom(count: Self.gcmIVLength)
                let sealed = try session.encrypt(data, with: handle, mechanism: .aesGCM(iv: iv, aad: aad, tagBits: Self.gcmTagBits))
                return iv + sealed
            }
        }
    }

    /// Reverses `seal`. A modified box or the wrong additional data fails as invalid input.
    public func open(_ box: [UInt8], with key: KeyReference, aad: [UInt8]) async throws -> [UInt8] {
        countUse(of: key)
        let query = try query(for: key)
        guard box.count > Self.gcmIVLength + Self.gcmTagBits / 8 else {
            throw KeystoreError(.invalidInput, "the sealed value is too short")
        }
        return try await translating("open") {
            try await pool.withSession { [self] session in
                let handle = try pool.resolve(query, in: session)
                let iv = Array(box.prefix(Self.gcmIVLength))
                do {
                    return try session.decrypt(Array(box.dropFirst(Self.gcmIVLength)), with: handle,
                                               mechanism: .aesGCM(iv: iv, aad: aad, tagBits: Self.gcmTagBits))
                } catch let error as PKCS11Error where error.recovery == .report {
                    throw KeystoreError(.invalidInput, "the sealed value does not open: it was altered or sealed for another record",
                                        detail: error.description)
                }
            }
        }
    }

    /// A new L2 made inside this token and returned only wrapped, by `l1` (the sovereign
    /// binding) and by `ivk` (the active binding): one session key, wrapped twice, destroyed.
    /// Both keys must be on this token; the plaintext never leaves it.
    public func generateL2(wrappedBy l1: KeyReference, and ivk: KeyReference) async throws -> (sovereign: WrappedKey, active: WrappedKey) {
        countUse(of: l1)
        countUse(of: ivk)
        let l1Query = try query(for: l1)
        let ivkQuery = try query(for: ivk)
        return try await translating("generate L2") {
            try await pool.withSession { [self] session in
                let l1Handle = try pool.resolve(l1Query, in: session)
                let ivkHandle = try pool.resolve(ivkQuery, in: session)
                let type = try wrapMechanism(in: session)
                let mechanism = try Self.mechanism(type)
                let key = try session.generateAESKey(bits: 256, token: false, usages: [.encrypt(true), .decrypt(true)],
                                                     sensitive: true, extractable: true)
                defer { Self.destroy(key, in: session) }
                let sovereign = try session.wrapKey(key, with: l1Handle, mechanism: mechanism)
                let active = try session.wrapKey(key, with: ivkHandle, mechanism: mechanism)
                return (WrappedKey(mechanism: type.name, blob: sovereign), WrappedKey(mechanism: type.name, blob: active))
            }
        }
    }

    /// Re-wraps a key from one KEK to another, both on this token: `C_UnwrapKey` into a
    /// sensitive session key, `C_WrapKey` with `to`, `C_DestroyObject`. The key's plaintext never
    /// leaves the token (restore and L1 rotation when L1 and the IVK share it; IVK rotation).
    public func rewrap(_ wrapped: WrappedKey, from: KeyReference, to: KeyReference) async throws -> WrappedKey {
        countUse(of: from)
        countUse(of: to)
        let fromQuery = try query(for: from)
        let toQuery = try query(for: to)
        let unwrapMechanism = try Self.mechanism(named: wrapped.mechanism)
        try Self.checkBlob(wrapped)
        return try await translating("rewrap") {
            try await pool.withSession { [self] session in
                let fromHandle = try pool.resolve(fromQuery, in: session)
                let toHandle = try pool.resolve(toQuery, in: session)
                let key = try Self.unwrapChecked(session, wrapped.blob, fromHandle, unwrapMechanism,
                                                 unwrapTemplate(Self.sessionKeyTemplate + [.sensitive(true), .extractable(true), .encrypt(true)],
                                                                blobLength: wrapped.blob.count))
                defer { Self.destroy(key, in: session) }
                let type = try wrapMechanism(in: session)
                let blob = try session.wrapKey(key, with: toHandle, mechanism: try Self.mechanism(type))
                return WrappedKey(mechanism: type.name, blob: blob)
            }
        }
    }

    /// Whether `key` names a key on this token (same token label or serial).
    public func holds(_ key: KeyReference) -> Bool {
        guard case .pkcs11(let uri) = key else { return false }
        if let label = uri.token, let configured = configuration.token.label { return label == configured }
        if let serial = uri.serial, let configured = configuration.token.serial { return serial == configured }
        return false
    }
}
