public import Foundation

/// Where the PostgreSQL database is and how to reach it, from the `database` setting:
/// `postgres://USER@HOST:PORT/DATABASE?sslmode=verify-full&sslrootcert=/path/ca.pem`.
///
/// The password is never part of the URL (a URL ends up in logs, process lists and
/// configuration dumps): it comes from a file (`passwordFile`) or an environment variable
/// (`CMK_DATABASE_PASSWORD` unless another is named), read once at start.
public struct PostgresSettings: Sendable, Equatable {
    public enum TLSMode: String, Sendable {
        /// No TLS: loopback or a private network the deployment trusts.
        case disable
        /// TLS, the server's certificate not checked (encryption against passive listeners only).
        case require
        /// TLS, the certificate checked against `sslrootcert` (or the system roots) and the host name.
        case verifyFull = "verify-full"
    }

    public var host: String
    public var port: Int
    public var user: String
    public var database: String
    public var tls: TLSMode
    public var rootCertificate: String?
    /// Connections this process opens at most (each runs one transaction at a time).
    public var maxConnections: Int

    /// `nil` when `url` is not a PostgreSQL URL (it is then a SQLite path).
    public static func isPostgresURL(_ url: String) -> Bool {
        url.hasPrefix("postgres://") || url.hasPrefix("postgresql://")
    }

    public init(url: String) throws(SQLError) {
        guard Self.isPostgresURL(url), let components = URLComponents(string: url) else {
            throw SQLError(.other, "the database URL is not a postgres:// URL")
        }
        guard components.password == nil else {
            throw SQLError(.other, "the database URL must not carry a password: give it in a file (databasePasswordFile) or the environment (CMK_DATABASE_PASSWORD)")
        }
        guard let host = components.host, !host.isEmpty else { throw SQLError(.other, "the database URL names no host") }
        guard let user = components.user, !user.isEmpty else { throw SQLError(.other, "the database URL names no user (postgres://USER@HOST/DB)") }
        let database = String(components.path.drop(while: { $0 == "/" }))
        guard !database.isEmpty, !database.contains("/") else { throw SQLError(.other, "the database URL names no database (postgres://USER@HOST/DB)") }
        self.host = host
        self.port = components.port ?? 5432
        self.user = user.removingPercentEncoding ?? user
        self.database = database
        var tls = TLSMode.verifyFull
        var root: String?
        var maxConnections = 10
        for item in components.queryItems ?? [] {
            switch item.name {
            case "sslmode":
                guard let mode = item.value.flatMap(TLSMode.init(rawValue:)) else {
                    throw SQLError(.other, "sslmode must be disable, require or verify-full")
                }
                tls = mode
            case "sslrootcert": root = item.value
            case "max_connections":
                guard let value = item.value.flatMap(Int.init), (1...200).contains(value) else {
                    throw SQLError(.other, "max_connections must be 1 to 200")
                }
                maxConnections = value
            default:
                throw SQLError(.other, "the database URL has an unknown parameter \(item.name) (known: sslmode, sslrootcert, max_connections)")
            }
        }
        self.tls = tls
        self.rootCertificate = root
        self.maxConnections = maxConnections
    }

    /// The URL again, without secrets (there are none in it): for logs and diagnostics.
    public var redacted: String { "postgres://\(user)@\(host):\(port)/\(database) (TLS \(tls.rawValue))" }
}

/// Where the password comes from.
public enum PasswordSource: Sendable, Equatable {
    case file(String)
    case environment(String)

    public static let defaultVariable = "CMK_DATABASE_PASSWORD"

    /// The password, its trailing newline removed. Nil when the variable is unset (a server
    /// configured for `trust` or certificate authentication needs none).
    public func read() throws(SQLError) -> String? {
        switch self {
        case .environment(let name):
            return ProcessInfo.processInfo.environment[name]
        case .file(let path):
            guard let data = FileManager.default.contents(atPath: path) else {
                throw SQLError(.other, "cannot read the database password file \(path)")
            }
            var text = String(decoding: data, as: UTF8.self)
            while text.hasSuffix("\n") || text.hasSuffix("\r") { text.removeLast() }
            return text
        }
    }
}
