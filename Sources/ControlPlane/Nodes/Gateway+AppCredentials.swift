import Audit
import AuditFormat
import CMKCore
package import Crypto
public import Foundation
public import Logging
import NIOConcurrencyHelpers
import NodeProtocol
import Orbital
public import Registry

/// Applications' credentials for nodes: signed here, checked by nodes offline, revoked with an
/// event nodes receive at once (Decisions D88).
extension Gateway {
    /// Loads the app credential signing key, making it at first start (mode 0600).
    package static func loadAppCredentialKey(_ path: String, logger: Logger) throws -> Curve25519.Signing.PrivateKey {
        if !FileManager.default.fileExists(atPath: path) {
            _ = try Ed25519Keys.generate(path: path)
            logger.notice("made a new app credential signing key", metadata: ["path": "\(path)"])
        }
        let text: String
        do { text = try Ed25519Keys.readPrivateKeyFile(path, what: "the app credential signing key") } catch let error as KeyFileError {
            throw ConfigurationError(error.reason)
        }
        return try Ed25519Keys.signingKey(pem: text)
    }

    public struct IssuedCredential: Sendable {
        public var record: AppCredentialRecord
        /// Shown once.
        public var credential: String
    }

    /// A credential for `tenants`, valid for `ttl` (1 minute to 1 year).
    public func issueAppCredential(name: String, tenants: [String], ttl: TimeInterval, by issuer: String) async throws -> IssuedCredential {
        guard (60...(366 * 86_400)).contains(ttl) else { throw DomainError.invalidInput("a credential lives 60 s to 366 days") }
        let now = Date()
        let id = UUID().uuidString.lowercased()
        let record = try await registry.createAppCredential(id: id, name: name, tenants: tenants, createdBy: issuer,
                                                            expiresAt: now.addingTimeInterval(ttl), at: now)
        let credential = try AppCredential.make(.init(id: id, name: name, tenants: record.tenants,
                                                      issuedAt: record.createdAt.millisecondsSince1970,
                                                      expiresAt: record.expiresAt.millisecondsSince1970), key: appCredentialKey)
        return IssuedCredential(record: record, credential: credential)
    }

    /// Revokes a credential; every connected node hears of it at once (`credential.revoked`).
    public func revokeAppCredential(id: String) async throws -> AppCredentialRecord {
        let (record, event) = try await registry.revokeAppCredential(id: id)
        orbital.committed([event])
        return record
    }
}

extension Date {
    package var millisecondsSince1970: Int64 { Int64((timeIntervalSince1970 * 1000).rounded()) }
}

/// `cmk app-credential` on the gateway's host: the same credentials, issued and revoked beside
/// the server (registry and signing key only); each action reaches the audit log through the
/// server (D83), and a revocation reaches nodes within the host action service's 5 s.
public enum HostAppCredentials {
    package static func host() -> String {
        let user = ProcessInfo.processInfo.environment["SUDO_USER"] ?? ProcessInfo.processInfo.environment["USER"] ?? "uid \(getuid())"
        return "\(user)@\(ProcessInfo.processInfo.hostName)"
    }

    public static func issue(_ configuration: ServerConfiguration, name: String, tenants: [String], ttl: TimeInterval,
                             logger: Logger) async throws -> (record: AppCredentialRecord, credential: String) {
        guard (60...(366 * 86_400)).contains(ttl) else { throw ConfigurationError("a credential lives 60 s to 366 days") }
        let registry = try await configuration.openRegistry()
        let key = try Gateway.loadAppCredentialKey(configuration.appCredentialKeyPath, logger: logger)
        let now = Date(), id = UUID().uuidString.lowercased()
        let record = try await registry.createAppCredential(id: id, name: name, tenants: tenants, createdBy: "cli:" + host(),
                                                            expiresAt: now.addingTimeInterval(ttl), at: now)
        let credential = try AppCredential.make(.init(id: id, name: name, tenants: record.tenants, issuedAt: record.createdAt.millisecondsSince1970,
                                                      expiresAt: record.expiresAt.millisecondsSince1970), key: key)
        try await registry.queuePendingAudit(operation: "app_credential.issue", actor: host(), target: id,
                                             details: ["tenants": record.tenants.joined(separator: ","), "name": name])
        return (record, credential)
    }

    public static func revoke(_ configuration: ServerConfiguration, id: String) async throws -> AppCredentialRecord {
        let registry = try await configuration.openRegistry()
        let (record, _) = try await registry.revokeAppCredential(id: id)
        try await registry.queuePendingAudit(operation: "app_credential.revoke", actor: host(), target: id, details: [:])
        return record
    }
}
