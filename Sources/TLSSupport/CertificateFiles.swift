import CMKCore
import Crypto
public import Foundation
import NIOConcurrencyHelpers
public import NIOSSL
public import Prometheus

/// A certificate chain and its private key, read from PEM files and read again when they
/// change, so that a renewed certificate is served without a restart (see `CertificateReloader`).
///
/// A replacement is taken only whole and sound: both files parse, the key belongs to the leaf,
/// the leaf is within its validity period. Anything else (a half-written file, a key from
/// another pair, an expired certificate) keeps the pair in service and is reported: in the log,
/// in `status.lastError` and in `<prefix>_tls_reloads_total{result="failed"}`.
public final class CertificateFiles: Sendable {
    public struct Failure: Error, CustomStringConvertible, Sendable, Equatable {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    /// The pair in service.
    public struct Pair: Sendable {
        public var chain: [NIOSSLCertificate]
        public var key: NIOSSLPrivateKey
        /// SHA-256 of the leaf's DER, hex: what operators compare with `openssl x509 -fingerprint -sha256`.
        public var fingerprint: String
        public var notAfter: Date
        /// A digest of both files' bytes: a change of either is a change.
        var filesDigest: SHA256Digest
    }

    /// What the service reports (`/readyz`, the node's status).
    public struct Status: Sendable, Codable, Equatable {
        public var certificate: String
        public var fingerprint: String
        public var notAfter: Date
        public var loadedAt: Date
        public var reloads: Int
        /// Why the latest attempt to read a changed pair failed; nil once a good pair is read.
        public var lastError: String?
    }

    public enum Outcome: Sendable, Equatable {
        case unchanged
        case reloaded(fingerprint: String)
        /// `repeated`: the same problem as at the previous attempt.
        case failed(String, repeated: Bool)
    }

    public let certificatePath: String
    public let keyPath: String
    private let state: NIOLockedValueBox<(pair: Pair, status: Status)>
    private let reloaded: Prometheus.Counter
    private let failed: Prometheus.Counter
    private let expiry: Prometheus.Gauge

    /// Reads the pair; throws a `Failure` that names the file and the problem.
    /// `metrics`: where `<prefix>_tls_reloads_total{result}` and
    /// `<prefix>_tls_certificate_expiry_timestamp_seconds` go.
    public init(certificate: String, key: String, metrics: PrometheusCollectorRegistry, prefix: String, now: Date = Date()) throws {
        certificatePath = certificate
        keyPath = key
        let pair = try Self.read(certificate: certificate, key: key, now: now)
        state = NIOLockedValueBox((pair, Status(certificate: certificate, fingerprint: pair.fingerprint, notAfter: pair.notAfter,
                                                loadedAt: now, reloads: 0, lastError: nil)))
        let reloads = MetricNameDescriptor(namespace: prefix, metricName: "tls_reloads", unitName: "total",
                                           helpText: "Certificate and key reloads, by result")
        reloaded = metrics.makeCounter(descriptor: reloads, labels: [("result", "reloaded")])
        failed = metrics.makeCounter(descriptor: reloads, labels: [("result", "failed")])
        expiry = metrics.makeGauge(descriptor: MetricNameDescriptor(namespace: prefix, metricName: "tls_certificate_expiry_timestamp",
                                                                    unitName: "seconds", helpText: "When the certificate in service expires"))
        expiry.set(pair.notAfter.timeIntervalSince1970)
    }

    public var pair: Pair { state.withLockedValue { $0.pair } }
    public var status: Status { state.withLockedValue { $0.status } }

    /// Reads the files again; takes the pair if they changed and are sound.
    @discardableResult
    public func reload(now: Date = Date()) -> Outcome {
        let current = pair
        // Unchanged bytes are not parsed again: polling costs two small reads.
        if let digest = try? Self.digest(certificate: certificatePath, key: keyPath), digest == current.filesDigest {
            return .unchanged
        }
        do {
            let next = try Self.read(certificate: certificatePath, key: keyPath, now: now)
            state.withLockedValue {
                $0.pair = next
                $0.status = Status(certificate: certificatePath, fingerprint: next.fingerprint, notAfter: next.notAfter, loadedAt: now,
                                   reloads: $0.status.reloads + 1, lastError: nil)
            }
            reloaded.increment()
            expiry.set(next.notAfter.timeIntervalSince1970)
            return next.fingerprint == current.fingerprint ? .unchanged : .reloaded(fingerprint: next.fingerprint)
        } catch {
            let message = (error as? Failure)?.description ?? "\(error)"
            let repeated = state.withLockedValue { state -> Bool in
                defer { state.status.lastError = message }
                return state.status.lastError == message
            }
            // The same broken files are reported once, not at every poll.
            if !repeated { failed.increment() }
            return .failed(message, repeated: repeated)
        }
    }

    static func digest(certificate: String, key: String) throws -> SHA256Digest {
        var hash = SHA256()
        for path in [certificate, key] {
            guard let bytes = FileManager.default.contents(atPath: path) else { throw Failure("cannot read \(path)") }
            hash.update(data: bytes)
            hash.update(data: [0])
        }
        return hash.finalize()
    }

    static func read(certificate: String, key: String, now: Date) throws -> Pair {
        guard let certificateBytes = FileManager.default.contents(atPath: certificate) else {
            throw Failure("cannot read the certificate file \(certificate)")
        }
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: key), let keyBytes = FileManager.default.contents(atPath: key) else {
            throw Failure("cannot read the private key file \(key)")
        }
        // As PostgreSQL does for its server key: a key file others can read is refused.
        if let mode = attributes[.posixPermissions] as? Int, mode & 0o007 != 0 {
            throw Failure("the private key file \(key) is accessible to other users (mode \(String(mode, radix: 8))): chmod o-rwx it")
        }
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMBytes(Array(certificateBytes))
        } catch {
            throw Failure("\(certificate) is not a PEM certificate chain")
        }
        guard let leaf = chain.first else { throw Failure("\(certificate) holds no certificate") }
        let privateKey: NIOSSLPrivateKey
        do {
            privateKey = try NIOSSLPrivateKey(bytes: Array(keyBytes), format: .pem)
        } catch {
            throw Failure("\(key) is not an unencrypted PEM private key")
        }
        // BoringSSL compares the key with the leaf's when a context takes both.
        do {
            _ = try NIOSSLContext(configuration: .makeServerConfiguration(certificateChain: chain.map { .certificate($0) },
                                                                          privateKey: .privateKey(privateKey)))
        } catch {
            throw Failure("the private key in \(key) does not belong to the certificate in \(certificate)")
        }
        let notBefore = Date(timeIntervalSince1970: TimeInterval(leaf.notValidBefore))
        let notAfter = Date(timeIntervalSince1970: TimeInterval(leaf.notValidAfter))
        guard now < notAfter else { throw Failure("the certificate in \(certificate) expired at \(notAfter)") }
        guard notBefore <= now else { throw Failure("the certificate in \(certificate) is not valid before \(notBefore)") }
        let fingerprint = Hex.encode(SHA256.hash(data: try leaf.toDERBytes()))
        var hash = SHA256()
        hash.update(data: certificateBytes); hash.update(data: [0]); hash.update(data: keyBytes); hash.update(data: [0])
        return Pair(chain: chain, key: privateKey, fingerprint: fingerprint, notAfter: notAfter, filesDigest: hash.finalize())
    }
}
