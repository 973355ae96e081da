public import AWSKMS
public import AzureKeyVault
public import Foundation
public import GCPKMS
public import KMIP
public import KSI
public import Registry
public import Storage

/// `cmk serve`'s configuration: a JSON file (`--config`), then environment variables that
/// override single values (`CMK_*`, for containers). Documented in `Docs/Configuration.md`.
public struct ServerConfiguration: Codable, Sendable, Equatable {
    /// A keystore the gateway may link L1 keys from: a PKCS#11 token through an HSM profile
    /// (`profile`), a cloud KMS (`provider` and its section: `aws`, `gcp`, `azure`), or a KMIP
    /// server (`kmip`).
    public struct Keystore: Codable, Sendable, Equatable {
        public var id: String
        public var provider: Provider
        public var profile: String?
        public var aws: AWSKMSToken.Configuration?
        public var gcp: GCPKMSToken.Configuration?
        public var azure: AzureKeyVaultToken.Configuration?
        public var kmip: KMIPToken.Configuration?

        public init(id: String, profile: String) {
            self.id = id
            self.provider = .pkcs11
            self.profile = profile
        }

        public init(id: String, aws: AWSKMSToken.Configuration) {
            (self.id, provider, self.aws) = (id, .awsKMS, aws)
        }

        public init(id: String, gcp: GCPKMSToken.Configuration) {
            (self.id, provider, self.gcp) = (id, .gcpKMS, gcp)
        }

        public init(id: String, azure: AzureKeyVaultToken.Configuration) {
            (self.id, provider, self.azure) = (id, .azureKeyVault, azure)
        }

        public init(id: String, kmip: KMIPToken.Configuration) {
            (self.id, provider, self.kmip) = (id, .kmip, kmip)
        }

        package enum CodingKeys: String, CodingKey { case id, provider, profile, aws, gcp, azure, kmip }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            id = try c.decode(String.self, forKey: .id)
            let name = try c.decodeIfPresent(String.self, forKey: .provider) ?? Provider.pkcs11.rawValue
            guard let provider = Provider(rawValue: name) else {
                throw ConfigurationError("keystore \(id): provider \"\(name)\" is not one of \(Provider.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            self.provider = provider
            profile = try c.decodeIfPresent(String.self, forKey: .profile)
            aws = try c.decodeIfPresent(AWSKMSToken.Configuration.self, forKey: .aws)
            gcp = try c.decodeIfPresent(GCPKMSToken.Configuration.self, forKey: .gcp)
            azure = try c.decodeIfPresent(AzureKeyVaultToken.Configuration.self, forKey: .azure)
            kmip = try c.decodeIfPresent(KMIPToken.Configuration.self, forKey: .kmip)
            let sections: [(Provider, Bool)] = [(.pkcs11, profile != nil), (.awsKMS, aws != nil), (.gcpKMS, gcp != nil), (.azureKeyVault, azure != nil),
                                              (.kmip, kmip != nil)]
            let section = ["pkcs11": "profile", "aws-kms": "aws", "gcp-kms": "gcp", "azure-keyvault": "azure", "kmip": "kmip"]
            for (kind, present) in sections where present != (kind == provider) {
                throw ConfigurationError(present ? "keystore \(id) is \(provider.rawValue): remove \"\(section[kind.rawValue]!)\""
                                                 : "keystore \(id) is \(provider.rawValue): it needs \"\(section[kind.rawValue]!)\"")
            }
        }

        /// Opens the keystore's token: loads the PKCS#11 module, or checks the cloud settings
        /// and that the credentials can be read.
        public func open(pkcs11: PKCS11Keystore) async throws -> Gateway.ConfiguredKeystore {
            switch provider {
            case .pkcs11:
                let profile = try HSMProfile.load(from: self.profile!)
                return .init(id: id, profile: profile, token: try await pkcs11.token(profile: profile))
            case .awsKMS:
                let aws = self.aws!
                return .init(id: id, description: "region \(aws.region)", token: try AWSKMSToken(name: id, configuration: aws))
            case .gcpKMS:
                let gcp = self.gcp!
                return .init(id: id, description: "project \(gcp.project)", token: try GCPKMSToken(name: id, configuration: gcp))
            case .azureKeyVault:
                let azure = self.azure!
                return .init(id: id, description: azure.vault, token: try AzureKeyVaultToken(name: id, configuration: azure))
            case .kmip:
                let kmip = self.kmip!
                return .init(id: id, description: "KMIP \(kmip.host):\(kmip.port ?? 5696)", token: try KMIPToken(name: id, configuration: kmip))
            }
        }

        /// Relative file names resolve against the configuration file's directory.
        package func resolved(_ resolve: (String) -> String) -> Keystore {
            var copy = self
            copy.profile = profile.map(resolve)
            copy.aws?.accessKeyIDFile = aws?.accessKeyIDFile.map(resolve)
            copy.aws?.secretAccessKeyFile = aws?.secretAccessKeyFile.map(resolve)
            copy.aws?.sessionTokenFile = aws?.sessionTokenFile.map(resolve)
            copy.gcp?.serviceAccountKeyFile = gcp?.serviceAccountKeyFile.map(resolve)
            copy.azure?.clientSecretFile = azure?.clientSecretFile.map(resolve)
            if let kmip {
                copy.kmip?.caFile = resolve(kmip.caFile)
                copy.kmip?.clientCertificateFile = resolve(kmip.clientCertificateFile)
                copy.kmip?.clientKeyFile = resolve(kmip.clientKeyFile)
            }
            return copy
        }
    }

    /// The platform's own token, holding the IVK versions.
    public struct Platform: Codable, Sendable, Equatable {
        public var profile: String
        /// Label prefix of the IVK keys on the platform token (`openkcm-ivk-1`, ...).
        public var ivkLabelPrefix: String

        public init(profile: String, ivkLabelPrefix: String = "openkcm-ivk-") {
            self.profile = profile
            self.ivkLabelPrefix = ivkLabelPrefix
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            profile = try container.decode(String.self, forKey: .profile)
            ivkLabelPrefix = try container.decodeIfPresent(String.self, forKey: .ivkLabelPrefix) ?? "openkcm-ivk-"
        }
    }

    /// The audit log (Docs/AuditFormat.md).
    public struct AuditSettings: Codable, Sendable, Equatable {
        /// The audit store's SQLite file.
        public var database: String
        /// The Ed25519 checkpoint signing key (PKCS#8 PEM, mode 0600); made at first start if missing.
        public var signingKey: String
        /// The log's name in its checkpoints; a new log gets `openkcm.local/audit/<uuid>`.
        public var origin: String?
        /// A checkpoint at least every this many records…
        public var checkpointEvery: Int
        /// …and at least every this many seconds (when records were added).
        public var checkpointIntervalSeconds: Int
        /// A directory (customer-controlled, e.g. a mounted share) that receives a copy of every checkpoint.
        public var witnessDirectory: String?
        /// Sign with an Ed25519 key on an HSM token instead of `signingKey`.
        public var hsm: HSMKey?

        public struct HSMKey: Codable, Sendable, Equatable {
            /// The HSM profile that reaches the token.
            public var profile: String
            /// The key pair's label; made on the token at first start if missing.
            public var keyLabel: String

            public init(profile: String, keyLabel: String = "openkcm-audit-signing") {
                self.profile = profile
                self.keyLabel = keyLabel
            }

            public init(from decoder: any Decoder) throws {
                let c = try decoder.container(keyedBy: CodingKeys.self)
                profile = try c.decode(String.self, forKey: .profile)
                keyLabel = try c.decodeIfPresent(String.self, forKey: .keyLabel) ?? "openkcm-audit-signing"
            }
        }

        public init(database: String = "audit.sqlite", signingKey: String = "audit-signing.key", origin: String? = nil,
                    checkpointEvery: Int = 1000, checkpointIntervalSeconds: Int = 10, witnessDirectory: String? = nil,
                    hsm: HSMKey? = nil) {
            self.hsm = hsm
            self.database = database
            self.signingKey = signingKey
            self.origin = origin
            self.checkpointEvery = checkpointEvery
            self.checkpointIntervalSeconds = checkpointIntervalSeconds
            self.witnessDirectory = witnessDirectory
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let defaults = AuditSettings()
            database = try c.decodeIfPresent(String.self, forKey: .database) ?? defaults.database
            signingKey = try c.decodeIfPresent(String.self, forKey: .signingKey) ?? defaults.signingKey
            origin = try c.decodeIfPresent(String.self, forKey: .origin)
            checkpointEvery = try c.decodeIfPresent(Int.self, forKey: .checkpointEvery) ?? defaults.checkpointEvery
            checkpointIntervalSeconds = try c.decodeIfPresent(Int.self, forKey: .checkpointIntervalSeconds) ?? defaults.checkpointIntervalSeconds
            witnessDirectory = try c.decodeIfPresent(String.self, forKey: .witnessDirectory)
            hsm = try c.decodeIfPresent(HSMKey.self, forKey: .hsm)
        }
    }

    public var host: String
    public var port: Int
    /// The registry: the path of a SQLite file (the embedded default), or a PostgreSQL URL
    /// (`postgres://USER@HOST:PORT/DB?sslmode=verify-full&sslrootcert=CA.pem`) for several
    /// replicas on one database. The audit log then lives in the same database unless
    /// `audit.database` names another.
    public var database: String
    /// The PostgreSQL password's file (mode 0600); nil: the environment's `CMK_DATABASE_PASSWORD`
    /// (or none, for certificate or trust authentication). Never in the URL.
    public var databasePasswordFile: String?
    public var keystores: [Keystore]
    public var platform: Platform
    /// Seconds between scheduled re-probes of linked keys; 0 turns the schedule off.
    public var probeIntervalSeconds: Int
    public var logLevel: String
    public var audit: AuditSettings
    /// Seconds a node may hold an unsealed L2 before it must renew.
    public var leaseSeconds: Int
    /// Seconds between heartbeats on each node's event stream. A node ends a stream silent for
    /// 45 s, and the gateway sees a vanished node at the second write after it went, so this
    /// also bounds how long a dead node still shows as connected (1–30).
    public var streamHeartbeatSeconds: Int = 15
    /// Administrators' sessions: expiry, bcrypt cost, lockout.
    public var sessions: SessionSettings = SessionSettings()
    /// Four-eyes approvals, the crypto-shred's waiting period, rotations.
    public var lifecycle: LifecycleSettings = LifecycleSettings()
    /// The Ed25519 key (PKCS#8 PEM, mode 0600) that signs applications' credentials for nodes;
    /// made at first start. Nil: `app-credential-signing.key` beside the registry file.
    public var appCredentialSigningKey: String?
    /// Seconds a connection may stay idle, or take to send a request's head, before it is closed
    /// (5–600). Responses being written, event streams among them, are not cut.
    public var idleTimeoutSeconds: Int = 30
    /// HTTPS for the listener (portal, Management API, node API); nil: plain HTTP, for loopback.
    public var tls: TLSSettings?
    /// The gRPC Management API's port, on `host`, with the same TLS as HTTP; nil: no gRPC
    /// listener.
    public var grpcPort: Int?

    public init(host: String = "127.0.0.1", port: Int = 8080, database: String = "cmk.sqlite", keystores: [Keystore] = [],
                platform: Platform, probeIntervalSeconds: Int = 60,
                logLevel: String = "info", audit: AuditSettings = AuditSettings(), leaseSeconds: Int = 30) {
        self.audit = audit
        self.leaseSeconds = leaseSeconds
        self.host = host
        self.port = port
        self.database = database
        self.keystores = keystores
        self.platform = platform
        self.probeIntervalSeconds = probeIntervalSeconds
        self.logLevel = logLevel
    }

    package enum CodingKeys: String, CodingKey {
        case host, port, database, keystores, platform, probeIntervalSeconds, logLevel, audit, leaseSeconds, sessions, streamHeartbeatSeconds
        case lifecycle, idleTimeoutSeconds, appCredentialSigningKey, tls, databasePasswordFile, grpcPort
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        host = try container.decodeIfPresent(String.self, forKey: .host) ?? "127.0.0.1"
        port = try container.decodeIfPresent(Int.self, forKey: .port) ?? 8080
        database = try container.decodeIfPresent(String.self, forKey: .database) ?? "cmk.sqlite"
        keystores = try container.decodeIfPresent([Keystore].self, forKey: .keystores) ?? []
        platform = try container.decode(Platform.self, forKey: .platform)
        probeIntervalSeconds = try container.decodeIfPresent(Int.self, forKey: .probeIntervalSeconds) ?? 60
        logLevel = try container.decodeIfPresent(String.self, forKey: .logLevel) ?? "info"
        audit = try container.decodeIfPresent(AuditSettings.self, forKey: .audit) ?? AuditSettings()
        leaseSeconds = try container.decodeIfPresent(Int.self, forKey: .leaseSeconds) ?? 30
        sessions = try container.decodeIfPresent(SessionSettings.self, forKey: .sessions) ?? SessionSettings()
        streamHeartbeatSeconds = try container.decodeIfPresent(Int.self, forKey: .streamHeartbeatSeconds) ?? 15
        lifecycle = try container.decodeIfPresent(LifecycleSettings.self, forKey: .lifecycle) ?? LifecycleSettings()
        idleTimeoutSeconds = try container.decodeIfPresent(Int.self, forKey: .idleTimeoutSeconds) ?? 30
        appCredentialSigningKey = try container.decodeIfPresent(String.self, forKey: .appCredentialSigningKey)
        tls = try container.decodeIfPresent(TLSSettings.self, forKey: .tls)
        databasePasswordFile = try container.decodeIfPresent(String.self, forKey: .databasePasswordFile)
        grpcPort = try container.decodeIfPresent(Int.self, forKey: .grpcPort)
    }

    /// Whether the registry is on PostgreSQL.
    public var usesPostgres: Bool { PostgresSettings.isPostgresURL(database) }

    /// Where the PostgreSQL password comes from.
    public var databasePassword: PasswordSource {
        databasePasswordFile.map(PasswordSource.file) ?? .environment(PasswordSource.defaultVariable)
    }

    /// The registry this configuration names, opened (and migrated).
    package func openRegistry(blockingAllowed: @escaping @Sendable () -> Bool = { false }) async throws -> Registry {
        try await Registry.open(database: database, password: databasePassword, blockingAllowed: blockingAllowed)
    }

    /// Where the app credential signing key is. With PostgreSQL, every replica must be given
    /// the same key (`appCredentialSigningKey`): nodes verify events with it.
    public var appCredentialKeyPath: String {
        appCredentialSigningKey ?? URL(fileURLWithPath: usesPostgres ? "." : database).deletingLastPathComponent()
            .appendingPathComponent("app-credential-signing.key").path
    }

    package static let allowedKeys: Set<String> = ["host", "port", "database", "keystores", "platform",
                                           "probeIntervalSeconds", "logLevel", "audit", "leaseSeconds", "sessions",
                                           "streamHeartbeatSeconds", "lifecycle", "idleTimeoutSeconds",
                                           "appCredentialSigningKey", "tls", "databasePasswordFile", "grpcPort"]

    /// Reads `path`, applies `CMK_*` overrides from `environment`, validates.
    public static func load(path: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> ServerConfiguration {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError("cannot read configuration file \(path)")
        }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ConfigurationError("\(path) is not a JSON object")
        }
        if object["bootstrapTokenFile"] != nil {
            throw ConfigurationError("\(path): bootstrapTokenFile is gone; administrators log in with password and TOTP (cmk admin create) and scripts use automation tokens (cmk admin token)")
        }
        let unknown = Set(object.keys).subtracting(allowedKeys)
        guard unknown.isEmpty else {
            throw ConfigurationError("\(path) has unknown keys: \(unknown.sorted().joined(separator: ", "))")
        }
        if let lifecycle = object["lifecycle"] as? [String: Any] {
            let unknownLifecycle = Set(lifecycle.keys).subtracting(LifecycleSettings.allowedKeys)
            guard unknownLifecycle.isEmpty else {
                throw ConfigurationError("\(path) has unknown keys in \"lifecycle\": \(unknownLifecycle.sorted().joined(separator: ", "))")
            }
            if let approvals = lifecycle["approvals"] as? [String: Any] {
                let unknownApprovals = Set(approvals.keys).subtracting(LifecycleSettings.Approvals.allowedKeys)
                guard unknownApprovals.isEmpty else {
                    throw ConfigurationError("\(path) has unknown keys in \"lifecycle.approvals\": \(unknownApprovals.sorted().joined(separator: ", "))")
                }
            }
        }
        if let tls = object["tls"] as? [String: Any] {
            let unknownTLS = Set(tls.keys).subtracting(TLSSettings.allowedKeys)
            guard unknownTLS.isEmpty else {
                throw ConfigurationError("\(path) has unknown keys in \"tls\": \(unknownTLS.sorted().joined(separator: ", "))")
            }
        }
        if let audit = object["audit"] as? [String: Any] {
            let allowed: Set<String> = ["database", "signingKey", "origin", "checkpointEvery", "checkpointIntervalSeconds", "witnessDirectory", "hsm"]
            let unknownAudit = Set(audit.keys).subtracting(allowed)
            guard unknownAudit.isEmpty else {
                throw ConfigurationError("\(path) has unknown keys in \"audit\": \(unknownAudit.sorted().joined(separator: ", "))")
            }
        }
        var configuration: ServerConfiguration
        do {
            configuration = try JSONDecoder().decode(ServerConfiguration.self, from: data)
        } catch let DecodingError.keyNotFound(key, _) {
            throw ConfigurationError("\(path) lacks the required key \"\(key.stringValue)\"")
        } catch {
            throw ConfigurationError("\(path) is not a valid configuration")
        }
        try configuration.applyEnvironment(environment)
        // Relative paths are relative to the configuration file, so a config directory can move.
        let base = URL(fileURLWithPath: path).deletingLastPathComponent()
        func resolve(_ file: String) -> String { file.hasPrefix("/") ? file : base.appendingPathComponent(file).standardized.path }
        if !configuration.usesPostgres { configuration.database = resolve(configuration.database) }
        // On PostgreSQL the audit log shares the registry's database unless told otherwise.
        if configuration.usesPostgres, (object["audit"] as? [String: Any])?["database"] == nil {
            configuration.audit.database = configuration.database
        }
        configuration.databasePasswordFile = configuration.databasePasswordFile.map(resolve)
        configuration.platform.profile = resolve(configuration.platform.profile)
        configuration.keystores = configuration.keystores.map { $0.resolved(resolve) }
        if !PostgresSettings.isPostgresURL(configuration.audit.database) { configuration.audit.database = resolve(configuration.audit.database) }
        configuration.appCredentialSigningKey = configuration.appCredentialSigningKey.map(resolve)
        configuration.audit.signingKey = resolve(configuration.audit.signingKey)
        configuration.audit.witnessDirectory = configuration.audit.witnessDirectory.map(resolve)
        configuration.audit.hsm = configuration.audit.hsm.map { .init(profile: resolve($0.profile), keyLabel: $0.keyLabel) }
        if var tls = configuration.tls {
            (tls.certificate, tls.privateKey, tls.nodeClientCA) = (resolve(tls.certificate), resolve(tls.privateKey), tls.nodeClientCA.map(resolve))
            configuration.tls = tls
        }
        if let jwks = configuration.sessions.identityAssertion?.jwksFile { configuration.sessions.identityAssertion?.jwksFile = resolve(jwks) }
        try configuration.validate()
        return configuration
    }

    /// `CMK_HOST`, `CMK_PORT`, `CMK_GRPC_PORT`, `CMK_DATABASE`, `CMK_PROBE_INTERVAL_SECONDS`, `CMK_LOG_LEVEL`,
    /// `CMK_STREAM_HEARTBEAT_SECONDS`.
    public mutating func applyEnvironment(_ environment: [String: String]) throws {
        func integer(_ name: String) throws -> Int? {
            guard let text = environment[name] else { return nil }
            guard let value = Int(text) else { throw ConfigurationError("\(name) must be an integer") }
            return value
        }
        if let value = environment["CMK_HOST"] { host = value }
        if let value = try integer("CMK_PORT") { port = value }
        if let value = try integer("CMK_GRPC_PORT") { grpcPort = value }
        if let value = environment["CMK_DATABASE"] { database = value }
        if let value = try integer("CMK_PROBE_INTERVAL_SECONDS") { probeIntervalSeconds = value }
        if let value = environment["CMK_LOG_LEVEL"] { logLevel = value }
        if let value = try integer("CMK_STREAM_HEARTBEAT_SECONDS") { streamHeartbeatSeconds = value }
    }

    public func validate() throws {
        guard (0...65_535).contains(port) else { throw ConfigurationError("port must be between 0 and 65535") }
        if let grpcPort {
            guard (0...65_535).contains(grpcPort) else { throw ConfigurationError("grpcPort must be between 0 and 65535") }
            guard grpcPort != port || port == 0 else { throw ConfigurationError("grpcPort must differ from port: gRPC has a listener of its own") }
        }
        for url in [database, audit.database] where PostgresSettings.isPostgresURL(url) {
            do { _ = try PostgresSettings(url: url) } catch { throw ConfigurationError("database: \(error.message)") }
        }
        guard probeIntervalSeconds >= 0 else { throw ConfigurationError("probeIntervalSeconds must be 0 (off) or positive") }
        var seen = Set<String>()
        for keystore in keystores {
            guard keystore.id.range(of: #"^[a-z0-9][a-z0-9-]{0,62}$"#, options: .regularExpression) != nil else {
                throw ConfigurationError("keystore id \"\(keystore.id)\" must be 1-63 characters of a-z, 0-9 and -")
            }
            guard seen.insert(keystore.id).inserted else { throw ConfigurationError("keystore id \(keystore.id) appears twice") }
        }
        guard (5...3600).contains(leaseSeconds) else { throw ConfigurationError("leaseSeconds must be between 5 and 3600") }
        guard (1...30).contains(streamHeartbeatSeconds) else {
            throw ConfigurationError("streamHeartbeatSeconds must be between 1 and 30 (nodes end a stream silent for 45 s)")
        }
        guard (1...1440).contains(sessions.idleMinutes), (1...168).contains(sessions.absoluteHours), (4...31).contains(sessions.bcryptCost),
              (1...100).contains(sessions.lockoutThreshold), (1...1440).contains(sessions.lockoutMinutes) else {
            throw ConfigurationError("sessions: idleMinutes 1-1440, absoluteHours 1-168, bcryptCost 4-31, lockoutThreshold 1-100, lockoutMinutes 1-1440")
        }
        try lifecycle.validate()
        guard (5...600).contains(idleTimeoutSeconds) else { throw ConfigurationError("idleTimeoutSeconds must be between 5 and 600") }
        if let tls, !(1...86_400).contains(tls.reloadIntervalSeconds) {
            throw ConfigurationError("tls.reloadIntervalSeconds must be between 1 and 86400")
        }
        guard audit.checkpointEvery > 0, audit.checkpointIntervalSeconds > 0 else {
            throw ConfigurationError("audit.checkpointEvery and audit.checkpointIntervalSeconds must be positive")
        }
        guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(logLevel) else {
            throw ConfigurationError("logLevel must be one of trace, debug, info, notice, warning, error, critical")
        }
    }
}

/// `tls` in the configuration (Docs/Configuration.md §TLS).
public struct TLSSettings: Codable, Sendable, Equatable {
    /// PEM certificate chain, the server's certificate first.
    public var certificate: String
    /// PEM private key (unencrypted; no access for other users).
    public var privateKey: String
    /// PEM bundle of the CA(s) that issue nodes' client certificates. Set: every `/node/v1` call
    /// must arrive on a connection whose client certificate this CA issued (mTLS); browsers and
    /// API clients are not asked for one. Read at start.
    public var nodeClientCA: String?
    /// How often the certificate and key files are read again (SIGHUP: at once).
    public var reloadIntervalSeconds: Int = 30

    public init(certificate: String, privateKey: String, nodeClientCA: String? = nil, reloadIntervalSeconds: Int = 30) {
        (self.certificate, self.privateKey, self.nodeClientCA, self.reloadIntervalSeconds) = (certificate, privateKey, nodeClientCA, reloadIntervalSeconds)
    }

    package enum CodingKeys: String, CodingKey { case certificate, privateKey, nodeClientCA, reloadIntervalSeconds }
    package static let allowedKeys: Set<String> = ["certificate", "privateKey", "nodeClientCA", "reloadIntervalSeconds"]

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        certificate = try c.decode(String.self, forKey: .certificate)
        privateKey = try c.decode(String.self, forKey: .privateKey)
        nodeClientCA = try c.decodeIfPresent(String.self, forKey: .nodeClientCA)
        reloadIntervalSeconds = try c.decodeIfPresent(Int.self, forKey: .reloadIntervalSeconds) ?? 30
    }
}

/// `lifecycle` in the configuration (Docs/Configuration.md, Docs/Authorization.md).
public struct LifecycleSettings: Codable, Sendable, Equatable {
    /// How many people an operation takes, the requester included (M of M-of-N; N is everyone
    /// with the role). Revoking is always one person: the kill-switch is break-glass.
    public struct Approvals: Codable, Sendable, Equatable {
        public var revoke: Int = 1
        public var restore: Int = 2
        public var shred: Int = 2
        public var nodeEnrolment: Int = 1

        package static let allowedKeys: Set<String> = ["revoke", "restore", "shred", "nodeEnrolment"]

        public init() {}

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            revoke = try c.decodeIfPresent(Int.self, forKey: .revoke) ?? 1
            restore = try c.decodeIfPresent(Int.self, forKey: .restore) ?? 2
            shred = try c.decodeIfPresent(Int.self, forKey: .shred) ?? 2
            nodeEnrolment = try c.decodeIfPresent(Int.self, forKey: .nodeEnrolment) ?? 1
        }

        public func people(for operation: ApprovalOperation) -> Int {
            switch operation {
            case .restore: restore
            case .shred: shred
            case .nodeEnrolment: nodeEnrolment
            }
        }
    }

    public var approvals = Approvals()
    /// An approval request not carried out within this many minutes expires (5 min to 7 days).
    public var approvalExpiryMinutes: Int = 1440
    /// The shortest time between scheduling a crypto-shred and running it, during which it can be
    /// cancelled (1 to 30 days; a request may ask for longer).
    public var shredWaitingPeriodHours: Int = 168
    /// How often due shreds are looked for.
    public var shredCheckSeconds: Int = 60

    package static let allowedKeys: Set<String> = ["approvals", "approvalExpiryMinutes", "shredWaitingPeriodHours", "shredCheckSeconds"]

    public init() {}

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        approvals = try c.decodeIfPresent(Approvals.self, forKey: .approvals) ?? Approvals()
        approvalExpiryMinutes = try c.decodeIfPresent(Int.self, forKey: .approvalExpiryMinutes) ?? 1440
        shredWaitingPeriodHours = try c.decodeIfPresent(Int.self, forKey: .shredWaitingPeriodHours) ?? 168
        shredCheckSeconds = try c.decodeIfPresent(Int.self, forKey: .shredCheckSeconds) ?? 60
    }

    package func validate() throws {
        guard approvals.revoke == 1 else {
            throw ConfigurationError("lifecycle.approvals.revoke must be 1: the kill-switch is one person's break-glass action, never held up for a second")
        }
        for (name, people) in [("restore", approvals.restore), ("shred", approvals.shred), ("nodeEnrolment", approvals.nodeEnrolment)] {
            guard (1...9).contains(people) else { throw ConfigurationError("lifecycle.approvals.\(name) is 1-9 people (the requester included)") }
        }
        guard (5...10_080).contains(approvalExpiryMinutes) else { throw ConfigurationError("lifecycle.approvalExpiryMinutes must be between 5 and 10080") }
        guard (24...720).contains(shredWaitingPeriodHours) else {
            throw ConfigurationError("lifecycle.shredWaitingPeriodHours must be between 24 (one day) and 720 (30 days)")
        }
        guard (1...3600).contains(shredCheckSeconds) else { throw ConfigurationError("lifecycle.shredCheckSeconds must be between 1 and 3600") }
    }

    /// The waiting period in force. Debug builds (tests) may shorten it with
    /// `CMK_TEST_SHRED_WAITING_SECONDS`; release builds cannot (D75).
    public var shredWaitingPeriod: TimeInterval {
        #if DEBUG
        if let text = ProcessInfo.processInfo.environment["CMK_TEST_SHRED_WAITING_SECONDS"], let seconds = TimeInterval(text), seconds > 0 {
            return seconds
        }
        #endif
        return TimeInterval(shredWaitingPeriodHours) * 3600
    }
}

public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
