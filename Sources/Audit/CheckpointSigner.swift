public import AuditFormat
import CMKCore
import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What signs checkpoints: an Ed25519 key in a file, or one on an HSM token.
public protocol CheckpointSigner: Sendable {
    var verifierKey: VerifierKey { get }
    /// An Ed25519 signature (64 bytes) over `message`.
    func sign(_ message: [UInt8]) async throws -> [UInt8]
}

extension SignedCheckpoint {
    /// Signs `checkpoint`'s body with `signer` (one signature, named after its key).
    public static func sign(_ checkpoint: Checkpoint, with signer: any CheckpointSigner) async throws -> SignedCheckpoint {
        let signature = try await signer.sign(Array(checkpoint.body.utf8))
        return SignedCheckpoint(checkpoint: checkpoint, signatures: [
            Signature(keyName: signer.verifierKey.name, keyHash: signer.verifierKey.keyHash, bytes: signature),
        ])
    }
}

/// An Ed25519 key read from a PKCS#8 PEM file (`openssl genpkey -algorithm ed25519`, or
/// `cmk audit keygen`). The file must not be readable by group or others.
public struct Ed25519FileSigner: CheckpointSigner {
    private let key: Curve25519.Signing.PrivateKey
    public let verifierKey: VerifierKey

    public init(path: String, keyName: String) throws {
        let text: String
        do { text = try Ed25519Keys.readPrivateKeyFile(path, what: "the audit signing key file") } catch let error as KeyFileError {
            throw AuditError(.invalidInput, error.reason)
        }
        try self.init(pem: text, keyName: keyName)
    }

    public init(pem: String, keyName: String) throws {
        do {
            key = try Curve25519.Signing.PrivateKey(rawRepresentation: try Ed25519Keys.privateKeySeed(pem: pem))
        } catch let error as KeyFileError {
            throw AuditError(.invalidInput, error.reason)
        }
        verifierKey = try VerifierKey(name: keyName, publicKey: Array(key.publicKey.rawRepresentation))
    }

    public func sign(_ message: [UInt8]) async throws -> [UInt8] {
        Array(try key.signature(for: message))
    }
}

