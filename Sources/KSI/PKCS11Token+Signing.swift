import PKCS11

/// Ed25519 signing with a key that never leaves the token: the audit log's checkpoints when
/// an HSM holds the signing key.
extension PKCS11Token {
    /// Makes an Ed25519 key pair labelled `label` unless one exists: the private key is a
    /// sensitive, never-extractable token object that can only sign. Returns its reference.
    public func ensureSigningKey(label: String) async throws -> KeyReference {
        try await translating("create signing key") {
            try await pool.withSession { session in
                let existing = try session.findObjects([.class(.privateKey), .keyType(.ecEdwards), .label(label)], limit: 2)
                if existing.isEmpty {
                    _ = try session.generateEd25519KeyPair(
                        publicTemplate: [.token(true), .label(label), .verify(true), .private(false)],
                        privateTemplate: [.token(true), .label(label), .sign(true), .sensitive(true), .extractable(false), .private(true)])
                }
            }
        }
        return signingKeyReference(label: label)
    }

    func signingKeyReference(label: String) -> KeyReference {
        var uri = PKCS11URI()
        uri.token = configuration.token.label
        uri.serial = configuration.token.label == nil ? configuration.token.serial : nil
        uri.object = label
        uri.type = "private"
        return .pkcs11(uri)
    }

    /// The 32-byte Ed25519 public key of the pair that `key` (its private half) belongs to,
    /// read from the public key object with the same label (`CKA_EC_POINT`, DER OCTET STRING
    /// or raw, as modules differ).
    public func ed25519PublicKey(of key: KeyReference) async throws -> [UInt8] {
        guard case .pkcs11(let uri) = key, let label = uri.object else {
            throw KeystoreError(.invalidInput, "name the signing key by its label (object=…)")
        }
        let name = self.name
        return try await translating("read signing public key") {
            try await pool.withSession { session in
                let found = try session.findObjects([.class(.publicKey), .keyType(.ecEdwards), .label(label)], limit: 2)
                guard found.count == 1 else {
                    throw KeystoreError(found.isEmpty ? .notFound : .conflict,
                                        "expected one Ed25519 public key labelled \"\(label)\" on token \(name), found \(found.count)")
                }
                guard let point = try session.attributes([.ecPoint], of: found[0]).bytes(.ecPoint) else {
                    throw KeystoreError(.unsupported, "token \(name) does not show the public key's CKA_EC_POINT")
                }
                if point.count == 34, point[0] == 0x04, point[1] == 0x20 { return Array(point.suffix(32)) }
                guard point.count == 32 else { throw KeystoreError(.unsupported, "CKA_EC_POINT is not an Ed25519 point") }
                return point
            }
        }
    }

    /// An Ed25519 signature (64 bytes) over `message` (`CKM_EDDSA`, pure).
    public func signEd25519(_ message: [UInt8], with key: KeyReference) async throws -> [UInt8] {
        countUse(of: key)
        let query = try query(for: key, objectClass: .privateKey)
        return try await translating("sign") {
            try await pool.withSession { [self] session in
                try session.sign(message, with: try pool.resolve(query, in: session), mechanism: .eddsa)
            }
        }
    }
}
