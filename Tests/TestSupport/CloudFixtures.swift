public import AWSKMS
public import AzureKeyVault
public import CMKCore
import Foundation
public import GCPKMS

/// Local stand-ins: drongo behind the GCP front (tokens, CRC32C checks), and the Key Vault fake.
public enum CloudFixtures {
    public struct GCP: Decodable, Sendable { public var serviceAccountKeyFile, tokenEndpoint, project, key, signingKey, missingKey: String }
    public struct Azure: Decodable, Sendable { public var vault, tenantID, clientID, clientSecretFile, authority, key, firstVersion, disabledKey, signOnlyKey, hsmKey, expiringKey, missingKey: String }

    public static let directory: String = {
        let path = NSTemporaryDirectory() + "openkcm-cloud-\(getpid())"
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }()

    static func script(_ name: String) -> String {
        SoftHSMFixture.repositoryRoot + "/Tests/CloudKMSTests/Fixtures/\(name).py"
    }

    static func started<T: Decodable>(_ script: String, _ arguments: [String], out: String) -> (LocalServer, T) {
        let server = try! LocalServer(python: [Self.script(script), "{port}"] + arguments + [out], log: out + ".log")
        return (server, try! JSONDecoder().decode(T.self, from: Data(contentsOf: URL(fileURLWithPath: out))))
    }

    public static let drongo = try! LocalServer(python: ["-c", "import sys; from drongo.cli import main; sys.argv = ['drongo'] + sys.argv[1:]; sys.exit(main())",
                                                         "server", "--host", "127.0.0.1", "-p", "{port}"], log: directory + "/drongo.log")
    public static let gcp: (front: LocalServer, names: GCP) = started("gcp_front", [drongo.base], out: directory + "/gcp.json")
    public static let azure: (vault: LocalServer, names: Azure) = started("azure_keyvault_fake", [], out: directory + "/azure.json")

    public static func control(_ server: LocalServer, _ json: String) throws {
        let result = try SoftHSMFixture.run("/usr/bin/env", ["curl", "-sf", "-d", json, "\(server.base)/_control"])
        guard result.status == 0 else { throw SoftHSMFixture.FixtureError(message: "control: \(result.error)") }
    }

    public static func gcpToken(keyFile: String? = nil, timeout: Int? = nil, maxAttempts: Int? = nil,
                                clock: any WallClock = SystemWallClock()) throws -> GCPKMSToken {
        try GCPKMSToken(name: "gcp-test", configuration: gcpConfiguration(keyFile: keyFile, timeout: timeout, maxAttempts: maxAttempts), clock: clock)
    }

    public static func azureToken(secretFile: String? = nil, managedHSM: Bool? = nil, clock: any WallClock = SystemWallClock()) throws -> AzureKeyVaultToken {
        try AzureKeyVaultToken(name: "azure-test", configuration: azureConfiguration(secretFile: secretFile, managedHSM: managedHSM), clock: clock)
    }

    // MARK: AWS: moto

    public struct Moto: Decodable, Sendable {
        public var accessKeyID, secretAccessKey, limitedAccessKeyID, limitedSecretAccessKey: String
        public var keyARN, keyID, aliasName, aliasARN, disabledKeyARN, signingKeyARN: String
        /// Keys made for the listing tests, every other one with an alias `alias/listing-NN`.
        public var listingKeys: Int
    }

    /// A front for moto that pages ListKeys and ListAliases (moto answers them in one page);
    /// requests reach moto unchanged, signatures and policies checked there.
    public static let motoPager = try! LocalServer(python: [script("moto_pager"), "{port}", moto.server.base], log: directory + "/moto-pager.log")

    /// One moto for the test process, with `INITIAL_NO_AUTH_ACTION_COUNT=3`.
    public static let moto: (server: LocalServer, keys: Moto, directory: String) = {
        let directory = Self.directory
        let server = try! LocalServer(python: ["-m", "moto.server", "-H", "127.0.0.1", "-p", "{port}"],
                                      environment: ["INITIAL_NO_AUTH_ACTION_COUNT": "3"], log: directory + "/moto.log")
        let script = Self.script("moto_setup")
        let setup = try! SoftHSMFixture.run("/usr/bin/env", ["python3", script, server.base, "eu-central-1"])
        precondition(setup.status == 0, "moto setup: \(setup.error)")
        let keys = try! JSONDecoder().decode(Moto.self, from: Data(setup.output.utf8))
        for (file, value) in [("id", keys.accessKeyID), ("secret", keys.secretAccessKey), ("limited-id", keys.limitedAccessKeyID),
                              ("limited-secret", keys.limitedSecretAccessKey), ("wrong-secret", "not-the-secret")] {
            _ = FileManager.default.createFile(atPath: "\(directory)/\(file)", contents: Data((value + "\n").utf8), attributes: [.posixPermissions: 0o600])
        }
        return (server, keys, directory)
    }()

    public static func awsConfiguration(id: String = "id", secret: String = "secret", endpoint: String? = nil, timeout: Int? = nil) -> AWSKMSToken.Configuration {
        .init(region: "eu-central-1", endpoint: endpoint ?? moto.server.base, accessKeyIDFile: "\(moto.directory)/\(id)",
              secretAccessKeyFile: "\(moto.directory)/\(secret)", timeoutMilliseconds: timeout)
    }

    public static func gcpConfiguration(keyFile: String? = nil, timeout: Int? = nil, maxAttempts: Int? = nil) -> GCPKMSToken.Configuration {
        .init(project: gcp.names.project, endpoint: gcp.front.base, serviceAccountKeyFile: keyFile ?? gcp.names.serviceAccountKeyFile,
              timeoutMilliseconds: timeout, maxAttempts: maxAttempts)
    }

    public static func azureConfiguration(secretFile: String? = nil, managedHSM: Bool? = nil) -> AzureKeyVaultToken.Configuration {
        let names = azure.names
        return .init(vault: names.vault, tenantID: names.tenantID, clientID: names.clientID, clientSecretFile: secretFile ?? names.clientSecretFile,
                     authority: names.authority, managedHSM: managedHSM)
    }
}
