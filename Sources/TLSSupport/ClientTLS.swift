import NIOConcurrencyHelpers
public import NIOSSL
public import Prometheus

/// How a node reaches an HTTPS gateway: the CA its certificate must chain to (nil: the
/// system's roots) and, for a gateway that requires them, the node's client certificate, read
/// again when its files change (the next connection presents the new one).
public final class ClientTLS: Sendable {
    public let trustRoots: [NIOSSLCertificate]?
    public let identity: CertificateFiles?
    private let cache: NIOLockedValueBox<(fingerprint: String?, configuration: TLSConfiguration)?>

    public init(trustRoots: String?, certificate: String?, key: String?, metrics: PrometheusCollectorRegistry, prefix: String) throws {
        self.trustRoots = try trustRoots.map(ServerTLS.certificates(at:))
        switch (certificate, key) {
        case let (certificate?, key?): identity = try CertificateFiles(certificate: certificate, key: key, metrics: metrics, prefix: prefix)
        case (nil, nil): identity = nil
        default: throw CertificateFiles.Failure("a client certificate needs both its certificate and its key file")
        }
        cache = NIOLockedValueBox(nil)
    }

    /// The configuration for the next request: one value per client pair, so that connections
    /// are pooled until the pair changes.
    public var configuration: TLSConfiguration {
        let pair = identity?.pair
        return cache.withLockedValue { cache in
            if let cache, cache.fingerprint == pair?.fingerprint { return cache.configuration }
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.minimumTLSVersion = .tlsv12
            if let trustRoots { configuration.trustRoots = .certificates(trustRoots) }
            if let pair {
                configuration.certificateChain = pair.chain.map { .certificate($0) }
                configuration.privateKey = .privateKey(pair.key)
            }
            cache = (pair?.fingerprint, configuration)
            return configuration
        }
    }
}
