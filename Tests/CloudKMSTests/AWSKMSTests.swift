@testable import AWSKMS
import CloudKMS
import CMKCore
import Foundation
import KSI
import NIOHTTP1
import PKCS11
import Testing
import TestSupport

/// The published SigV4 test-suite vectors, through the one signer.
@Suite struct SigV4Tests {
    struct Vectors: Decodable {
        struct Vector: Decodable {
            var name, method, path, query, body, signedHeaders, signature: String
            var headers: [[String]]
            var canonicalRequest: String?
            var stringToSign: String?
        }
        var accessKeyID, secretAccessKey, region, service, date, host: String
        var vectors: [Vector]
    }

    static let vectors: Vectors = {
        let url = Bundle.module.url(forResource: "sigv4-vectors", withExtension: "json", subdirectory: "Fixtures")!
        return try! JSONDecoder().decode(Vectors.self, from: Data(contentsOf: url))
    }()

    @Test(arguments: vectors.vectors.map(\.name))
    func theSuiteVectorsSign(_ name: String) throws {
        let suite = Self.vectors
        let vector = try #require(suite.vectors.first { $0.name == name })
        let signer = SigV4Signer(credentials: .init(accessKeyID: suite.accessKeyID, secretAccessKey: suite.secretAccessKey),
                                 region: suite.region, service: suite.service)
        let date = try #require(ISO8601DateFormatter().date(from: suite.date))
        let signed = signer.sign(method: vector.method, host: suite.host, path: vector.path, query: vector.query,
                                 headers: vector.headers.map { ($0[0], $0[1]) }, body: Array(vector.body.utf8), date: date)
        if let canonical = vector.canonicalRequest { #expect(signed.canonicalRequest == canonical) }
        if let stringToSign = vector.stringToSign { #expect(signed.stringToSign == stringToSign) }
        #expect(signed.authorization == "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
                + "SignedHeaders=\(vector.signedHeaders), Signature=\(vector.signature)")
    }

    @Test func aSessionTokenIsSignedAndSent() throws {
        let signer = SigV4Signer(credentials: .init(accessKeyID: "AKID", secretAccessKey: "secret", sessionToken: "token"),
                                 region: "eu-central-1", service: "kms")
        let signed = signer.sign(method: "POST", host: "kms.eu-central-1.amazonaws.com", path: "/", body: [])
        #expect(signed.headers.contains { $0.0 == "X-Amz-Security-Token" && $0.1 == "token" })
        #expect(signed.authorization.contains("SignedHeaders=host;x-amz-date;x-amz-security-token"))
        #expect(!signed.headers.contains { $0.1.contains("secret") }, "the secret never travels")
    }
}

/// AWS KMS error responses as AWS sends them (JSON 1.1 `__type` + `message`), recorded from
/// the service's documented answers, for the errors moto does not produce (it does not
/// enforce disabled keys): each maps to the KSI code and a sentence an administrator can act on.
@Suite struct AWSErrorMappingTests {
    static func response(_ status: Int, _ json: String) -> CloudResponse {
        CloudResponse(status: status, headers: ["Content-Type": "application/x-amz-json-1.1"], body: Array(json.utf8))
    }

    @Test func recordedErrorsMapToKSICodes() {
        let cases: [(Int, String, KeystoreError.Code, String)] = [
            (400, #"{"__type":"DisabledException","message":"arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab is disabled."}"#,
             .conflict, "disabled"),
            (400, #"{"__type":"KMSInvalidStateException","message":"arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab is pending deletion."}"#,
             .conflict, "pending deletion"),
            (400, #"{"__type":"AccessDeniedException","message":"User: arn:aws:iam::111122223333:user/cmk is not authorized to perform: kms:Decrypt on resource: arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab because no identity-based policy allows the kms:Decrypt action"}"#,
             .permissionDenied, "does not allow kms:Decrypt"),
            (400, #"{"__type":"NotFoundException","message":"Key 'arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab' does not exist"}"#,
             .notFound, "no such key"),
            (400, #"{"__type":"InvalidCiphertextException","message":""}"#, .invalidInput, "does not decrypt"),
            (400, #"{"__type":"ThrottlingException","message":"Rate exceeded"}"#, .unavailable, "throttling"),
            (500, #"{"__type":"KMSInternalException","message":"internal"}"#, .unavailable, "try again"),
            (400, #"{"__type":"com.amazonaws.kms#KeyUnavailableException","message":""}"#, .unavailable, "unavailable"),
            (400, #"{"__type":"UnrecognizedClientException","message":"The security token included in the request is invalid."}"#,
             .permissionDenied, "access key id"),
            (403, "<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message></Error></ErrorResponse>",
             .permissionDenied, "secret access key is wrong"),
        ]
        for (status, body, code, words) in cases {
            let error = AWSKMSToken.error("Decrypt", Self.response(status, body))
            #expect(error.code == code, "\(body)")
            #expect(error.reason.contains(words), "\(error.reason)")
        }
        #expect(AWSKMSToken.isThrottled(Self.response(400, #"{"__type":"ThrottlingException","message":"Rate exceeded"}"#)))
        #expect(!AWSKMSToken.isThrottled(Self.response(400, #"{"__type":"DisabledException","message":""}"#)))
    }

    @Test func backoffHasFullJitterUnderTheCap() {
        let policy = RetryPolicy(maxAttempts: 5, base: .milliseconds(100), cap: .milliseconds(300))
        for attempt in 1...6 {
            let delay = policy.delay(after: attempt)
            #expect(delay >= .zero && delay <= .milliseconds(300))
        }
        #expect(policy.delay(after: 1, retryAfter: .seconds(10)) == .milliseconds(300), "Retry-After is honoured up to the cap")
    }
}

/// The driver against moto's KMS on loopback, signatures checked.
@Suite(.serialized) struct AWSKMSTokenTests {
    static func token(id: String = "id", secret: String = "secret", endpoint: String? = nil, timeout: Int? = nil) throws -> AWSKMSToken {
        try AWSKMSToken(name: "aws-test", configuration: CloudFixtures.awsConfiguration(id: id, secret: secret, endpoint: endpoint, timeout: timeout))
    }

    static func ref(_ text: String) throws -> KeyReference { try KeyReference(parsing: text) }

    @Test func theProbePassesForAKeyARNAnAliasAndAKeyID() async throws {
        let token = try Self.token()
        let keys = CloudFixtures.moto.keys
        for reference in [keys.keyARN, keys.aliasARN, keys.aliasName, keys.keyID] {
            let report = await token.probe(try Self.ref(reference))
            #expect(report.passed, "\(reference): \(report.checks)")
            #expect(report.checks.map(\.name) == ["key_reference", "credentials", "key_found", "key_state", "key_usage", "key_type",
                                                  "test_key", "wrap", "unwrap", "compare", "context", "cleanup"])
        }
        #expect(await token.status().state == .available)
    }

    @Test func wrapsAreBoundToTheirContextAndL2IsMadeInsideKMS() async throws {
        let token = try Self.token()
        let key = try Self.ref(CloudFixtures.moto.keys.keyARN)
        let context = BindingContext(tenant: "acme", l2Ref: UUID().uuidString.lowercased())
        let wrapped = try await token.generateWrappedKey(with: key, context: context)
        #expect(wrapped.mechanism == AWSKMSToken.mechanism && wrapped.blob.count > 32)
        let l2 = try await token.unwrap(wrapped, with: key, context: context)
        #expect(l2.count == 32)
        // Another tenant's or another L2's context does not open it.
        for other in [BindingContext(tenant: "globex", l2Ref: context.l2Ref), BindingContext(tenant: "acme", l2Ref: UUID().uuidString.lowercased())] {
            await #expect(throws: KeystoreError(.invalidInput, "")) { try await token.unwrap(wrapped, with: key, context: other) }
        }
        var corrupt = wrapped
        corrupt.blob[corrupt.blob.count / 2] ^= 0xff
        await #expect(throws: KeystoreError.self) { try await token.unwrap(corrupt, with: key, context: context) }
    }

    @Test func failingProbesSayWhy() async throws {
        let keys = CloudFixtures.moto.keys
        let token = try Self.token()
        let disabled = await token.probe(try Self.ref(keys.disabledKeyARN))
        #expect(!disabled.passed && disabled.checks.last?.name == "key_state" && disabled.failure?.code == .conflict)
        #expect(disabled.failure?.reason.contains("disabled") == true)
        let signing = await token.probe(try Self.ref(keys.signingKeyARN))
        #expect(!signing.passed && signing.checks.last?.name == "key_usage" && signing.failure?.code == .unsupported)
        let missing = await token.probe(try Self.ref("arn:aws:kms:eu-central-1:123456789012:key/00000000-0000-0000-0000-000000000000"))
        #expect(!missing.passed && missing.checks.last?.name == "key_found" && missing.failure?.code == .notFound)
        let otherRegion = await token.probe(try Self.ref("arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"))
        #expect(!otherRegion.passed && otherRegion.checks.last?.name == "key_reference" && otherRegion.failure?.reason.contains("us-east-1") == true)

        // Signatures are checked: a wrong secret is refused, with words.
        let wrong = await (try Self.token(secret: "wrong-secret")).probe(try Self.ref(keys.keyARN))
        #expect(!wrong.passed && wrong.failure?.code == .permissionDenied && wrong.checks.last?.name == "key_found")
        #expect(wrong.failure?.reason.contains("secret access key") == true, "\(String(describing: wrong.failure))")
        // A principal the policy does not allow kms:Decrypt.
        let limited = await (try Self.token(id: "limited-id", secret: "limited-secret")).probe(try Self.ref(keys.keyARN))
        #expect(!limited.passed && limited.checks.last?.name == "unwrap" && limited.failure?.code == .permissionDenied, "\(limited.checks)")
        #expect(limited.failure?.reason == "the key policy or IAM policy does not allow kms:Decrypt for this principal")
        // Nothing listens (a port the kernel just said is free): unavailable within the bound, not a hang.
        let nowhere = await (try Self.token(endpoint: "http://127.0.0.1:\(try LoopbackPort.free())", timeout: 250)).probe(try Self.ref(keys.keyARN))
        #expect(!nowhere.passed && nowhere.failure?.code == .unavailable && nowhere.latencyMilliseconds < 2000)
    }

    /// An endpoint that accepts connections and never answers: each call ends at its bound
    /// (250 ms) as `unavailable`, and is not retried (only throttling is).
    @Test func aSilentEndpointTimesOutWithinTheBound() async throws {
        let reference = try Self.ref(CloudFixtures.moto.keys.keyARN)
        let silent = try LocalServer(python: ["-c", """
            import socket, time
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", {port})); s.listen(16)
            held = []
            while True: held.append(s.accept())
            """], log: CloudFixtures.directory + "/silent.log")
        defer { silent.stop() }
        let token = try Self.token(endpoint: silent.base, timeout: 250)
        let report = await token.probe(reference)
        #expect(!report.passed && report.checks.last?.name == "key_found" && report.failure?.code == .unavailable)
        #expect(report.failure?.reason.contains("did not answer DescribeKey within 250 ms") == true, "\(String(describing: report.failure))")
        #expect(report.latencyMilliseconds >= 240 && report.latencyMilliseconds < 1500, "\(report.latencyMilliseconds) ms")
    }

    @Test func configurationIsCheckedAndCredentialsAreNotKeptInErrors() throws {
        #expect(throws: KeystoreError.self) {
            try AWSKMSToken(name: "x", configuration: .init(region: "eu-central-1", endpoint: "http://kms.example.com",
                                                             accessKeyIDFile: "\(CloudFixtures.moto.directory)/id", secretAccessKeyFile: "\(CloudFixtures.moto.directory)/secret"))
        }
        #expect(throws: KeystoreError.self) {
            try AWSKMSToken(name: "x", configuration: .init(region: "Europe", accessKeyIDFile: "\(CloudFixtures.moto.directory)/id", secretAccessKeyFile: "\(CloudFixtures.moto.directory)/secret"))
        }
        do {
            _ = try AWSKMSToken(name: "x", configuration: .init(region: "eu-central-1", accessKeyIDFile: "/nonexistent/id", secretAccessKeyFile: "/nonexistent/secret"))
            Issue.record("a missing credential file must be refused")
        } catch let error as KeystoreError {
            #expect(error.reason.contains("/nonexistent/id"))
        }
    }

    @Test func keyReferencesParse() throws {
        for good in ["arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                     "arn:aws:kms:eu-central-1:111122223333:alias/customer-l1", "alias/customer-l1",
                     "1234abcd-12ab-34cd-56ef-1234567890ab", "mrk-1234abcd12ab34cd56ef1234567890ab"] {
            let reference = try KeyReference(parsing: good)
            #expect(reference.provider == .awsKMS && reference.description == good)
        }
        for bad in ["arn:aws:kms:eu-central-1:1111:key/1234", "arn:aws:s3:::bucket", "alias/", "arn:aws:kms:eu-central-1:111122223333:key/not-a-uuid"] {
            #expect(throws: KeystoreError.self, "\(bad)") { try KeyReference(parsing: bad) }
        }
    }
}

/// Listing the keys of the account and region (the portal's wizard), against moto through a
/// front that pages ListKeys and ListAliases as AWS does.
@Suite(.serialized) struct AWSKeyListingTests {
    static func token(id: String = "id", secret: String = "secret", pager: Bool = true) throws -> AWSKMSToken {
        try AWSKMSToken(name: "aws-test", configuration: CloudFixtures.awsConfiguration(id: id, secret: secret,
                                                                                        endpoint: pager ? CloudFixtures.motoPager.base : nil))
    }

    @Test func keysAreListedPageByPageWithTheirAliasesAndWhyTheyAreNotL1() async throws {
        let fixture = CloudFixtures.moto.keys
        let paged = try await Self.token().keyList(limit: KeyList.maxKeys, pageSize: 4)
        #expect(!paged.truncated)
        // Pages of four make the same listing as moto's one page.
        let whole = try await Self.token(pager: false).keyList(limit: KeyList.maxKeys)
        #expect(paged.keys == whole.keys && paged.keys.count >= 3 + fixture.listingKeys, "\(paged.keys.count) keys")

        let l1 = try #require(paged.keys.first { $0.uri == fixture.keyARN })
        #expect(l1.usableAsL1 && l1.reason == nil && l1.state == "Enabled" && l1.keyType == "SYMMETRIC_DEFAULT" && l1.bits == 256)
        #expect(l1.label == fixture.aliasName && l1.aliases == [fixture.aliasName] && l1.objectClass == "secret-key" && l1.canUnwrap == true)
        let disabled = try #require(paged.keys.first { $0.uri == fixture.disabledKeyARN })
        #expect(!disabled.usableAsL1 && disabled.state == "Disabled" && disabled.reason?.contains("kms:EnableKey") == true)
        let signing = try #require(paged.keys.first { $0.uri == fixture.signingKeyARN })
        #expect(!signing.usableAsL1 && signing.keyType == "RSA_2048" && signing.bits == 2048 && signing.reason?.contains("SIGN_VERIFY") == true)
        // Aliases came from several ListAliases pages, each onto its key.
        let named = paged.keys.filter { $0.label.hasPrefix("alias/listing-") }
        #expect(named.count == fixture.listingKeys / 2 && named.allSatisfy { $0.aliases == [$0.label] && $0.usableAsL1 })
        // Every uri is a key ARN a handshake takes, and the probe passes for a usable one.
        for key in paged.keys {
            guard case .awsKMS(let reference) = try KeyReference(parsing: key.uri) else { Issue.record("\(key.uri)"); continue }
            #expect(reference.form == .keyARN)
        }
        let probe = await (try Self.token()).probe(try KeyReference(parsing: try #require(named.first).uri))
        #expect(probe.passed, "\(probe.checks)")
        // Sorted by label then uri: aliases (alias/…) and key ids, stably for the wizard.
        #expect(paged.keys.map(\.label) == paged.keys.map(\.label).sorted())
    }

    @Test func theListingIsBoundedAndSaysSo() async throws {
        let cut = try await Self.token().keyList(limit: 5, pageSize: 2)
        #expect(cut.truncated && cut.keys.count == 5)
        let exact = try await Self.token().keyList(limit: KeyList.maxKeys, pageSize: 2)
        let all = try await Self.token().keyList(limit: exact.keys.count, pageSize: 2)
        #expect(!all.truncated && all.keys.count == exact.keys.count, "a listing that ends at its bound is complete")
    }

    /// A principal whose IAM policy does not allow kms:ListKeys: a keystore error that says so.
    @Test func aRefusedListingIsAPermissionError() async throws {
        let limited = try Self.token(id: "limited-id", secret: "limited-secret")
        do {
            _ = try await limited.keys()
            Issue.record("kms:ListKeys is not allowed to this principal")
        } catch let error as KeystoreError {
            #expect(error.code == .permissionDenied && error.reason.contains("kms:ListKeys"), "\(error)")
        }
        await #expect(throws: KeystoreError(.permissionDenied, "")) { try await (try Self.token(secret: "wrong-secret")).keys() }
    }
}
