public import CMKCore
import Foundation
import NIOConcurrencyHelpers
public import NIOCore
import NIOExtras
import NIOPosix
public import NIOSSL

/// A KMIP client over mutual TLS (KMIP's profile: TLS 1.2 or later, port 5696, a client
/// certificate): one request, one response, in TTLV, over a connection borrowed from a small
/// pool of idle ones. Time is bounded twice: the connection (TCP and TLS) and each answer.
///
/// The TLS material is read once, when the client is made, so that a missing or unreadable
/// file is a start-up error; a renewed client certificate takes a restart (Docs/KMIP.md).
public final class KMIPClient: Sendable {
    public struct Endpoint: Sendable, Hashable {
        public var host: String
        public var port: Int
        /// The name the server's certificate must carry; the host when nil. An IP address is
        /// checked against the certificate's IP SANs (no SNI is sent for it).
        public var serverName: String?
        public var connectTimeout: Duration
        public var requestTimeout: Duration

        public init(host: String, port: Int = 5696, serverName: String? = nil, connectTimeout: Duration = .seconds(5), requestTimeout: Duration = .seconds(10)) {
            (self.host, self.port, self.serverName, self.connectTimeout, self.requestTimeout) = (host, port, serverName, connectTimeout, requestTimeout)
        }

        public var description: String { "\(host):\(port)" }
    }

    /// At most this many idle connections are kept for reuse; more concurrent requests open
    /// more connections, closed after their answer.
    public static let maxIdleConnections = 4

    public let endpoint: Endpoint
    let context: NIOSSLContext
    let idle = NIOLockedValueBox<[any Channel]>([])
    let group: any EventLoopGroup

    /// Reads the CA bundle, the client certificate chain and its key (PEM). Throws a
    /// `.configuration` error naming the file.
    public init(endpoint: Endpoint, caFile: String, certificateFile: String, keyFile: String,
                group: (any EventLoopGroup)? = nil) throws {
        self.endpoint = endpoint
        self.group = group ?? MultiThreadedEventLoopGroup.singleton
        func read(_ path: String, _ what: String) throws -> [UInt8] {
            guard let bytes = FileManager.default.contents(atPath: path) else {
                throw KMIPError(.configuration, "cannot read the KMIP \(what) file \(path)")
            }
            return Array(bytes)
        }
        let ca: [NIOSSLCertificate]
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        do { ca = try NIOSSLCertificate.fromPEMBytes(try read(caFile, "CA")) } catch let error as KMIPError { throw error } catch {
            throw KMIPError(.configuration, "the KMIP CA file \(caFile) is not a PEM certificate bundle")
        }
        guard !ca.isEmpty else { throw KMIPError(.configuration, "the KMIP CA file \(caFile) holds no certificate") }
        do { chain = try NIOSSLCertificate.fromPEMBytes(try read(certificateFile, "client certificate")) } catch let error as KMIPError { throw error } catch {
            throw KMIPError(.configuration, "the KMIP client certificate file \(certificateFile) is not PEM")
        }
        guard !chain.isEmpty else { throw KMIPError(.configuration, "the KMIP client certificate file \(certificateFile) holds no certificate") }
        do {
            var bytes = try read(keyFile, "client key")
            defer { for index in bytes.indices { bytes[index] = 0 } }
            key = try NIOSSLPrivateKey(bytes: bytes, format: .pem)
        } catch let error as KMIPError { throw error } catch {
            // Never the key's bytes or the parser's view of them: the file name only.
            throw KMIPError(.configuration, "the KMIP client key file \(keyFile) is not a PEM private key (an encrypted key is not supported)")
        }
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.trustRoots = .certificates(ca)
        configuration.certificateChain = chain.map { .certificate($0) }
        configuration.privateKey = .privateKey(key)
        configuration.certificateVerification = .fullVerification
        do { context = try NIOSSLContext(configuration: configuration) } catch {
            throw KMIPError(.configuration, "the KMIP client certificate \(certificateFile) and key \(keyFile) do not make a TLS identity (is the key the certificate's?)")
        }
    }

    deinit {
        for channel in idle.withLockedValue({ $0 }) { channel.close(promise: nil) }
    }

    /// Closes the idle connections.
    public func shutdown() async {
        let channels = idle.withLockedValue { channels in defer { channels = [] }; return channels }
        for channel in channels { try? await channel.close() }
    }

    // MARK: One request

    /// Sends one message and returns the response message, decoded. A reused connection that
    /// turns out closed is replaced once, for an idempotent operation only.
    public func exchange(_ request: TTLV, idempotent: Bool) async throws -> TTLV {
        let bytes: [UInt8]
        do { bytes = try request.encoded() } catch let error as TTLVError {
            throw KMIPError(.malformed, "the request cannot be encoded: \(error)")
        }
        var reused = takeIdle()
        while true {
            let channel: any Channel
            if let found = reused { channel = found } else { channel = try await connect() }
            do {
                let answer = try await send(bytes, on: channel)
                putIdle(channel)
                do { return try TTLV(decoding: answer) } catch let error as TTLVError {
                    throw KMIPError(.malformed, "the answer is not TTLV: \(error)")
                }
            } catch let error as KMIPError {
                channel.close(promise: nil)
                if reused != nil, idempotent, error.kind == .closed {
                    reused = nil
                    continue
                }
                throw error
            }
        }
    }

    func takeIdle() -> (any Channel)? {
        idle.withLockedValue { channels in
            while let channel = channels.popLast() {
                if channel.isActive { return channel }
                channel.close(promise: nil)
            }
            return nil
        }
    }

    func putIdle(_ channel: any Channel) {
        let kept = idle.withLockedValue { channels in
            guard channel.isActive, channels.count < Self.maxIdleConnections else { return false }
            channels.append(channel)
            return true
        }
        if !kept { channel.close(promise: nil) }
    }

    func connect() async throws -> any Channel {
        let context = self.context
        let name = endpoint.serverName ?? endpoint.host
        // SNI carries host names only; an address is checked against the certificate's IP SANs.
        let sni: String? = Self.isIPAddress(name) ? nil : name
        let timeout = TimeAmount.nanoseconds(Int64(endpoint.connectTimeout.components.seconds) * 1_000_000_000
                                             + endpoint.connectTimeout.components.attoseconds / 1_000_000_000)
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let tls = try NIOSSLClientHandler(context: context, serverHostname: sni)
                    try channel.pipeline.syncOperations.addHandler(tls)
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(TTLVFrameDecoder()))
                    try channel.pipeline.syncOperations.addHandler(RequestResponseHandler<ByteBuffer, ByteBuffer>())
                }
            }
        do {
            let channel = try await bootstrap.connect(host: endpoint.host, port: endpoint.port).get()
            return channel
        } catch let error as ChannelError {
            if case .connectTimeout = error {
                throw KMIPError(.unreachable, "no TCP connection to \(endpoint.description) within \(endpoint.connectTimeout)")
            }
            throw KMIPError(.unreachable, "cannot connect to \(endpoint.description): \(error)")
        } catch {
            throw KMIPError(.unreachable, "cannot connect to \(endpoint.description): \(Self.words(error))")
        }
    }

    func send(_ bytes: [UInt8], on channel: any Channel) async throws -> [UInt8] {
        let promise = channel.eventLoop.makePromise(of: ByteBuffer.self)
        let timedOut = NIOLockedValueBox(false)
        let limit = endpoint.requestTimeout
        let timer = channel.eventLoop.scheduleTask(in: .milliseconds(Int64(limit.components.seconds) * 1000 + limit.components.attoseconds / 1_000_000_000_000_000)) {
            timedOut.withLockedValue { $0 = true }
            // Closing fails the outstanding answer (RequestResponseHandler fails what is pending).
            channel.close(promise: nil)
        }
        channel.writeAndFlush((channel.allocator.buffer(bytes: bytes), promise), promise: nil)
        do {
            var answer = try await promise.futureResult.get()
            timer.cancel()
            return answer.readBytes(length: answer.readableBytes) ?? []
        } catch {
            timer.cancel()
            if timedOut.withLockedValue({ $0 }) {
                throw KMIPError(.timeout, "no answer from \(endpoint.description) within \(limit)")
            }
            throw Self.classify(error, endpoint: endpoint.description)
        }
    }

    /// A transport failure in the operator's words: which side of TLS refused, or a closed line.
    static func classify(_ error: any Error, endpoint: String) -> KMIPError {
        if let error = error as? NIOSSLError {
            let text = words(error)
            // BoringSSL's reason code (TLSV1_ALERT_UNKNOWN_CA, CERTIFICATE_VERIFY_FAILED) says it
            // all; the rest of its text is a source location.
            let code = text.range(of: #"[A-Z0-9_]*(ALERT|VERIFY|CERTIFICATE)[A-Z0-9_]*"#, options: .regularExpression).map { String(text[$0]) }
            if text.contains("CERTIFICATE_VERIFY_FAILED") {
                return KMIPError(.tls, "the server's certificate does not chain to the configured CA (\(code ?? text))")
            }
            if text.contains("ALERT_UNKNOWN_CA") || text.contains("ALERT_BAD_CERTIFICATE") || text.contains("ALERT_CERTIFICATE_UNKNOWN")
                || text.contains("ALERT_HANDSHAKE_FAILURE") || text.contains("ALERT_ACCESS_DENIED") || text.contains("CERTIFICATE_REQUIRED")
                || text.contains("ALERT_CERTIFICATE_EXPIRED") || text.contains("ALERT_CERTIFICATE_REVOKED") {
                return KMIPError(.tls, "the server refused this gateway's client certificate (\(code ?? text))")
            }
            if case .uncleanShutdown = error {
                return KMIPError(.tls, "the server closed the connection during TLS: it may not accept this gateway's client certificate")
            }
            return KMIPError(.tls, code ?? text)
        }
        if let error = error as? NIOSSLExtraError {
            return KMIPError(.tls, "the server's certificate does not name the server (\(error))")
        }
        if error is NIOExtrasErrors.ClosedBeforeReceivingResponse || (error as? ChannelError) == .ioOnClosedChannel
            || (error as? ChannelError) == .alreadyClosed || (error as? ChannelError) == .eof {
            return KMIPError(.closed, "the connection to \(endpoint) closed before the answer (a server that refused the client certificate closes it too)")
        }
        if let error = error as? KMIPError { return error }
        if let error = error as? TTLVError { return KMIPError(.malformed, "the answer is not TTLV: \(error)") }
        return KMIPError(.closed, "the connection to \(endpoint) failed: \(words(error))")
    }

    static func words(_ error: any Error) -> String { String(describing: error) }

    static func isIPAddress(_ text: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
    }
}

/// Cuts the byte stream into whole TTLV messages: the 8-byte header says the length; a length
/// over the limit, or a first item that is not a structure, closes the connection.
struct TTLVFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard buffer.readableBytes >= 8, let header = buffer.getBytes(at: buffer.readerIndex, length: 8) else { return .needMoreData }
        let total = try TTLV.messageLength(header: header)
        guard buffer.readableBytes >= total, let frame = buffer.readSlice(length: total) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}
