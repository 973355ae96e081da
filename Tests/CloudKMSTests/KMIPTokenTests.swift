import CloudKMS
import CMKCore
import Foundation
@testable import KMIP
import KSI
import NIOConcurrencyHelpers
import TestSupport
import Testing

/// The KMIP driver against PyKMIP's server on loopback, over mutual TLS with a CA the test
/// made: the probe and its refusals in an operator's words, wraps and unwraps, the owner's
/// revocation as a kill-switch, TLS refusals, an unreachable server, and the listing.
@Suite(.serialized) struct KMIPTokenTests {
    @Test func keyReferencesParseAndPrintBack() throws {
        let reference = try KeyReference(parsing: "kmip:4f6e2a1c-0d3b-4c59-9a2f-1b2c3d4e5f60")
        #expect(reference.provider == .kmip && reference.description == "kmip:4f6e2a1c-0d3b-4c59-9a2f-1b2c3d4e5f60")
        #expect(try KeyReference(parsing: "KMIP:12").description == "kmip:12")
        for bad in ["kmip:", "kmip:has space", "kmip:" + String(repeating: "a", count: 257), "kmip:tab\there"] {
            #expect(throws: KeystoreError(.invalidInput, "")) { try KeyReference(parsing: bad) }
        }
        #expect(throws: KeystoreError(.invalidInput, "")) { try KMIPToken(name: "k", configuration: .init(host: "", caFile: "/x", clientCertificateFile: "/x", clientKeyFile: "/x")) }
    }

    @Test func badConfigurationIsRefusedAtStartWithTheFileNamed() throws {
        var configuration = KMIPFixture.configuration(port: 1)
        configuration.clientKeyFile = "/nonexistent/client.key"
        #expect { try KMIPToken(name: "k", configuration: configuration) } throws: { "\($0)".contains("/nonexistent/client.key") }
        configuration = KMIPFixture.configuration(port: 1)
        configuration.clientKeyFile = KMIPFixture.otherClient.key
        #expect { try KMIPToken(name: "k", configuration: configuration) } throws: { "\($0)".contains("do not make a TLS identity") }
        configuration = KMIPFixture.configuration(port: 1, version: "2.0")
        #expect { try KMIPToken(name: "k", configuration: configuration) } throws: { "\($0)".contains("2.0 is not built") }
        configuration = KMIPFixture.configuration(port: 1)
        configuration.caFile = KMIPFixture.client.key
        #expect { try KMIPToken(name: "k", configuration: configuration) } throws: { "\($0)".contains("CA file") }
    }

    @Test func probesAnActiveAESKeyAndRoundTrips() async throws {
        let key = try await KMIPFixture.makeKey("l1-probe")
        let token = try KMIPFixture.token()
        let report = await token.probe(key)
        #expect(report.passed, "\(report)")
        // PyKMIP speaks 1.4 and tags GCM: the authenticated construction is chosen.
        #expect(report.provider == .kmip && report.mechanism == KMIPToken.Construction.gcm.rawValue)
        #expect(report.checks.map(\.name) == ["key_reference", "connection", "key_found", "key_type", "key_state", "key_usage", "mechanism",
                                              "test_key", "wrap", "unwrap", "compare", "binding", "cleanup"])
        let status = await token.status()
        #expect(status.state == .available && status.provider == .kmip)
    }

    /// Both constructions: KMIP 1.2 (no GCM fields: CBC with the digest) and 1.4 (GCM with a tag).
    static let constructions: [(version: String, mechanism: String, blobBytes: Int)] = [
        ("1.2", "KMIP_AES_CBC_PAD_SHA256", 16 + 80), ("1.4", "KMIP_AES_GCM", 12 + 16 + 32),
    ]

    @Test(arguments: constructions)
    func wrapsAndUnwrapsBoundToTheContext(_ construction: (version: String, mechanism: String, blobBytes: Int)) async throws {
        let key = try await KMIPFixture.makeKey("l1-wrap-\(construction.version)")
        let token = try KMIPFixture.token(version: construction.version)
        let l2 = SecretBytes.random(count: 32)
        let binding = BindingContext(tenant: "t1", l2Ref: "l2-a")
        let wrapped = try await token.wrap(l2, with: key, context: binding)
        #expect(wrapped.mechanism == construction.mechanism && wrapped.blob.count == construction.blobBytes)
        #expect(try await token.unwrap(wrapped, with: key, context: binding).isEqual(to: l2))
        // A fresh IV every time: the same key wraps to another blob.
        #expect(try await token.wrap(l2, with: key, context: binding).blob != wrapped.blob)
        // Another tenant or L2Ref: refused.
        await #expect(throws: KeystoreError(.invalidInput, "")) {
            try await token.unwrap(wrapped, with: key, context: BindingContext(tenant: "t2", l2Ref: "l2-a"))
        }
        // Made without a binding, unwrapped without one.
        let plain = try await token.wrap(l2, with: key)
        #expect(try await token.unwrap(plain, with: key).isEqual(to: l2))
        let generated = try await token.generateWrappedKey(with: key, context: binding)
        #expect(try await token.unwrap(generated, with: key, context: binding).count == 32)
    }

    /// Every byte of a blob flipped in turn (IV, ciphertext, padding block), a cut blob, another
    /// mechanism's name: each is refused as invalid input, never returned as a key.
    @Test(arguments: constructions)
    func aTamperedBlobIsRefused(_ construction: (version: String, mechanism: String, blobBytes: Int)) async throws {
        let key = try await KMIPFixture.makeKey("l1-tamper-\(construction.version)")
        let token = try KMIPFixture.token(version: construction.version)
        let binding = BindingContext(tenant: "t", l2Ref: "x")
        let wrapped = try await token.wrap(SecretBytes.random(count: 32), with: key, context: binding)
        #expect(wrapped.mechanism == construction.mechanism)
        for index in stride(from: 0, to: wrapped.blob.count, by: 5) {
            var blob = wrapped.blob
            blob[index] ^= 0x01
            await #expect(throws: KeystoreError(.invalidInput, ""), "byte \(index)") {
                try await token.unwrap(WrappedKey(mechanism: wrapped.mechanism, blob: blob), with: key, context: binding)
            }
        }
        await #expect(throws: KeystoreError(.invalidInput, "")) {
            try await token.unwrap(WrappedKey(mechanism: wrapped.mechanism, blob: Array(wrapped.blob.dropLast(16))), with: key, context: binding)
        }
        await #expect(throws: KeystoreError(.invalidInput, "")) {
            try await token.unwrap(WrappedKey(mechanism: "CKM_AES_KEY_WRAP_PAD", blob: wrapped.blob), with: key, context: binding)
        }
    }

    @Test func anUnknownKeyIsNotFoundInTheReport() async throws {
        let report = try await KMIPFixture.token().probe(.kmip(try KMIPKeyReference(uniqueIdentifier: "no-such-key-4711")))
        #expect(!report.passed && report.failure?.code == .notFound, "\(report)")
        #expect(report.checks.last?.name == "key_found" && report.failure?.reason.contains("no such object") == true)
    }

    @Test func aPreActiveKeyAndOneWithoutDecryptAreRefusedInWords() async throws {
        let token = try KMIPFixture.token()
        let preActive = await token.probe(try await KMIPFixture.makeKey("l1-pre", activate: false))
        #expect(!preActive.passed && preActive.checks.last?.name == "key_state" && preActive.failure?.reason.contains("Pre-Active") == true, "\(preActive)")
        let encryptOnly = await token.probe(try await KMIPFixture.makeKey("l1-enc", usage: [.encrypt]))
        #expect(!encryptOnly.passed && encryptOnly.checks.last?.name == "key_usage" && encryptOnly.failure?.code == .permissionDenied, "\(encryptOnly)")
    }

    /// The owner's KMIP Revoke at their server is their kill-switch: the probe and every
    /// unwrap refuse the key from then on, saying so, though KMIP would let a Deactivated key decrypt.
    @Test(arguments: [KMIP.RevocationReasonCode.cessationOfOperation, .keyCompromise])
    func afterKMIPRevokeTheProbeAndUnwrapRefuse(_ reason: KMIP.RevocationReasonCode) async throws {
        let key = try await KMIPFixture.makeKey("l1-revoke-\(reason.rawValue)")
        let token = try KMIPFixture.token()
        let binding = BindingContext(tenant: "t", l2Ref: "r")
        let wrapped = try await token.wrap(SecretBytes.random(count: 32), with: key, context: binding)
        try await token.revoke(key, reason: reason)
        let words = reason == .keyCompromise ? "Compromised" : "Deactivated"
        let report = await token.probe(key)
        #expect(!report.passed && report.checks.last?.name == "key_state" && report.failure?.code == .conflict, "\(report)")
        #expect(report.failure?.reason.contains(words) == true, "\(report)")
        await #expect { try await token.unwrap(wrapped, with: key, context: binding) } throws: {
            ($0 as? KeystoreError)?.code == .conflict && "\($0)".contains(words)
        }
        await #expect(throws: KeystoreError(.conflict, "")) { try await token.wrap(SecretBytes.random(count: 32), with: key, context: binding) }
    }

    @Test func anUntrustedClientCertificateIsRefusedClearly() async throws {
        let key = try await KMIPFixture.makeKey("l1-rogue")
        let rogue = try KMIPFixture.token(certificate: KMIPFixture.rogueClient)
        let report = await rogue.probe(key)
        #expect(!report.passed && report.checks.last?.name == "connection" && report.failure?.code == .unavailable, "\(report)")
        #expect(report.failure?.reason.contains("client certificate") == true, "\(report)")
        let status = await rogue.status()
        #expect(status.state == .unavailable && status.reason?.contains("client certificate") == true, "\(status)")
    }

    @Test func aServerCertificateFromAnotherCAIsRefused() async throws {
        let key = try await KMIPFixture.makeKey("l1-ca")
        let report = try await KMIPFixture.token(caFile: KMIPFixture.rogueCA.certificatePath).probe(key)
        #expect(!report.passed && report.failure?.code == .unavailable && report.failure?.reason.contains("does not chain to the configured CA") == true,
                "\(report)")
    }

    /// Another client of the same CA is let in, but the default policy gives it none of the
    /// gateway's keys: permission denied (PyKMIP) or not found, never a wrap.
    @Test func anotherClientIdentityCannotUseTheKey() async throws {
        let key = try await KMIPFixture.makeKey("l1-owned")
        let report = try await KMIPFixture.token(certificate: KMIPFixture.otherClient).probe(key)
        #expect(!report.passed && [.permissionDenied, .notFound].contains(report.failure?.code), "\(report)")
    }

    @Test func aServerThatIsDownIsUnavailable() async throws {
        let port = try LoopbackPort.free()
        let token = try KMIPFixture.token(port: port)
        let report = await token.probe(.kmip(try KMIPKeyReference(uniqueIdentifier: "1")))
        #expect(!report.passed && report.checks.last?.name == "connection" && report.failure?.code == .unavailable, "\(report)")
        #expect(report.failure?.reason.contains("unreachable") == true, "\(report)")
        await #expect(throws: KeystoreError(.unavailable, "")) {
            try await token.unwrap(WrappedKey(mechanism: "KMIP_AES_CBC_PAD_SHA256", blob: [UInt8](repeating: 0, count: 96)), with: .kmip(try KMIPKeyReference(uniqueIdentifier: "1")))
        }
        #expect(await token.status().state == .unavailable)
    }

    /// A server that accepts TCP and then says nothing (no TLS, no answer): the request bound
    /// ends the wait, as `unavailable`, well before a test's patience.
    @Test func aServerThatNeverAnswersIsBoundedByTheRequestTime() async throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && listen(fd, 8) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        #expect(bound)
        var configuration = KMIPFixture.configuration(port: Int(UInt16(bigEndian: address.sin_port)), version: "1.2")
        configuration.requestTimeoutMilliseconds = 300
        let token = try KMIPToken(name: "silent", configuration: configuration)
        let start = ContinuousClock.now
        let report = await token.probe(.kmip(try KMIPKeyReference(uniqueIdentifier: "1")))
        #expect(!report.passed && report.checks.last?.name == "connection" && report.failure?.code == .unavailable
                && report.failure?.reason.contains("did not answer in time") == true, "\(report)")
        #expect(ContinuousClock.now - start < .seconds(5))
    }

    @Test func negotiatesTheHighestVersionAndHonoursAConfiguredOne() async throws {
        let key = try await KMIPFixture.makeKey("l1-version")
        let negotiated = try KMIPFixture.token()
        let versions = try await negotiated.client.discoverVersions(KMIP.ProtocolVersion.supported)
        #expect(versions.contains(.init(1, 2)))
        #expect(await negotiated.probe(key).checks.contains { $0.name == "connection" && $0.detail.contains("KMIP \(versions.first!)") })
        for (text, mechanism) in [("1.2", "KMIP_AES_CBC_PAD_SHA256"), ("1.4", "KMIP_AES_GCM")] {
            let token = try KMIPFixture.token(version: text)
            let report = await token.probe(key)
            #expect(report.passed && report.mechanism == mechanism && report.checks.contains { $0.detail.contains("KMIP \(text)") }, "\(report)")
        }
    }

    @Test func listsTheSymmetricKeysWithWhyNot() async throws {
        let good = try await KMIPFixture.makeKey("l1-list-good")
        let pre = try await KMIPFixture.makeKey("l1-list-pre", activate: false)
        let token = try KMIPFixture.token()
        let list = try await token.keyList(limit: KeyList.maxKeys)
        #expect(!list.truncated)
        let byURI = Dictionary(list.keys.map { ($0.uri, $0) }, uniquingKeysWith: { first, _ in first })
        #expect(byURI[good.description]?.usableAsL1 == true && byURI[good.description]?.label == "l1-list-good" && byURI[good.description]?.bits == 256)
        #expect(byURI[pre.description]?.usableAsL1 == false && byURI[pre.description]?.state == "Pre-Active" && byURI[pre.description]?.reason != nil)
        let cut = try await token.keyList(limit: 1)
        #expect(cut.keys.count == 1 && cut.truncated)
    }

    /// Many wraps at once over the small pool: all succeed, and no connection stays beyond the idle bound.
    @Test func concurrentWrapsShareTheConnectionPool() async throws {
        let key = try await KMIPFixture.makeKey("l1-pool")
        let token = try KMIPFixture.token()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<12 {
                group.addTask {
                    let l2 = SecretBytes.random(count: 32)
                    let binding = BindingContext(tenant: "t", l2Ref: "\(index)")
                    let blob = try await token.wrap(l2, with: key, context: binding)
                    #expect(try await token.unwrap(blob, with: key, context: binding).isEqual(to: l2))
                }
            }
            try await group.waitForAll()
        }
        #expect(token.client.idle.withLockedValue { $0.count } <= KMIPClient.maxIdleConnections)
    }

    /// Figures for Docs/Benchmarks.md, not a timed test: runs only with CMK_KMIP_BENCH set
    /// (`CMK_KMIP_BENCH=1 swift test --skip-build --filter KMIPTokenTests/latencyFigures`), prints
    /// p50/p99 of sequential probes, wraps and unwraps on one token (pooled connection), and of a
    /// probe on a fresh token (a new TLS connection and Discover Versions).
    @Test(.enabled(if: ProcessInfo.processInfo.environment["CMK_KMIP_BENCH"] != nil))
    func latencyFigures() async throws {
        let key = try await KMIPFixture.makeKey("l1-bench")
        let token = try KMIPFixture.token()
        let binding = BindingContext(tenant: "bench", l2Ref: "l2")
        func measure(_ count: Int, _ body: () async throws -> Void) async rethrows -> (p50: Double, p99: Double) {
            var samples: [Double] = []
            for _ in 0..<count {
                let start = ContinuousClock.now
                try await body()
                samples.append(milliseconds(since: start))
            }
            samples.sort()
            return (samples[count / 2], samples[min(count - 1, count * 99 / 100)])
        }
        _ = await token.probe(key)
        let l2 = SecretBytes.random(count: 32)
        let blob = try await token.wrap(l2, with: key, context: binding)
        let probe = await measure(50) { #expect(await token.probe(key).passed) }
        let cold = try await measure(20) {
            let fresh = try KMIPFixture.token()
            #expect(await fresh.probe(key).passed)
        }
        let wrap = try await measure(300) { _ = try await token.wrap(l2, with: key, context: binding) }
        let unwrap = try await measure(300) { _ = try await token.unwrap(blob, with: key, context: binding) }
        let state = try await measure(300) { _ = try await token.client.attributes(of: "\(key.description.dropFirst(5))", ["State"], version: .init(1, 4)) }
        print(String(format: "KMIP latency (ms) p50/p99: probe %.2f/%.2f, probe on a new token %.2f/%.2f, wrap %.2f/%.2f, unwrap %.2f/%.2f, Get Attributes(State) %.2f/%.2f",
                     probe.p50, probe.p99, cold.p50, cold.p99, wrap.p50, wrap.p99, unwrap.p50, unwrap.p99, state.p50, state.p99))
    }
}
