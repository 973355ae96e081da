public import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a key file could not be read, written or parsed; never holds key bytes.
public struct KeyFileError: Error, Sendable, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// PEM forms of Ed25519 keys (RFC 8410): PKCS#8 for the private key, SPKI for the public one.
/// Both have a fixed DER prefix before the 32 key bytes. X25519 private keys (a node's HPKE
/// key) use the same PKCS#8 form with their own algorithm identifier.
public enum Ed25519Keys {
    static let pkcs8Prefix: [UInt8] = [0x30, 0x2E, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]
    /// id-X25519 (1.3.101.110) in place of id-Ed25519 (1.3.101.112).
    static let x25519PKCS8Prefix: [UInt8] = [0x30, 0x2E, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x6E, 0x04, 0x22, 0x04, 0x20]
    static let spkiPrefix: [UInt8] = [0x30, 0x2A, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x03, 0x21, 0x00]

    /// The text of a private key file, refused when group or others have any access to it: a key
    /// anyone else on the host could have read is not a secret any more.
    public static func readPrivateKeyFile(_ path: String, what: String) throws -> String {
        var status = stat()
        guard stat(path, &status) == 0 else {
            throw KeyFileError("cannot read \(what) \(path): \(String(cString: strerror(errno)))")
        }
        guard status.st_mode & 0o077 == 0 else {
            throw KeyFileError("\(what) \(path) is readable by others; chmod 600 it")
        }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw KeyFileError("cannot read \(what) \(path)")
        }
        return text
    }

    /// Makes a new key, writes it to `path` (mode 0600, refusing to overwrite) and returns the
    /// public key PEM.
    public static func generate(path: String) throws -> (privateKeyPEM: String, publicKeyPEM: String) {
        let key = Curve25519.Signing.PrivateKey()
        let privatePEM = try writePrivateKey(Array(key.rawRepresentation), prefix: pkcs8Prefix, path: path)
        return (privatePEM, publicKeyPEM(Array(key.publicKey.rawRepresentation)))
    }

    /// Makes a new X25519 key and writes it to `path` as PKCS#8 PEM (mode 0600, no overwrite).
    public static func generateX25519(path: String) throws -> Curve25519.KeyAgreement.PrivateKey {
        let key = Curve25519.KeyAgreement.PrivateKey()
        _ = try writePrivateKey(Array(key.rawRepresentation), prefix: x25519PKCS8Prefix, path: path)
        return key
    }

    public static func signingKey(pem text: String) throws -> Curve25519.Signing.PrivateKey {
        try Curve25519.Signing.PrivateKey(rawRepresentation: try privateKeySeed(pem: text))
    }

    public static func x25519Key(pem text: String) throws -> Curve25519.KeyAgreement.PrivateKey {
        let der = try decode(pem: text, label: "PRIVATE KEY")
        guard der.count == 48, Array(der.prefix(16)) == x25519PKCS8Prefix else {
            throw KeyFileError("not an X25519 PKCS#8 key")
        }
        return try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: der.suffix(32))
    }

    private static func writePrivateKey(_ raw: [UInt8], prefix: [UInt8], path: String) throws -> String {
        var seed = raw
        defer { seed.withUnsafeMutableBytes { _ = memset($0.baseAddress!, 0, $0.count) } }
        let privatePEM = pem("PRIVATE KEY", prefix + seed)
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw KeyFileError("cannot create \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(descriptor) }
        let bytes = Array(privatePEM.utf8)
        guard write(descriptor, bytes, bytes.count) == bytes.count, fsync(descriptor) == 0 else {
            throw KeyFileError("cannot write \(path): \(String(cString: strerror(errno)))")
        }
        return privatePEM
    }

    public static func publicKeyPEM(_ key: [UInt8]) -> String { pem("PUBLIC KEY", spkiPrefix + key) }

    package static func privateKeySeed(pem text: String) throws -> [UInt8] {
        let der = try decode(pem: text, label: "PRIVATE KEY")
        guard der.count == 48, Array(der.prefix(16)) == pkcs8Prefix else {
            throw KeyFileError("not an Ed25519 PKCS#8 private key")
        }
        return Array(der.suffix(32))
    }

    package static func publicKey(pem text: String) throws -> [UInt8] {
        let der = try decode(pem: text, label: "PUBLIC KEY")
        guard der.count == 44, Array(der.prefix(12)) == spkiPrefix else {
            throw KeyFileError("not an Ed25519 public key")
        }
        return Array(der.suffix(32))
    }

    private static func pem(_ label: String, _ der: [UInt8]) -> String {
        "-----BEGIN \(label)-----\n\(Data(der).base64EncodedString(options: .lineLength64Characters))\n-----END \(label)-----\n"
    }

    private static func decode(pem text: String, label: String) throws -> [UInt8] {
        let lines = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
        guard let begin = lines.firstIndex(of: "-----BEGIN \(label)-----"),
              let end = lines.firstIndex(of: "-----END \(label)-----"), begin < end,
              let der = Data(base64Encoded: lines[(begin + 1)..<end].joined()) else {
            throw KeyFileError("not a PEM \(label)")
        }
        return Array(der)
    }
}
