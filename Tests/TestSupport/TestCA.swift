import Crypto
public import Foundation
import SwiftASN1
import X509

/// A certificate authority made by a test, in a directory of its own: it issues server and
/// client certificates as PEM files (key files mode 0600), so that tests run the gateway and
/// nodes over real TLS without any fixed key material in the tree.
public struct TestCA: Sendable {
    public let directory: String
    public let name: String
    private let key: P256.Signing.PrivateKey
    private let certificate: Certificate

    /// The CA's certificate (PEM), what clients trust.
    public var certificatePath: String { "\(directory)/\(name).pem" }

    public init(directory: String, name: String = "ca") throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        self.directory = directory
        self.name = name
        key = P256.Signing.PrivateKey()
        let subject = try DistinguishedName {
            OrganizationName("OpenKCM tests")
            CommonName("OpenKCM test CA \(name)")
        }
        let now = Date()
        certificate = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-300), notValidAfter: now.addingTimeInterval(86_400),
            issuer: subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: .init(key))
        try Data(certificate.serializeAsPEM().pemString.utf8).write(to: URL(fileURLWithPath: certificatePath))
    }

    public struct Issued: Sendable {
        public let certificate: String
        public let key: String
        /// SHA-256 of the certificate's DER, hex (what the servers report as its fingerprint).
        public let fingerprint: String
    }

    /// Issues a certificate to `dnsNames` (and 127.0.0.1), for servers and clients alike, and
    /// writes it and its key as `<file>.pem` and `<file>.key`. `validFor`: seconds from now
    /// (negative: already expired).
    @discardableResult
    public func issue(_ file: String, commonName: String, dnsNames: [String] = [], validFor: TimeInterval = 86_400) throws -> Issued {
        let leafKey = P256.Signing.PrivateKey()
        let subject = try DistinguishedName { CommonName(commonName) }
        let now = Date()
        let leaf = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(leafKey.publicKey),
            notValidBefore: now.addingTimeInterval(min(-300, validFor - 600)), notValidAfter: now.addingTimeInterval(validFor),
            issuer: certificate.subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
                SubjectAlternativeNames(dnsNames.map { GeneralName.dnsName($0) } + [.ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1]))])
            },
            issuerPrivateKey: .init(key))
        let issued = Issued(certificate: "\(directory)/\(file).pem", key: "\(directory)/\(file).key",
                            fingerprint: SHA256.hash(data: try Self.der(leaf)).map { String(format: "%02x", $0) }.joined())
        try write(leaf, key: leafKey, to: issued)
        return issued
    }

    private func write(_ leaf: Certificate, key: P256.Signing.PrivateKey, to issued: Issued) throws {
        // Written beside and renamed: a server polling the files never reads half of one.
        let chain = try leaf.serializeAsPEM().pemString + "\n"
        try Self.replace(issued.key, with: Data(key.pemRepresentation.utf8), mode: 0o600)
        try Self.replace(issued.certificate, with: Data(chain.utf8), mode: 0o644)
    }

    public static func replace(_ path: String, with data: Data, mode: Int) throws {
        let temporary = path + ".tmp"
        try data.write(to: URL(fileURLWithPath: temporary))
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: temporary)
        guard rename(temporary, path) == 0 else { throw CocoaError(.fileWriteUnknown) }
    }

    static func der(_ certificate: Certificate) throws -> [UInt8] {
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        return serializer.serializedBytes
    }
}
