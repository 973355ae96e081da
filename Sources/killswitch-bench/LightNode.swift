import CMKCore
import Crypto
import Foundation
import NodeProtocol
#if canImport(Glibc)
import Glibc
#endif

/// A simulated node for large N: one thread, two blocking loopback connections (the event
/// stream and a keep-alive connection for acknowledgements), and the same protocol as a real
/// node — signed stream request, canonical acknowledgement statement signed with the node's
/// key — without the runtime's HTTP client, keyring and loops, so that 100 of them on this
/// machine cost the gateway's CPU as little as possible.
final class LightNode: @unchecked Sendable {
    let id: String
    let key: Curve25519.Signing.PrivateKey
    let port: UInt16
    let onAck: @Sendable (String, ContinuousClock.Instant) -> Void

    init(id: String, key: Curve25519.Signing.PrivateKey, port: UInt16, onAck: @escaping @Sendable (String, ContinuousClock.Instant) -> Void) {
        self.id = id
        self.key = key
        self.port = port
        self.onAck = onAck
    }

    struct Failure: Error, CustomStringConvertible { var description: String }

    static func connect(port: UInt16) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else { throw Failure(description: "connect: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        return fd
    }

    static func send(_ fd: Int32, _ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            guard sent > 0 else { throw Failure(description: "send: \(String(cString: strerror(errno)))") }
            offset += sent
        }
    }

    /// A buffered reader over a blocking socket.
    struct Reader {
        let fd: Int32
        var buffer: [UInt8] = []
        var start = 0

        mutating func fill() throws {
            if start > 0 { buffer.removeFirst(start); start = 0 }
            var chunk = [UInt8](repeating: 0, count: 16384)
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 16384, 0) }
            guard count > 0 else { throw Failure(description: "connection closed") }
            buffer.append(contentsOf: chunk[0..<count])
        }

        mutating func line() throws -> String {
            while true {
                if let newline = buffer[start...].firstIndex(of: 10) {
                    var end = newline
                    if end > start, buffer[end - 1] == 13 { end -= 1 }
                    let text = String(decoding: buffer[start..<end], as: UTF8.self)
                    start = newline + 1
                    return text
                }
                try fill()
            }
        }

        mutating func bytes(_ count: Int) throws -> ArraySlice<UInt8> {
            while buffer.count - start < count { try fill() }
            defer { start += count }
            return buffer[start..<(start + count)]
        }

        /// Status and headers (lower-cased names) of a response.
        mutating func head() throws -> (Int, [String: String]) {
            let status = Int(try line().split(separator: " ").dropFirst().first ?? "") ?? 0
            var headers: [String: String] = [:]
            while true {
                let text = try line()
                if text.isEmpty { break }
                if let colon = text.firstIndex(of: ":") {
                    headers[text[..<colon].lowercased()] = text[text.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                }
            }
            return (status, headers)
        }
    }

    /// Runs until the stream ends: every revocation event is acknowledged.
    func run(after: Int64) throws {
        let stream = try Self.connect(port: port), acks = try Self.connect(port: port)
        defer { close(stream); close(acks) }
        let path = "/node/v1/stream?after=\(after)"
        var request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        for (name, value) in try NodeProtocol.signedHeaders(node: id, key: key, method: "GET", path: path, body: Data()) {
            request += "\(name): \(value)\r\n"
        }
        try Self.send(stream, Array((request + "\r\n").utf8))
        var events = Reader(fd: stream), replies = Reader(fd: acks)
        let (status, _) = try events.head()
        guard status == 200 else { throw Failure(description: "stream: HTTP \(status)") }
        var pending: [UInt8] = []
        while true {
            // Chunked transfer encoding: a hex size line, the bytes, a CRLF.
            guard let size = Int(try events.line(), radix: 16), size > 0 else { return }
            pending.append(contentsOf: try events.bytes(size))
            _ = try events.line()
            while let end = Self.messageEnd(pending) {
                let message = String(decoding: pending[..<end], as: UTF8.self)
                pending.removeFirst(end + 2)
                guard let data = message.split(separator: "\n").first(where: { $0.hasPrefix("data: ") })?.dropFirst(6),
                      let event = try? JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any],
                      event["type"] as? String == EventType.l1Revoked.rawValue,
                      let eventID = event["id"] as? String, let link = event["link"] as? String else { continue }
                let statement = try NodeProtocol.ackStatement(event: eventID, link: link, node: id, keysDropped: 1, time: Date())
                let signature = try key.signature(for: statement)
                let body = Array(try JSONSerialization.data(withJSONObject: [
                    "statement": String(decoding: statement, as: UTF8.self), "signature": signature.base64EncodedString(),
                ]))
                let head = "POST /node/v1/acks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n"
                try Self.send(acks, Array(head.utf8) + body)
                let (ackStatus, headers) = try replies.head()
                _ = try replies.bytes(Int(headers["content-length"] ?? "0") ?? 0)
                guard ackStatus == 201 else { throw Failure(description: "ack: HTTP \(ackStatus)") }
                onAck(eventID, .now)
            }
        }
    }

    /// The end of the first complete message (a blank line), if any.
    static func messageEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 2 else { return nil }
        for index in 0..<(bytes.count - 1) where bytes[index] == 10 && bytes[index + 1] == 10 { return index }
        return nil
    }
}
