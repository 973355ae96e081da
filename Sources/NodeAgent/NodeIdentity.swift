import CMKCore
public import Crypto
public import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A node's identity and its small persistent state, in its data directory:
///
/// - `signing.key`: Ed25519 (PKCS#8 PEM, mode 0600), signs every request and every purge
///   acknowledgement;
/// - `hpke.key`: X25519 (PKCS#8 PEM, mode 0600), what unsealed keys are sealed to;
/// - `node.json`: the enrolled id, region and gateway, and the event sequence at enrolment;
/// - `cursor`: the last event handled (the stream resumes after it). Written without a sync:
///   after a power cut it may be behind, and the node then sees some events again, which
///   is harmless (an acknowledgement the gateway has is answered `already_acknowledged`).
///
/// Made on first start; never holds a tenant key (those live in memory only).
public struct NodeIdentity: Sendable {
    public struct State: Codable, Sendable, Equatable {
        public var id: String?
        public var region: String?
        public var gateway: String?
        public var enrolledAt: Date?
        /// The sequence number of the last event handled: the stream resumes after it.
        /// In `node.json`, the newest event at enrolment; the `cursor` file moves it on.
        public var lastEvent: Int64 = 0
        /// The gateway's public signing key (base64), pinned at enrolment (or at the first
        /// connection of a node enrolled before keys were pinned).
        public var gatewayKey: String?
    }

    public let directory: String
    public let signingKey: Curve25519.Signing.PrivateKey
    public let hpkeKey: Curve25519.KeyAgreement.PrivateKey
    public private(set) var state: State

    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// Loads the identity in `directory`, making the directory (0700) and keys on first use.
    /// Refuses key files that others can read.
    public static func loadOrCreate(directory: String) throws -> NodeIdentity {
        var isDirectory: ObjCBool = false
        if !FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
            } catch {
                throw Failure(description: "cannot create the data directory \(directory): \(error.localizedDescription)")
            }
        } else if !isDirectory.boolValue {
            throw Failure(description: "\(directory) is not a directory")
        }
        let signingPath = "\(directory)/signing.key", hpkePath = "\(directory)/hpke.key"
        if !FileManager.default.fileExists(atPath: signingPath) { _ = try Ed25519Keys.generate(path: signingPath) }
        if !FileManager.default.fileExists(atPath: hpkePath) { _ = try Ed25519Keys.generateX25519(path: hpkePath) }
        let signingKey = try Ed25519Keys.signingKey(pem: try readPrivate(signingPath))
        let hpkeKey = try Ed25519Keys.x25519Key(pem: try readPrivate(hpkePath))
        var state = State()
        if let data = FileManager.default.contents(atPath: "\(directory)/node.json") {
            do {
                state = try JSONDecoder.node.decode(State.self, from: data)
            } catch {
                throw Failure(description: "\(directory)/node.json is not a node state file: \(error)")
            }
        }
        if let text = try? String(contentsOfFile: "\(directory)/cursor", encoding: .utf8),
           let cursor = Int64(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
            state.lastEvent = max(state.lastEvent, cursor)
        }
        return NodeIdentity(directory: directory, signingKey: signingKey, hpkeKey: hpkeKey, state: state)
    }

    // MARK: Re-keying

    /// New keys waiting to replace the current ones (`signing.key.new`, `hpke.key.new`): made
    /// before the gateway is asked, so that a crash after it accepted them loses nothing.
    public var pendingKeys: (signing: Curve25519.Signing.PrivateKey, hpke: Curve25519.KeyAgreement.PrivateKey?)? {
        let signingPath = "\(directory)/signing.key.new", hpkePath = "\(directory)/hpke.key.new"
        guard let signingPEM = try? Self.readPrivate(signingPath), let signing = try? Ed25519Keys.signingKey(pem: signingPEM) else { return nil }
        let hpke = (try? Self.readPrivate(hpkePath)).flatMap { try? Ed25519Keys.x25519Key(pem: $0) }
        return (signing, hpke)
    }

    /// Makes the new keys (replacing any earlier pending ones).
    public func preparePendingKeys() throws -> (signing: Curve25519.Signing.PrivateKey, hpke: Curve25519.KeyAgreement.PrivateKey) {
        discardPendingKeys()
        let signingPath = "\(directory)/signing.key.new", hpkePath = "\(directory)/hpke.key.new"
        _ = try Ed25519Keys.generate(path: signingPath)
        _ = try Ed25519Keys.generateX25519(path: hpkePath)
        return (try Ed25519Keys.signingKey(pem: try Self.readPrivate(signingPath)), try Ed25519Keys.x25519Key(pem: try Self.readPrivate(hpkePath)))
    }

    /// The gateway has the pending keys: they become the node's (HPKE first; a crash between the
    /// two renames leaves `signing.key.new`, which the next start adopts the same way).
    public func adoptPendingKeys() throws {
        for name in ["hpke.key", "signing.key"] where FileManager.default.fileExists(atPath: "\(directory)/\(name).new") {
            guard rename("\(directory)/\(name).new", "\(directory)/\(name)") == 0 else {
                throw Failure(description: "cannot install \(directory)/\(name): \(String(cString: strerror(errno)))")
            }
        }
    }

    public func discardPendingKeys() {
        for name in ["signing.key.new", "hpke.key.new"] { try? FileManager.default.removeItem(atPath: "\(directory)/\(name)") }
    }

    /// Records the last event handled (atomically replaced, not synced: see the type's notes).
    public func saveCursor(_ sequence: Int64) throws {
        let temporary = "\(directory)/.cursor.tmp"
        let bytes = Array(String(sequence).utf8)
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw Failure(description: "cannot write \(temporary): \(String(cString: strerror(errno)))") }
        let written = write(descriptor, bytes, bytes.count)
        close(descriptor)
        guard written == bytes.count, rename(temporary, "\(directory)/cursor") == 0 else {
            throw Failure(description: "cannot write \(directory)/cursor: \(String(cString: strerror(errno)))")
        }
    }

    private static func readPrivate(_ path: String) throws -> String {
        do { return try Ed25519Keys.readPrivateKeyFile(path, what: "the node key") } catch let error as KeyFileError {
            throw Failure(description: error.reason)
        }
    }

    /// Replaces the state, durably: written to a temporary file, synced, renamed over `node.json`.
    public mutating func update(_ change: (inout State) -> Void) throws {
        var next = state
        change(&next)
        let data = try JSONEncoder.node.encode(next)
        let path = "\(directory)/node.json", temporary = "\(directory)/.node.json.tmp"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw Failure(description: "cannot write \(temporary): \(String(cString: strerror(errno)))") }
        let written = data.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        let synced = fsync(descriptor)
        close(descriptor)
        guard written == data.count, synced == 0, rename(temporary, path) == 0 else {
            throw Failure(description: "cannot write \(path): \(String(cString: strerror(errno)))")
        }
        state = next
    }
}

extension JSONEncoder {
    static var node: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return encoder
    }
}

extension JSONDecoder {
    static let node: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            guard let millis = RFC3339.parseMilliseconds(text) else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not an RFC 3339 time: \(text)"))
            }
            return Date(timeIntervalSince1970: Double(millis) / 1000)
        }
        return decoder
    }()
}
