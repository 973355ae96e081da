import AWSKMS
import AzureKeyVault
@testable import CMKServer
import ControlPlane
import Foundation
import GCPKMS
import TestSupport
import Testing

/// `cmk kms probe` with the keystores of a configuration file, against the local stand-ins.
@Suite(.serialized) struct KMSCLITests {
    @Test func probesEachProviderAndExitsWithTheReason() throws {
        let directory = NSTemporaryDirectory() + "cmk-kms-cli-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let configuration = ServerConfiguration(keystores: [.init(id: "aws", aws: CloudFixtures.awsConfiguration()),
                                                            .init(id: "gcp", gcp: CloudFixtures.gcpConfiguration()),
                                                            .init(id: "azure", azure: CloudFixtures.azureConfiguration())],
                                                platform: .init(profile: "unused.json"))
        try JSONEncoder().encode(configuration).write(to: URL(fileURLWithPath: "\(directory)/cmk.json"))
        let cmk = try builtProduct("cmk")
        func probe(_ key: String, _ extra: [String] = []) throws -> SoftHSMFixture.RunResult {
            try SoftHSMFixture.run(cmk, ["kms", "probe", key, "--config", "\(directory)/cmk.json"] + extra)
        }
        for key in [CloudFixtures.moto.keys.aliasARN, CloudFixtures.gcp.names.key, CloudFixtures.azure.names.key] {
            let result = try probe(key)
            #expect(result.status == 0 && result.output.contains("PASSED"), "\(key): \(result.output) \(result.error)")
        }
        let disabled = try probe(CloudFixtures.moto.keys.disabledKeyARN)
        #expect(disabled.status == 65 && disabled.output.contains("FAIL key_state") && disabled.output.contains("kms:EnableKey"), "\(disabled.output)")
        let json = try probe(CloudFixtures.moto.keys.keyARN, ["--json"])
        let parsed = try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any]
        #expect(json.status == 0 && parsed?["passed"] as? Bool == true)
        let wrongKeystore = try probe(CloudFixtures.moto.keys.keyARN, ["--keystore", "gcp"])
        #expect(wrongKeystore.status == 65 && (wrongKeystore.output + wrongKeystore.error).contains("no AWS KMS keystore with id gcp"))
        let malformed = try probe("arn:aws:kms:nowhere")
        #expect(malformed.status == 64)
        // The configuration's secrets stay out of the output.
        #expect(!(json.output + disabled.output).contains(CloudFixtures.moto.keys.secretAccessKey))
    }
}
