import CloudKMS
import CMKCore
import KSI
import NIOConcurrencyHelpers
import Testing
import TestSupport

/// What the cloud drivers share, at unit speed: the access-token cache on a manual clock (no
/// waiting an hour for a token to age), and the probe's round trip against the in-memory
/// keystore (no moto, drongo or vault fake), failing the ways a KMS fails.
struct CloudTokenSupportTests {
    @Test func anAccessTokenIsReusedUntilAMinuteBeforeItExpires() async throws {
        let clock = ManualClock()
        let cache = BearerCache(clock: clock.wall)
        let fetched = NIOLockedValueBox(0)
        let fetch: () async throws -> (token: String, lifetime: Int) = {
            let count = fetched.withLockedValue { $0 += 1; return $0 }
            return ("token-\(count)", 3600)
        }
        #expect(try await cache.token(fetch) == "token-1")
        clock.advance(by: .seconds(3600 - 61))
        #expect(try await cache.token(fetch) == "token-1", "61 seconds before expiry: still reused")
        clock.advance(by: .seconds(1))
        #expect(try await cache.token(fetch) == "token-2", "a minute before expiry: renewed")
        #expect(try await cache.token(fetch) == "token-2")
        #expect(fetched.withLockedValue { $0 } == 2)
    }

    @Test func aRefusedRenewalIsNotCachedAndTheNextCallTriesAgain() async throws {
        struct Refused: Error {}
        let clock = ManualClock()
        let cache = BearerCache(clock: clock.wall)
        _ = try await cache.token { ("short", 90) }
        clock.advance(by: .seconds(31))
        await #expect(throws: Refused.self) { try await cache.token { throw Refused() } }
        #expect(try await cache.token { ("fresh", 3600) } == "fresh")
    }

    /// A cloud probe's round trip on the in-memory keystore standing in for the KMS.
    func roundTrip(_ kms: InMemoryToken, _ key: KeyReference,
                   otherBinding: (check: String, refused: String, accepted: String, unwrap: (WrappedKey) async throws -> Void)? = nil) async -> ProbeReport {
        var probe = ProbeBuilder(key: key.description, token: "cloud-test", provider: .awsKMS)
        probe.pass("key_found", "found")
        return await probe.roundTrip(wrapped: { "wrapped (\($0.blob.count)-byte blob)" }, unwrapped: "unwrapped",
                                     wrap: { try await kms.wrap($0, with: key) }, unwrap: { try await kms.unwrap($0, with: key) },
                                     otherBinding: otherBinding, kms: "the test KMS")
    }

    @Test func theRoundTripPassesAndNamesEachStep() async {
        let kms = InMemoryToken()
        let key = kms.addKey("l1")
        let report = await roundTrip(kms, key)
        #expect(report.passed && report.failure == nil)
        #expect(report.checks.map(\.name) == ["key_found", "test_key", "wrap", "unwrap", "compare", "cleanup"])
        #expect(report.checks.last?.detail == "nothing was created in the test KMS; the test key was wiped")
        #expect(kms.objectList == ["secret-key|l1|"], "nothing added to the keystore")
    }

    @Test(arguments: [
        (InMemoryToken.Fault.permissionDenied(.wrap), "wrap", KeystoreError.Code.permissionDenied),
        (.permissionDenied(.unwrap), "unwrap", .permissionDenied),
        (.unavailable, "wrap", .unavailable),
        (.unwrapReturnsOtherBytes, "compare", .internal),
    ])
    func aFailingStepEndsTheRoundTripThere(fault: InMemoryToken.Fault, check: String, code: KeystoreError.Code) async {
        let kms = InMemoryToken()
        let key = kms.addKey("l1")
        kms.inject(fault)
        let report = await roundTrip(kms, key)
        #expect(!report.passed)
        #expect(report.checks.last?.name == check && report.checks.last?.passed == false, "\(report.checks)")
        #expect(report.failure?.code == code, "\(String(describing: report.failure))")
    }

    @Test func aBlobMustNotOpenUnderAnotherBinding() async {
        let kms = InMemoryToken()
        let key = kms.addKey("l1")
        let other = kms.addKey("other-tenant")
        let refusedElsewhere = await roundTrip(kms, key, otherBinding: (
            check: "binding", refused: "refused under another binding", accepted: "opened under another binding",
            unwrap: { _ = try await kms.unwrap($0, with: other) }))
        #expect(refusedElsewhere.passed)
        #expect(refusedElsewhere.checks.first { $0.name == "binding" }?.detail == "refused under another binding")

        let openedElsewhere = await roundTrip(kms, key, otherBinding: (
            check: "binding", refused: "refused under another binding", accepted: "opened under another binding",
            unwrap: { _ = try await kms.unwrap($0, with: key) }))
        #expect(!openedElsewhere.passed && openedElsewhere.checks.last?.name == "binding")
        #expect(openedElsewhere.failure?.code == .unsupported && openedElsewhere.failure?.reason == "opened under another binding")
    }
}

/// The listing's pagination at unit speed: pages followed to the end, bounded in keys and pages,
/// and a KMS that repeats its page token stopped instead of looped.
struct PaginationTests {
    @Test func pagesAreFollowedToTheEndAnEmptyTokenEndingTheList() async throws {
        let pages = [["a", "b"], ["c", "d"], ["e"]]
        let all = try await paginated("test", limit: 100) { token in
            let index = Int(token ?? "0")!
            return (pages[index], index + 1 < pages.count ? String(index + 1) : "")
        }
        #expect(all.items == ["a", "b", "c", "d", "e"] && !all.truncated)
    }

    @Test func theListingStopsAtItsBoundsAndSaysSo() async throws {
        let endless: @Sendable (String?) async throws -> (items: [Int], next: String?) = { token in
            let index = Int(token ?? "0")!
            return ([index * 3, index * 3 + 1, index * 3 + 2], String(index + 1))
        }
        let byPages = try await paginated("test", limit: 1000, maxPages: 4, endless)
        #expect(byPages.truncated && byPages.items == Array(0..<12))
        let byKeys = try await paginated("test", limit: 7, endless)
        #expect(byKeys.truncated && byKeys.items == Array(0..<7))
        // Exactly the bound on the last page: complete.
        let exact = try await paginated("test", limit: 3) { _ in ([1, 2, 3], nil) }
        #expect(!exact.truncated && exact.items == [1, 2, 3])
    }

    @Test func aRepeatedPageTokenIsAnErrorNotALoop() async throws {
        await #expect(throws: KeystoreError(.unavailable, "")) {
            _ = try await paginated("Key Vault list keys", limit: 1000) { _ in (["x"], "same") }
        }
    }

    @Test func boundedMapKeepsTheOrder() async throws {
        let doubled = try await boundedMap(Array(0..<50), width: 3) { value in
            try await Task.sleep(for: .milliseconds(Int.random(in: 0...3)))
            return value * 2
        }
        #expect(doubled == (0..<50).map { $0 * 2 })
    }
}
