@testable import AzureKeyVault
import CloudKMS
import CMKCore
import Foundation
@testable import GCPKMS
import KSI
import NIOHTTP1
import PKCS11
import Testing
import TestSupport

@Suite(.serialized) struct GCPKMSTokenTests {
    static func ref(_ text: String) throws -> KeyReference { try KeyReference(parsing: text) }

    @Test func crc32cMatchesTheCastagnoliCheckValue() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8]()) == 0)
    }

    @Test func theProbePassesAndWrapsAreBoundToTheirAAD() async throws {
        let token = try CloudFixtures.gcpToken()
        let key = try Self.ref(CloudFixtures.gcp.names.key)
        let report = await token.probe(key)
        #expect(report.passed, "\(report.checks)")
        #expect(report.checks.map(\.name) == ["key_reference", "credentials", "key_found", "key_state", "key_usage", "key_type",
                                              "test_key", "wrap", "unwrap", "compare", "context", "cleanup"])
        let binding = BindingContext(tenant: "acme", l2Ref: UUID().uuidString.lowercased())
        let wrapped = try await token.generateWrappedKey(with: key, context: binding)
        #expect(try await token.unwrap(wrapped, with: key, context: binding).count == 32)
        await #expect(throws: KeystoreError(.invalidInput, "")) {
            try await token.unwrap(wrapped, with: key, context: BindingContext(tenant: "globex", l2Ref: binding.l2Ref))
        }
        #expect(await token.status().state == .available)
    }

    @Test func corruptedAnswersAreCaughtByTheirChecksums() async throws {
        let token = try CloudFixtures.gcpToken()
        let key = try Self.ref(CloudFixtures.gcp.names.key)
        let binding = BindingContext(tenant: "acme", l2Ref: UUID().uuidString.lowercased())
        try CloudFixtures.control(CloudFixtures.gcp.front, #"{"corrupt": 1}"#)
        do {
            _ = try await token.generateWrappedKey(with: key, context: binding)
            Issue.record("a corrupted ciphertext must be refused")
        } catch let error as KeystoreError {
            #expect(error.code == .unavailable && error.reason.contains("CRC32C"), "\(error)")
        }
        let wrapped = try await token.generateWrappedKey(with: key, context: binding)
        try CloudFixtures.control(CloudFixtures.gcp.front, #"{"corrupt": 1}"#)
        await #expect(throws: KeystoreError(.unavailable, "")) { try await token.unwrap(wrapped, with: key, context: binding) }
        // Requests carry the right checksums: the front checks them, as Cloud KMS does.
        #expect(try await token.unwrap(wrapped, with: key, context: binding).count == 32)
    }

    @Test func failingProbesSayWhy() async throws {
        let names = CloudFixtures.gcp.names
        let token = try CloudFixtures.gcpToken()
        let signing = await token.probe(try Self.ref(names.signingKey))
        #expect(!signing.passed && signing.checks.last?.name == "key_state" || signing.checks.last?.name == "key_usage", "\(signing.checks)")
        let missing = await token.probe(try Self.ref(names.missingKey))
        #expect(!missing.passed && missing.checks.last?.name == "key_found" && missing.failure?.code == .notFound)
        let otherProject = await token.probe(try Self.ref("projects/someone-else/locations/global/keyRings/r/cryptoKeys/k"))
        #expect(!otherProject.passed && otherProject.checks.last?.name == "key_reference")

        try CloudFixtures.control(CloudFixtures.gcp.front, #"{"denyDecrypt": true}"#)
        let denied = await token.probe(try Self.ref(names.key))
        try CloudFixtures.control(CloudFixtures.gcp.front, #"{"denyDecrypt": false}"#)
        #expect(!denied.passed && denied.checks.last?.name == "unwrap" && denied.failure?.code == .permissionDenied)
        #expect(denied.failure?.reason.contains("cloudkms.cryptoKeyVersions.useToDecrypt") == true)

        // Another service account's key: the token endpoint refuses the grant's signature.
        var account = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: names.serviceAccountKeyFile))) as! [String: Any]
        let other = try SoftHSMFixture.run("/usr/bin/env", ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
        account["private_key"] = other.output
        let forged = CloudFixtures.directory + "/forged-account.json"
        try JSONSerialization.data(withJSONObject: account).write(to: URL(fileURLWithPath: forged))
        let refused = await (try CloudFixtures.gcpToken(keyFile: forged)).probe(try Self.ref(names.key))
        #expect(!refused.passed && refused.checks.last?.name == "credentials" && refused.failure?.code == .permissionDenied)

        // Throttling is retried with backoff; past the attempts, it is reported.
        try CloudFixtures.control(CloudFixtures.gcp.front, #"{"throttle": 2}"#)
        #expect(await token.probe(try Self.ref(names.key)).passed, "two 429s are absorbed by the retries")
        try CloudFixtures.control(CloudFixtures.gcp.front, #"{"throttle": 3}"#)
        let throttled = await (try CloudFixtures.gcpToken(maxAttempts: 2)).probe(try Self.ref(names.key))
        try CloudFixtures.control(CloudFixtures.gcp.front, #"{"throttle": 0}"#)
        #expect(!throttled.passed && throttled.failure?.code == .unavailable && throttled.failure?.reason.contains("throttled") == true)
    }

    /// The grant's `iat` and `exp` come from the token's clock: a gateway whose clock runs two
    /// hours ahead signs grants the token endpoint refuses, and the probe says so at
    /// `credentials` (no waiting: the manual clock starts where the test puts it).
    @Test func aGrantDatedByASkewedClockIsRefused() async throws {
        let names = CloudFixtures.gcp.names
        let ahead = ManualClock(start: Date().addingTimeInterval(2 * 3600))
        let report = await (try CloudFixtures.gcpToken(clock: ahead.wall)).probe(try Self.ref(names.key))
        #expect(!report.passed && report.checks.last?.name == "credentials" && report.failure?.code == .permissionDenied, "\(report.checks)")
        #expect(report.failure?.reason.contains("Invalid JWT claims") == true, "\(String(describing: report.failure))")
    }

    /// Cloud KMS errors as Google sends them, for states the emulator cannot take.
    @Test func recordedErrorsMapToKSICodes() {
        func response(_ status: Int, _ code: String, _ message: String) -> CloudResponse {
            CloudResponse(status: status, headers: [:], body: Array(#"{"error":{"code":\#(status),"message":"\#(message)","status":"\#(code)"}}"#.utf8))
        }
        let disabled = GCPKMSToken.error("encrypt", response(400, "FAILED_PRECONDITION",
            "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1 is not enabled, current state is: DISABLED."))
        #expect(disabled.code == .conflict && disabled.reason.contains("disabled"))
        #expect(GCPKMSToken.error("decrypt", response(403, "PERMISSION_DENIED", "Permission denied")).code == .permissionDenied)
        #expect(GCPKMSToken.error("decrypt", response(429, "RESOURCE_EXHAUSTED", "Quota exceeded")).code == .unavailable)
        #expect(GCPKMSToken.error("encrypt", response(400, "INVALID_ARGUMENT", "The checksum in field plaintext_crc32c did not match the data in field plaintext.")).reason.contains("integrity"))
    }
}

@Suite(.serialized) struct AzureKeyVaultTokenTests {
    static func ref(_ text: String) throws -> KeyReference { try KeyReference(parsing: text) }

    @Test func theProbePassesWithAndWithoutAVersionAndOnAManagedHSM() async throws {
        let names = CloudFixtures.azure.names
        let vault = try CloudFixtures.azureToken()
        for reference in [names.key, "\(names.key)/\(names.firstVersion)"] {
            let report = await vault.probe(try Self.ref(reference))
            #expect(report.passed && report.mechanism == "RSA-OAEP-256", "\(reference): \(report.checks)")
            #expect(report.checks.map(\.name) == ["key_reference", "credentials", "key_found", "key_state", "key_usage", "key_type",
                                                  "test_key", "wrap", "unwrap", "compare", "cleanup"])
        }
        let hsm = await (try CloudFixtures.azureToken(managedHSM: true)).probe(try Self.ref(names.hsmKey))
        #expect(hsm.passed && hsm.mechanism == "A256KW", "\(hsm.checks)")
        // The RSA key does not wrap with A256KW, and the probe says so before trying.
        let mismatch = await (try CloudFixtures.azureToken(managedHSM: true)).probe(try Self.ref(names.key))
        #expect(!mismatch.passed && mismatch.checks.last?.name == "key_type")
    }

    @Test func blobsRememberTheKeyVersionThatWrappedThem() async throws {
        let token = try CloudFixtures.azureToken()
        let key = try Self.ref(CloudFixtures.azure.names.key)
        let binding = BindingContext(tenant: "acme", l2Ref: UUID().uuidString.lowercased())
        let wrapped = try await token.generateWrappedKey(with: key, context: binding)
        #expect(wrapped.mechanism.hasPrefix("RSA-OAEP-256/") && wrapped.blob.count == 256)
        #expect(try await token.unwrap(wrapped, with: key, context: binding).count == 32)
        var corrupt = wrapped
        corrupt.blob[10] ^= 1
        await #expect(throws: KeystoreError(.invalidInput, "")) { try await token.unwrap(corrupt, with: key, context: binding) }
        await #expect(throws: KeystoreError(.invalidInput, "")) {
            try await token.unwrap(WrappedKey(mechanism: "AWS_KMS_SYMMETRIC_DEFAULT", blob: wrapped.blob), with: key)
        }
    }

    @Test func failingProbesSayWhy() async throws {
        let names = CloudFixtures.azure.names
        let token = try CloudFixtures.azureToken()
        let disabled = await token.probe(try Self.ref(names.disabledKey))
        #expect(!disabled.passed && disabled.checks.last?.name == "key_state" && disabled.failure?.code == .conflict)
        let signOnly = await token.probe(try Self.ref(names.signOnlyKey))
        #expect(!signOnly.passed && signOnly.checks.last?.name == "key_usage" && signOnly.failure?.code == .unsupported)
        let missing = await token.probe(try Self.ref(names.missingKey))
        #expect(!missing.passed && missing.checks.last?.name == "key_found" && missing.failure?.code == .notFound)
        // A key URI on another host is refused before any request: credentials never travel there.
        let elsewhere = await token.probe(try Self.ref("https://evil.vault.azure.net/keys/customer-l1"))
        #expect(!elsewhere.passed && elsewhere.checks.last?.name == "key_reference")
        // A wrong client secret.
        let wrongSecret = CloudFixtures.directory + "/wrong-azure-secret"
        try Data("not-the-secret\n".utf8).write(to: URL(fileURLWithPath: wrongSecret))
        let refused = await (try CloudFixtures.azureToken(secretFile: wrongSecret)).probe(try Self.ref(names.key))
        #expect(!refused.passed && refused.checks.last?.name == "credentials" && refused.failure?.reason.contains("client secret is wrong") == true)
        // Throttled twice, then served.
        try CloudFixtures.control(CloudFixtures.azure.vault, #"{"throttle": 2}"#)
        #expect(await token.probe(try Self.ref(names.key)).passed)
    }

    /// The key's validity period (`nbf`, `exp`) is read against the token's clock: a manual one,
    /// moved past the key's expiry instead of waiting two hours for it.
    @Test func aKeyOutsideItsValidityPeriodIsRefused() async throws {
        let names = CloudFixtures.azure.names
        let clock = ManualClock()
        let token = try CloudFixtures.azureToken(clock: clock.wall)
        let valid = await token.probe(try Self.ref(names.expiringKey))
        #expect(valid.passed, "\(valid.checks)")
        clock.advance(by: .seconds(2 * 3600 + 1))
        let expired = await token.probe(try Self.ref(names.expiringKey))
        #expect(!expired.passed && expired.checks.last?.name == "key_state" && expired.failure?.code == .conflict, "\(expired.checks)")
        #expect(expired.failure?.reason.contains("expired") == true)

        let early = ManualClock(start: clock.start.addingTimeInterval(-2 * 3600))
        let notYet = await (try CloudFixtures.azureToken(clock: early.wall)).probe(try Self.ref(names.expiringKey))
        #expect(!notYet.passed && notYet.checks.last?.name == "key_state" && notYet.failure?.reason.contains("not valid yet") == true, "\(notYet.checks)")
    }

    @Test func keyURIsParse() throws {
        let good = try AzureKeyURI(parsing: "https://MyVault.vault.azure.net/keys/customer-l1/0123456789abcdef0123456789abcdef")
        #expect(good.vault == "https://myvault.vault.azure.net" && good.name == "customer-l1" && good.version == "0123456789abcdef0123456789abcdef")
        for bad in ["https://v.vault.azure.net/secrets/x", "https://v.vault.azure.net/keys/", "https://v.vault.azure.net/keys/x/notahexversion",
                    "https://v.vault.azure.net/keys/x?api-version=7.4", "ftp://v.vault.azure.net/keys/x"] {
            #expect(throws: KeystoreError.self, "\(bad)") { try KeyReference(parsing: bad) }
        }
    }
}

/// Listing a project's CryptoKeys (drongo, paged by the front as Cloud KMS pages) and a vault's
/// keys (the Key Vault fake), for the portal's wizard.
@Suite(.serialized) struct CloudKeyListingTests {
    @Test func cryptoKeysAreListedAcrossKeyRingsPageByPage() async throws {
        let names = CloudFixtures.gcp.names
        try CloudFixtures.control(CloudFixtures.gcp.front, #"{"makeKeys": 12}"#)
        // No locations configured: the project's, from projects.locations.list.
        let token = try CloudFixtures.gcpToken()
        let list = try await token.keyList(limit: KeyList.maxKeys, pageSize: 5)
        #expect(!list.truncated && list.keys.count == 14, "\(list.keys.map(\.label))")
        #expect(list.keys.map(\.label) == ["bulk/k00", "bulk/k01", "bulk/k02", "bulk/k03", "bulk/k04", "bulk/k05", "bulk/k06", "bulk/k07",
                                           "bulk/k08", "bulk/k09", "bulk/k10", "bulk/k11", "cmk/l1", "cmk/signing"])
        let l1 = try #require(list.keys.first { $0.uri == names.key })
        #expect(l1.usableAsL1 && l1.state == "ENABLED" && l1.keyType == "GOOGLE_SYMMETRIC_ENCRYPTION" && l1.bits == 256 && l1.canWrap == true)
        let signing = try #require(list.keys.first { $0.uri == names.signingKey })
        #expect(!signing.usableAsL1 && signing.reason?.contains("ASYMMETRIC_SIGN") == true && signing.objectClass == "private-key")
        // Each uri is the CryptoKey name a handshake takes.
        let bulk = try KeyReference(parsing: try #require(list.keys.first).uri)
        #expect(await token.probe(bulk).passed)

        // Configured locations are the ones looked in.
        let configured = try GCPKMSToken(name: "gcp-test", configuration: .init(
            project: names.project, endpoint: CloudFixtures.gcp.front.base, serviceAccountKeyFile: names.serviceAccountKeyFile,
            locations: ["europe-west3", "us-east1"]))
        #expect(try await configured.keyList(limit: KeyList.maxKeys, pageSize: 3).keys == list.keys)
        #expect(throws: KeystoreError(.invalidInput, "")) {
            try GCPKMSToken(name: "x", configuration: .init(project: names.project, serviceAccountKeyFile: names.serviceAccountKeyFile,
                                                            locations: ["../../etc"]))
        }

        // Bounded, and saying so.
        let cut = try await token.keyList(limit: 7, pageSize: 5)
        #expect(cut.truncated && cut.keys.count == 7)

        try CloudFixtures.control(CloudFixtures.gcp.front, #"{"denyList": true}"#)
        defer { try? CloudFixtures.control(CloudFixtures.gcp.front, #"{"denyList": false}"#) }
        do {
            _ = try await token.keys()
            Issue.record("a refused listing must be an error")
        } catch let error as KeystoreError {
            #expect(error.code == .permissionDenied && error.reason.contains("roles/cloudkms.viewer"), "\(error)")
        }
    }

    @Test func vaultKeysAreListedThroughNextLink() async throws {
        let names = CloudFixtures.azure.names
        try CloudFixtures.control(CloudFixtures.azure.vault, #"{"makeKeys": 30}"#)
        // The fake's clock is the manual clock's: expiring-l1 is within its validity period.
        let token = try CloudFixtures.azureToken(clock: ManualClock().wall)
        let list = try await token.keyList(limit: KeyList.maxKeys, pageSize: 7)
        #expect(!list.truncated && list.keys.count == 35, "\(list.keys.map(\.label))")
        #expect(try await token.keys() == list.keys, "Key Vault's own page of 25 gives the same listing")
        func key(_ uri: String) throws -> KeyDescription { try #require(list.keys.first { $0.uri == uri }) }
        let l1 = try key(names.key)
        #expect(l1.usableAsL1 && l1.state == "enabled" && l1.keyType == "RSA" && l1.label == "customer-l1" && l1.canUnwrap == true)
        #expect(try key(names.expiringKey).usableAsL1)
        let disabled = try key(names.disabledKey)
        #expect(!disabled.usableAsL1 && disabled.state == "disabled" && disabled.reason?.contains("enable it") == true)
        #expect(try key(names.signOnlyKey).reason?.contains("wrapKey and unwrapKey") == true)
        #expect(try key(names.hsmKey).reason?.contains("RSA-OAEP-256") == true, "an oct-HSM key in a vault does not wrap with RSA-OAEP-256")
        #expect(list.keys.filter { $0.label.hasPrefix("bulk-") && !$0.usableAsL1 }.count == 10, "every third bulk key is disabled")
        // Each uri is a key URI (no version: the current one) on this vault.
        let bulk = try KeyReference(parsing: try key("\(names.vault)/keys/bulk-00").uri)
        #expect(await token.probe(bulk).passed)

        let cut = try await token.keyList(limit: 10, pageSize: 7)
        #expect(cut.truncated && cut.keys.count == 10)

        // A nextLink to another host is not followed: the bearer token stays with the vault.
        try CloudFixtures.control(CloudFixtures.azure.vault, #"{"foreignNextLink": true}"#)
        await #expect { try await token.keyList(limit: KeyList.maxKeys, pageSize: 7) } throws: { error in
            (error as? KeystoreError)?.reason.contains("outside the vault") == true
        }
        try CloudFixtures.control(CloudFixtures.azure.vault, #"{"foreignNextLink": false, "denyList": true}"#)
        defer { try? CloudFixtures.control(CloudFixtures.azure.vault, #"{"denyList": false}"#) }
        do {
            _ = try await token.keys()
            Issue.record("a refused listing must be an error")
        } catch let error as KeystoreError {
            #expect(error.code == .permissionDenied && error.reason.contains("may not list keys"), "\(error)")
        }
    }
}
