@testable import CMKServer
import ControlPlane
import Crypto
import Foundation
import Logging
import Testing

@Suite struct ConfigurationTests {
    func write(_ json: String) throws -> String {
        let directory = NSTemporaryDirectory() + "cmk-config-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = directory + "/cmk.json"
        try Data(json.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test func relativePathsResolveAgainstTheFileAndAuditDefaultsApply() throws {
        let path = try write(#"{"platform":{"profile":"p.json"},"audit":{"hsm":{"profile":"hsm.json"}}}"#)
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        let configuration = try ServerConfiguration.load(path: path, environment: [:])
        #expect(configuration.audit.database == directory + "/audit.sqlite")
        #expect(configuration.audit.signingKey == directory + "/audit-signing.key")
        #expect(configuration.audit.checkpointEvery == 1000 && configuration.audit.checkpointIntervalSeconds == 10)
        #expect(configuration.audit.hsm == .init(profile: directory + "/hsm.json", keyLabel: "openkcm-audit-signing"))
        #expect(configuration.audit.witnessDirectory == nil)
    }

    @Test func unknownKeysAreRefusedAtTheTopAndInsideAudit() throws {
        let top = try write(#"{"platform":{"profile":"p.json"},"auditt":{}}"#)
        #expect(throws: ConfigurationError.self) { try ServerConfiguration.load(path: top, environment: [:]) }
        let inner = try write(#"{"platform":{"profile":"p.json"},"audit":{"checkpointEvry":5}}"#)
        #expect { try ServerConfiguration.load(path: inner, environment: [:]) } throws: { error in
            "\(error)".contains("checkpointEvry")
        }
        let zero = try write(#"{"platform":{"profile":"p.json"},"audit":{"checkpointEvery":0}}"#)
        #expect(throws: ConfigurationError.self) { try ServerConfiguration.load(path: zero, environment: [:]) }
        // The bootstrap token is gone, with a message that says what replaced it.
        let old = try write(#"{"platform":{"profile":"p.json"},"bootstrapTokenFile":"token"}"#)
        #expect { try ServerConfiguration.load(path: old, environment: [:]) } throws: { error in
            "\(error)".contains("cmk admin create")
        }
    }

    @Test func environmentOverridesSingleValues() throws {
        let path = try write(#"{"platform":{"profile":"p.json"},"port":9000}"#)
        let configuration = try ServerConfiguration.load(path: path, environment: ["CMK_PORT": "9443", "CMK_LOG_LEVEL": "debug"])
        #expect(configuration.port == 9443 && configuration.logLevel == "debug")
        #expect(throws: ConfigurationError.self) { try ServerConfiguration.load(path: path, environment: ["CMK_PORT": "many"]) }
    }

    /// The node streams' heartbeat must stay well under the nodes' 45 s silence limit.
    @Test func streamHeartbeatIsBoundedAndOverridable() throws {
        let path = try write(#"{"platform":{"profile":"p.json"},"streamHeartbeatSeconds":5}"#)
        #expect(try ServerConfiguration.load(path: path, environment: [:]).streamHeartbeatSeconds == 5)
        #expect(try ServerConfiguration.load(path: path, environment: ["CMK_STREAM_HEARTBEAT_SECONDS": "1"]).streamHeartbeatSeconds == 1)
        let plain = try write(#"{"platform":{"profile":"p.json"}}"#)
        #expect(try ServerConfiguration.load(path: plain, environment: [:]).streamHeartbeatSeconds == 15)
        for bad in ["0", "31"] {
            #expect(throws: ConfigurationError.self) { try ServerConfiguration.load(path: path, environment: ["CMK_STREAM_HEARTBEAT_SECONDS": bad]) }
        }
    }
}

extension ConfigurationTests {
    /// The gateway's signing key signs app credentials and every answer to nodes: a copy others
    /// could have read is refused at start, with the reason, and the file is left as it was.
    @Test func theGatewaySigningKeyIsRefusedWhenOthersCanReadIt() throws {
        let directory = URL(fileURLWithPath: try write("{}")).deletingLastPathComponent().path
        let path = directory + "/app-credential-signing.key"
        let made = try Gateway.loadAppCredentialKey(path, logger: .init(label: "test"))
        #expect(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int == 0o600)
        #expect(try Gateway.loadAppCredentialKey(path, logger: .init(label: "test")).publicKey.rawRepresentation == made.publicKey.rawRepresentation)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: path)
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect { try Gateway.loadAppCredentialKey(path, logger: .init(label: "test")) } throws: { error in
            error is ConfigurationError && "\(error)".contains("readable by others")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before)
    }
}
