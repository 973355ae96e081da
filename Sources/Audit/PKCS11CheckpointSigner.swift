public import AuditFormat
public import KSI

/// Signs checkpoints with an Ed25519 key that lives on a PKCS#11 token and never leaves it
/// (`CKM_EDDSA` through the KSI). The key pair is made on the token at first use if missing.
public struct PKCS11CheckpointSigner: CheckpointSigner {
    let token: PKCS11Token
    let key: KeyReference
    public let verifierKey: VerifierKey

    public init(token: PKCS11Token, label: String, keyName: String) async throws {
        self.token = token
        do {
            key = try await token.ensureSigningKey(label: label)
            verifierKey = try VerifierKey(name: keyName, publicKey: try await token.ed25519PublicKey(of: key))
        } catch let error as KeystoreError {
            throw AuditError(.unavailable, "cannot use the audit signing key \"\(label)\" on token \(token.name): \(error.reason)")
        }
    }

    public func sign(_ message: [UInt8]) async throws -> [UInt8] {
        do {
            return try await token.signEd25519(message, with: key)
        } catch let error as KeystoreError {
            throw AuditError(.unavailable, "the HSM refused to sign the checkpoint: \(error.reason)")
        }
    }
}
