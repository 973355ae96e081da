public import CMKCore
import Foundation
public import KSI
import NIOConcurrencyHelpers

/// A cloud token's health without a request per look (D67): the credentials can be read, and
/// the last call's outcome.
public final class KeystoreHealth: Sendable {
    let lastError = NIOLockedValueBox<KeystoreError?>(nil)

    public init() {}

    public func succeeded() { lastError.withLockedValue { $0 = nil } }

    /// Keeps failures that say something about the keystore (unreachable, credentials refused),
    /// not about one key or blob.
    public func failed(_ error: KeystoreError, keystoreWide: Bool) {
        if keystoreWide { lastError.withLockedValue { $0 = error } }
    }

    public func status(name: String, provider: Provider, credentials: () throws -> Void, label: String?, manufacturer: String,
                       model: String, mechanisms: [String]) -> TokenStatus {
        var state = TokenStatus.State.available
        var reason: String?
        do { try credentials() } catch let error as KeystoreError {
            (state, reason) = (.loginRefused, error.reason)
        } catch {
            (state, reason) = (.loginRefused, "the credentials cannot be read")
        }
        if state == .available, let error = lastError.withLockedValue({ $0 }) {
            state = error.code == .permissionDenied ? .loginRefused : .unavailable
            reason = "the last call failed: \(error.reason)"
        }
        return TokenStatus(name: name, provider: provider, state: state, reason: reason, label: label,
                           manufacturer: manufacturer, model: model, wrapMechanisms: mechanisms)
    }
}

/// An OAuth2 access token, reused until a minute before it expires (on `clock`).
public final class BearerCache: Sendable {
    let cached = NIOLockedValueBox<(token: String, expires: Date)?>(nil)
    let clock: any WallClock

    public init(clock: any WallClock = SystemWallClock()) {
        self.clock = clock
    }

    /// The cached token, or a new one from `fetch` (the token and its lifetime in seconds).
    public func token(_ fetch: () async throws -> (token: String, lifetime: Int)) async throws -> String {
        if let current = cached.withLockedValue({ $0 }), current.expires.timeIntervalSince(clock.now) > 60 { return current.token }
        let (token, lifetime) = try await fetch()
        let fetched = clock.now
        cached.withLockedValue { $0 = (token, fetched.addingTimeInterval(Double(lifetime))) }
        return token
    }
}

extension ProbeBuilder {
    /// The probe's round trip, the same for every cloud KMS: a random test key wrapped and
    /// unwrapped and compared, then (where the KMS binds associated data) unwrapped under
    /// another binding, which must be refused; nothing is created in the KMS.
    public mutating func roundTrip(wrapped describe: (WrappedKey) -> String, unwrapped: String,
                                   wrap: (SecretBytes) async throws -> WrappedKey,
                                   unwrap: (WrappedKey) async throws -> SecretBytes,
                                   otherBinding: (check: String, refused: String, accepted: String, unwrap: (WrappedKey) async throws -> Void)?,
                                   kms: String) async -> ProbeReport {
        let test = SecretBytes.random(count: 32)
        pass("test_key", "random 32-byte test key made in memory (never stored)")
        var step = "wrap"
        do {
            let blob = try await wrap(test)
            pass("wrap", describe(blob))
            step = "unwrap"
            let back = try await unwrap(blob)
            pass("unwrap", unwrapped)
            guard back.isEqual(to: test) else {
                return failed("compare", KeystoreError(.internal, "the unwrapped test key differs from the original"))
            }
            pass("compare", "the unwrapped test key equals the original")
            if let other = otherBinding {
                step = other.check
                do {
                    try await other.unwrap(blob)
                    return failed(other.check, KeystoreError(.unsupported, other.accepted))
                } catch let error as KeystoreError where error.code == .invalidInput {
                    pass(other.check, other.refused)
                }
            }
        } catch let error as KeystoreError {
            return failed(step, error)
        } catch {
            return failed("operation", KeystoreError(.internal, "\(type(of: error))"))
        }
        pass("cleanup", "nothing was created in \(kms); the test key was wiped")
        return passed()
    }
}
