public import CMKCore
import Foundation
public import KMIP
public import KSI

/// PyKMIP's server on 127.0.0.1, started once per test process with a CA the test makes: an
/// ECDSA P-256 server certificate (PyKMIP's TLS 1.2 suites share no cipher with swift-nio-ssl
/// for an RSA one), mutual TLS, a private SQLite database, the default operation policy
/// (objects belong to the client identity, the certificate's common name, that made them).
/// Stopped with its helper processes (its process group) when the test process ends (LocalServer).
public enum KMIPFixture {
    public static let directory: String = {
        let path = NSTemporaryDirectory() + "openkcm-kmip-\(getpid())"
        try? FileManager.default.removeItem(atPath: path)
        try! FileManager.default.createDirectory(atPath: path + "/policies", withIntermediateDirectories: true)
        return path
    }()

    /// The CA the server trusts for clients and that issued the server's certificate.
    public static let ca = try! TestCA(directory: directory, name: "kmip-ca")
    public static let serverCertificate = try! ca.issue("kmip-server", commonName: "127.0.0.1", dnsNames: ["localhost"])
    /// The gateway's identity at the server.
    public static let client = try! ca.issue("kmip-client", commonName: "openkcm-gateway")
    /// Another client of the same CA: the server accepts it, but it owns none of the gateway's keys.
    public static let otherClient = try! ca.issue("kmip-other", commonName: "someone-else")
    /// A client certificate from a CA the server does not trust.
    public static let rogueCA = try! TestCA(directory: directory + "/rogue", name: "rogue-ca")
    public static let rogueClient = try! rogueCA.issue("rogue-client", commonName: "openkcm-gateway")

    public static let server: LocalServer = {
        _ = (serverCertificate, client)
        let config = """
            [server]
            hostname=127.0.0.1
            port=@PORT@
            certificate_path=\(serverCertificate.certificate)
            key_path=\(serverCertificate.key)
            ca_path=\(ca.certificatePath)
            auth_suite=TLS1.2
            policy_path=\(directory)/policies
            enable_tls_client_auth=True
            logging_level=INFO
            database_path=\(directory)/pykmip.sqlite
            """
        try! Data(config.utf8).write(to: URL(fileURLWithPath: directory + "/server.conf.in"))
        // The module's main, not the pykmip-server wrapper (a pyenv shim forks): the process
        // started is the one stopped. PyKMIP insists on a port in its file, so the file is
        // written for the port chosen (which may be chosen again if another process takes it).
        let script = """
            import os, sys
            os.setpgrp()  # PyKMIP forks helpers; the fixture stops the whole group
            from kmip.services.server.server import main
            port, template, log = sys.argv[1:4]
            path = template[:-3] + "-" + port
            open(path, "w").write(open(template).read().replace("@PORT@", port))
            sys.argv = ["pykmip-server", "-f", path, "-l", log]
            main()
            """
        return try! LocalServer(python: ["-c", script, "{port}", directory + "/server.conf.in", directory + "/server.log"],
                                log: directory + "/server.out", processGroup: true)
    }()

    public static func configuration(port: Int? = nil, certificate: TestCA.Issued? = nil, caFile: String? = nil, version: String? = nil,
                                     requestTimeout: Int? = nil) -> KMIPToken.Configuration {
        let identity = certificate ?? client
        return KMIPToken.Configuration(host: "127.0.0.1", port: port ?? server.port, caFile: caFile ?? ca.certificatePath,
                                       clientCertificateFile: identity.certificate, clientKeyFile: identity.key, protocolVersion: version,
                                       connectTimeoutMilliseconds: 2000, requestTimeoutMilliseconds: requestTimeout ?? 10000)
    }

    public static func token(_ name: String = "kmip-test", port: Int? = nil, certificate: TestCA.Issued? = nil, caFile: String? = nil,
                             version: String? = nil) throws -> KMIPToken {
        try KMIPToken(name: name, configuration: configuration(port: port, certificate: certificate, caFile: caFile, version: version))
    }

    /// An Active AES-256 key made as its owner (the gateway's identity) would: Create, Activate.
    public static func makeKey(_ name: String, usage: KMIP.UsageMask = [.encrypt, .decrypt], activate: Bool = true) async throws -> KeyReference {
        let token = try token("kmip-owner")
        let version = KMIP.ProtocolVersion(1, 2)
        let id = try await token.client.createAESKey(name: name, usage: usage, version: version)
        if activate { try await token.client.activate(id, version: version) }
        await token.client.shutdown()
        return .kmip(try KMIPKeyReference(uniqueIdentifier: id))
    }
}
