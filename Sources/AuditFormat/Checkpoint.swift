import CMKCore
import Crypto
import Foundation

/// A checkpoint (tree head) in the C2SP `tlog-checkpoint` format, signed as a C2SP signed note,
/// so that existing transparency-log tooling can read and verify it:
///
///     <origin>\n<tree size>\n<base64 root hash>\ntime <RFC 3339>\n
///     \n
///     — <key name> <base64(key hash ‖ Ed25519 signature)>\n
public struct Checkpoint: Sendable, Equatable {
    /// The log's identity (`openkcm.local/audit/<uuid>` unless configured).
    public var origin: String
    public var size: UInt64
    public var root: Hash
    /// Milliseconds since 1970 (UTC).
    public var time: Int64

    public init(origin: String, size: UInt64, root: Hash, time: Int64) {
        self.origin = origin
        self.size = size
        self.root = root
        self.time = time
    }

    /// The signed text: every line ends with a newline.
    public var body: String {
        "\(origin)\n\(size)\n\(Data(root).base64EncodedString())\ntime \(RFC3339.format(milliseconds: time))\n"
    }
}

/// A checkpoint with its signatures, as the log publishes it.
public struct SignedCheckpoint: Sendable, Equatable {
    public struct Signature: Sendable, Equatable {
        public var keyName: String
        public var keyHash: UInt32
        public var bytes: [UInt8]

        package init(keyName: String, keyHash: UInt32, bytes: [UInt8]) {
            self.keyName = keyName
            self.keyHash = keyHash
            self.bytes = bytes
        }
    }

    public var checkpoint: Checkpoint
    public var signatures: [Signature]

    /// The note exactly as published.
    public var text: String {
        checkpoint.body + "\n" + signatures.map { signature in
            var blob = withUnsafeBytes(of: signature.keyHash.bigEndian, Array.init)
            blob += signature.bytes
            return "— \(signature.keyName) \(Data(blob).base64EncodedString())\n"
        }.joined()
    }

    /// Parses a published note. Checks its shape only; `verify` checks the signature.
    public init(text: String) throws {
        func bad(_ reason: String) -> AuditError { AuditError(.invalidInput, "not a signed checkpoint: \(reason)") }
        guard let split = text.range(of: "\n\n") else { throw bad("no blank line before the signatures") }
        let body = String(text[..<split.lowerBound]) + "\n"
        let lines = body.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        guard lines.count >= 4 else { throw bad("fewer than four lines") }
        let origin = String(lines[0])
        guard !origin.isEmpty, let size = UInt64(lines[1]), String(size) == lines[1] else { throw bad("bad origin or tree size") }
        guard let root = Data(base64Encoded: String(lines[2])), root.count == 32 else { throw bad("the root hash is not 32 bytes of base64") }
        guard let timeLine = lines.dropFirst(3).first(where: { $0.hasPrefix("time ") }),
              let time = RFC3339.parseMilliseconds(String(timeLine.dropFirst(5))) else { throw bad("no time line") }
        checkpoint = Checkpoint(origin: origin, size: size, root: Array(root), time: time)
        guard checkpoint.body == body else { throw bad("the body is not in this log's form") }
        var signatures: [Signature] = []
        let signatureText = text[split.upperBound...]
        guard signatureText.hasSuffix("\n") else { throw bad("the note does not end with a newline") }
        for line in signatureText.split(separator: "\n") {
            let parts = line.split(separator: " ")
            guard parts.count == 3, parts[0] == "—", let blob = Data(base64Encoded: String(parts[2])), blob.count > 4 else {
                throw bad("malformed signature line")
            }
            let hash = blob.prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            signatures.append(Signature(keyName: String(parts[1]), keyHash: hash, bytes: Array(blob.dropFirst(4))))
        }
        guard !signatures.isEmpty else { throw bad("no signature") }
        self.signatures = signatures
    }

    /// A checkpoint with signatures made elsewhere (the log's signer, `Audit`).
    package init(checkpoint: Checkpoint, signatures: [Signature]) {
        self.checkpoint = checkpoint
        self.signatures = signatures
    }

    /// Whether a signature by `key` (matched by name and key hash) verifies over the body.
    public func isSigned(by key: VerifierKey) -> Bool {
        let body = Array(checkpoint.body.utf8)
        return signatures.contains { signature in
            signature.keyName == key.name && signature.keyHash == key.keyHash
                && (try? Curve25519.Signing.PublicKey(rawRepresentation: key.publicKey))?
                    .isValidSignature(signature.bytes, for: body) == true
        }
    }
}

/// An Ed25519 verifier key in C2SP signed-note form: `<name>+<key hash hex>+<base64(0x01 ‖ key)>`.
public struct VerifierKey: Sendable, Equatable, CustomStringConvertible {
    public let name: String
    public let publicKey: [UInt8]

    public init(name: String, publicKey: [UInt8]) throws {
        guard publicKey.count == 32 else { throw AuditError(.invalidInput, "an Ed25519 public key is 32 bytes") }
        guard !name.isEmpty, !name.contains(where: { $0 == "+" || $0.isWhitespace }) else {
            throw AuditError(.invalidInput, "a key name has no '+' and no spaces")
        }
        self.name = name
        self.publicKey = publicKey
    }

    /// The first four bytes of SHA-256(name ‖ "\n" ‖ 0x01 ‖ key): the signed-note key id.
    public var keyHash: UInt32 {
        var hasher = SHA256()
        hasher.update(data: Array(name.utf8) + [0x0A, 0x01] + publicKey)
        return Array(hasher.finalize()).prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    }

    public var description: String {
        let hash = String(keyHash, radix: 16)
        return "\(name)+\(String(repeating: "0", count: 8 - hash.count) + hash)+\(Data([0x01] + publicKey).base64EncodedString())"
    }

    /// Reads the signed-note form, or a PEM `PUBLIC KEY` (SPKI) with `name`.
    public init(parsing text: String, defaultName: String? = nil) throws {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.hasPrefix("-----BEGIN PUBLIC KEY-----") {
            guard let defaultName else { throw AuditError(.invalidInput, "a PEM public key needs the log's key name") }
            do {
                try self.init(name: defaultName, publicKey: try Ed25519Keys.publicKey(pem: trimmed))
            } catch let error as KeyFileError {
                throw AuditError(.invalidInput, error.reason)
            }
            return
        }
        let parts = trimmed.split(separator: "+", maxSplits: 2)
        guard parts.count == 3, let blob = Data(base64Encoded: String(parts[2])), blob.count == 33, blob.first == 0x01 else {
            throw AuditError(.invalidInput, "not an Ed25519 verifier key (name+hash+base64) or PEM public key")
        }
        try self.init(name: String(parts[0]), publicKey: Array(blob.dropFirst()))
        guard String(parts[1]).lowercased() == description.split(separator: "+")[1] else {
            throw AuditError(.invalidInput, "the verifier key's hash does not match its name and key")
        }
    }
}
