import Foundation
public import Logging
public import NIOCore
public import NIOSSL
public import ServiceLifecycle
import UnixSignals

/// TLS for a listener (the gateway's, a node's application API): TLS 1.2 or later, the
/// certificate chain and key of `files` as they are at each handshake, so that a reload takes
/// effect for the next connection and never cuts one that is open.
public enum ServerTLS {
    /// Client certificates a listener asks for.
    public enum ClientCertificates: Sendable {
        /// None asked for.
        case none
        /// Asked for and, when presented, verified against `ca` (a connection without one is
        /// accepted; routes that need one check with `peerCertificate`).
        case optional(ca: [NIOSSLCertificate])
        /// Required at the handshake, verified against `ca`.
        case required(ca: [NIOSSLCertificate])
    }

    public static func configuration(_ files: CertificateFiles, clientCertificates: ClientCertificates = .none) -> TLSConfiguration {
        let pair = files.pair
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: pair.chain.map { .certificate($0) },
                                                                     privateKey: .privateKey(pair.key))
        configuration.minimumTLSVersion = .tlsv12
        switch clientCertificates {
        case .none:
            configuration.certificateVerification = .none
        case .optional(let ca):
            configuration.trustRoots = .certificates(ca)
            configuration.certificateVerification = .optionalVerification
        case .required(let ca):
            configuration.trustRoots = .certificates(ca)
            // A client certificate names a client, not a host: no hostname to check.
            configuration.certificateVerification = .noHostnameVerification
        }
        // Called at every ClientHello: the pair in service now, not the one read at start.
        configuration.sslContextCallback = { _, promise in
            let pair = files.pair
            var override = NIOSSLContextConfigurationOverride()
            override.certificateChain = pair.chain.map { .certificate($0) }
            override.privateKey = .privateKey(pair.key)
            promise.succeed(override)
        }
        return configuration
    }

    /// Reads a PEM bundle of CA certificates (client CAs, a gateway's CA); throws with the path.
    public static func certificates(at path: String) throws -> [NIOSSLCertificate] {
        guard let bytes = FileManager.default.contents(atPath: path) else {
            throw CertificateFiles.Failure("cannot read the CA file \(path)")
        }
        guard let certificates = try? NIOSSLCertificate.fromPEMBytes(Array(bytes)), !certificates.isEmpty else {
            throw CertificateFiles.Failure("\(path) holds no PEM certificate")
        }
        return certificates
    }

    /// The verified client certificate of the connection, if it presented one (nil on a plain
    /// connection).
    public static func peerCertificate(of channel: any Channel) async -> NIOSSLCertificate? {
        (try? await channel.nioSSL_peerCertificate().get()) ?? nil
    }

    /// Whether `host` names this machine (127.0.0.0/8, ::1, localhost): where plain HTTP does
    /// not leave the host.
    public static func isLoopback(_ host: String) -> Bool {
        let host = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        if host.lowercased() == "localhost" || host == "::1" { return true }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }
}

/// Reads certificate files again every `interval` and at once on SIGHUP; a pair that fails to
/// read keeps the one in service and is logged (once per distinct problem).
public struct CertificateReloader: Service {
    let files: [CertificateFiles]
    let interval: Duration
    let logger: Logger

    public init(files: [CertificateFiles], interval: Duration, logger: Logger) {
        (self.files, self.interval, self.logger) = (files, interval, logger)
    }

    public func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: interval)
                        if !Task.isCancelled { reloadAll(reason: "poll") }
                    }
                }
                group.addTask {
                    for await _ in signals { reloadAll(reason: "SIGHUP") }
                }
                await group.waitForAll()
            }
        }
    }

    func reloadAll(reason: String) {
        for file in files {
            switch file.reload() {
            case .unchanged:
                if reason == "SIGHUP" { logger.info("TLS certificate unchanged", metadata: ["certificate": "\(file.certificatePath)"]) }
            case .reloaded(let fingerprint):
                let status = file.status
                logger.notice("TLS certificate reloaded", metadata: ["certificate": "\(file.certificatePath)", "fingerprint": "\(fingerprint)",
                                                                    "notAfter": "\(status.notAfter)", "trigger": "\(reason)"])
            case .failed(let message, let repeated):
                if !repeated || reason == "SIGHUP" {
                    logger.error("TLS certificate not reloaded, the previous one stays in service",
                                 metadata: ["problem": "\(message)", "fingerprint": "\(file.status.fingerprint)"])
                }
            }
        }
    }
}
