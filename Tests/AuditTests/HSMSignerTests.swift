import Crypto
import Foundation
import KSI
import Testing
import TestSupport
@testable import Audit
@testable import AuditFormat

/// Checkpoints signed by an Ed25519 key on a real SoftHSM token, through the KSI.
@Suite(.serialized) struct HSMSignerTests {
    let fixture = SoftHSMFixture.shared

    @Test func checkpointsSignedOnTheTokenVerifyOfflineAndTheKeyStaysThere() async throws {
        let keystore = PKCS11Keystore()
        let token = try await keystore.token(profile: fixture.profile("audit"))
        defer { Task { await keystore.shutdown(finalizingModules: false) } }
        try await withTemporaryDirectory { directory in
            let store = try AuditStore(path: directory + "/audit.sqlite", origin: "hsm.openkcm.test/audit")
            let signer = try await PKCS11CheckpointSigner(token: token, label: "audit-signing", keyName: store.origin)
            // A second start finds the same key pair rather than making another.
            let again = try await PKCS11CheckpointSigner(token: token, label: "audit-signing", keyName: store.origin)
            #expect(again.verifierKey == signer.verifierKey)
            let log = AuditLog(store: store, signer: signer)
            try await Sample.fill(log, count: 20)
            let checkpoint = try await log.checkpoint()
            // An independent Ed25519 implementation accepts the token's signature.
            let publicKey = try Curve25519.Signing.PublicKey(rawRepresentation: signer.verifierKey.publicKey)
            #expect(publicKey.isValidSignature(checkpoint.signatures[0].bytes, for: Array(checkpoint.checkpoint.body.utf8)))
            let summary = try AuditVerifier(options: .init(publicKey: signer.verifierKey)).verify(try Sample.export(log))
            #expect(summary.records == 20 && summary.checkpointsVerified >= 1)
            #expect(token.useCount(of: try await token.ensureSigningKey(label: "audit-signing")) >= 1)
        }
        // The private key is sensitive and never extractable: the token refuses to show it.
        let listed = try SoftHSMFixture.run("/usr/bin/env", ["pkcs11-tool", "--module", SoftHSMFixture.modulePath, "--token-label", "audit",
                                                             "--login", "--pin", SoftHSMFixture.userPIN, "--list-objects", "--type", "privkey"],
                                         environment: ["SOFTHSM2_CONF": fixture.configPath])
        #expect(listed.output.contains("audit-signing"), "\(listed.output)")
        #expect(listed.output.contains("never extractable"), "\(listed.output)")
    }
}
