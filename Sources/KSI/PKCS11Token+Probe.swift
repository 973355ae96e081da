import NIOConcurrencyHelpers
import PKCS11

extension PKCS11Token {
    /// The noop handshake probe.
    ///
    /// Checks, in order: the URI is usable; the token is present; the login succeeds; the key
    /// exists; it is an AES secret key; it has `CKA_WRAP` and `CKA_UNWRAP`; the token can wrap and
    /// unwrap with a preferred mechanism. Then it makes a random AES-256 session key, wraps it
    /// with the L1 key, unwraps the blob into a second session key, encrypts one random block
    /// with both (AES-ECB) and compares, and destroys both keys. Only session objects are made,
    /// and they are destroyed on every path, so the token holds the same objects afterwards
    /// whether the probe passed or failed. A refused PIN is reported and never retried.
    public func probe(_ key: KeyReference) async -> ProbeReport {
        countUse(of: key)
        // The probe's steps run back to back on the token's threads: one hand-off in and one
        // out for the whole probe instead of one per step.
        return await withTaskExecutorPreference(executor) { await probeOnExecutor(key) }
    }

    private func probeOnExecutor(_ key: KeyReference) async -> ProbeReport {
        let start = ContinuousClock.now
        var checks: [ProbeReport.Check] = []

        func finish(_ failure: KeystoreError?, mechanism: String? = nil) -> ProbeReport {
            let elapsed = ContinuousClock.now - start
            let milliseconds = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
            return ProbeReport(
                key: key.description, token: name, provider: .pkcs11, passed: failure == nil, mechanism: mechanism,
                latencyMilliseconds: milliseconds, checks: checks,
                failure: failure.map { ProbeReport.Failure(code: $0.code, reason: $0.reason, detail: $0.detail) })
        }

        let query: ObjectQuery
        do {
            query = try self.query(for: key)
        } catch {
            let failure = error as? KeystoreError ?? KeystoreError(.invalidInput, "the key reference is not usable")
            checks.append(.init("key_reference", passed: false, failure.reason))
            return finish(failure)
        }

        // Token and login, separately, so that the report says which of the two failed.
        do {
            try await pool.connect()
        } catch let error as PKCS11Error {
            let failure = KeystoreError(error)
            if error.recovery == .neverRetry {
                checks.append(.init("token", passed: true, "token \(configuration.token) found"))
                checks.append(.init("login", passed: false, failure.reason))
            } else if error.code == .pinSourceUnavailable {
                checks.append(.init("token", passed: true, "token \(configuration.token) found"))
                checks.append(.init("login", passed: false, failure.reason))
            } else {
                checks.append(.init("token", passed: false, failure.reason))
            }
            return finish(failure)
        } catch {
            checks.append(.init("token", passed: false, "the token could not be reached"))
            return finish(KeystoreError(.unavailable, "the token could not be reached"))
        }
        if let info = pool.tokenInfo {
            checks.append(.init("token", passed: true, "token \"\(info.label)\" (serial \(info.serial), \(info.manufacturer) \(info.model)) is present"))
            if info.loginRequired && configuration.pinSource == nil {
                let failure = KeystoreError(.invalidInput, "the token requires a login and no PIN source is given: add pin-source=file:/path or env:NAME to the URI, or use a profile")
                checks.append(.init("login", passed: false, failure.reason))
                return finish(failure)
            }
            checks.append(.init("login", passed: true, !info.loginRequired ? "the token requires no login"
                                : "logged in as user with the PIN from \(configuration.pinSource.map(String.init(describing:)) ?? "?")"))
        }

        struct Outcome: Sendable {
            var checks: [ProbeReport.Check] = []
            var failure: KeystoreError?
            var mechanism: String?
        }

        do {
            let outcome = try await pool.withSession { [self] session -> Outcome in
                var outcome = Outcome()
                func fail(_ check: String, _ error: KeystoreError) -> Outcome {
                    outcome.checks.append(.init(check, passed: false, error.reason))
                    outcome.failure = error
                    return outcome
                }

                // The key.
                let handle: ObjectHandle
                do {
                    handle = try pool.resolve(query, in: session)
                } catch let error as PKCS11Error where error.code == .objectNotFound {
                    return fail("key_found", KeystoreError(.notFound, Self.explainMissing(query, session: session, token: pool.tokenInfo?.label ?? ""), detail: error.description))
                } catch let error as PKCS11Error where error.code == .ambiguousObject {
                    return fail("key_found", KeystoreError(error))
                }
                outcome.checks.append(.init("key_found", passed: true, "found \(query)"))

                let values = try session.attributes([.class, .keyType, .valueLen, .wrap, .unwrap], of: handle)
                let keyType = values.ulong(.keyType).map(KeyType.init(rawValue:))
                let length = values.ulong(.valueLen) ?? 0
                guard values.ulong(.class) == ObjectClass.secretKey.rawValue, keyType == .aes, [16, 24, 32].contains(length) else {
                    let found = keyType.map(\.description) ?? "an object of unknown type"
                    return fail("key_type", KeystoreError(.unsupported, "the L1 key must be an AES secret key (128, 192 or 256 bits); \(query) is \(found)"))
                }
                outcome.checks.append(.init("key_type", passed: true, "AES-\(length * 8) secret key"))

                let canWrap = values.bool(.wrap) ?? false
                let canUnwrap = values.bool(.unwrap) ?? false
                guard canWrap && canUnwrap else {
                    let missing = [canWrap ? nil : "CKA_WRAP", canUnwrap ? nil : "CKA_UNWRAP"].compactMap { $0 }.joined(separator: " and ")
                    return fail("key_usage", KeystoreError(.permissionDenied, "the key lacks \(missing): the token will not let it wrap and unwrap other keys; create the L1 key with CKA_WRAP=true and CKA_UNWRAP=true"))
                }
                outcome.checks.append(.init("key_usage", passed: true, "CKA_WRAP and CKA_UNWRAP are set"))

                // The mechanism, checked on the token every probe.
                let type: MechanismType
                do {
                    type = try wrapMechanism(in: session)
                } catch let error as KeystoreError {
                    return fail("mechanism", error)
                }
                let code = configuration.codes.code(for: type)
                let info = try session.module.mechanismInfo(code, slot: session.slot)
                guard info.canWrap && info.canUnwrap else {
                    return fail("mechanism", KeystoreError(.unsupported, "the token no longer offers \(type) for wrap and unwrap"))
                }
                let mechanism = try Self.mechanism(type)
                outcome.mechanism = type.name
                let evidence = mechanismEvidence.withLockedValue { $0 }.joined(separator: "; ")
                outcome.checks.append(.init("mechanism", passed: true, (code == type ? "\(type) supported for wrap and unwrap"
                                            : "\(type) (as code 0x\(String(code.rawValue, radix: 16, uppercase: true))) supported for wrap and unwrap")
                                            + (evidence.isEmpty ? "" : " (\(evidence))")))

                // The round trip, on session objects destroyed on every path.
                var made: [ObjectHandle] = []
                defer { for object in made.reversed() { Self.destroy(object, in: session) } }
                let testKey: ObjectHandle
                do {
                    testKey = try session.generateAESKey(bits: 256, token: false, usages: [.encrypt(true)], sensitive: true, extractable: true)
                } catch let error as PKCS11Error {
                    return fail("test_key", KeystoreError(error, context: "generating the AES-256 test key"))
                }
                made.append(testKey)
                outcome.checks.append(.init("test_key", passed: true, "random AES-256 session key generated on the token"))

                let blob: [UInt8]
                do {
                    blob = try session.wrapKey(testKey, with: handle, mechanism: mechanism)
                } catch let error as PKCS11Error {
                    return fail("wrap", KeystoreError(error, context: "wrapping the test key with the L1 key"))
                }
                outcome.checks.append(.init("wrap", passed: true, "test key wrapped with the L1 key (\(blob.count)-byte blob)"))

                let copy: ObjectHandle
                do {
                    copy = try session.unwrapKey(blob, with: handle, mechanism: mechanism, template: unwrapTemplate(Self.sealedSessionKeyTemplate, blobLength: blob.count))
                } catch let error as PKCS11Error {
                    // A refused unwrap may leave an empty object: the session goes, and it with it.
                    session.mustClose = true
                    return fail("unwrap", KeystoreError(error, context: "unwrapping the blob with the L1 key"))
                }
                made.append(copy)
                outcome.checks.append(.init("unwrap", passed: true, "blob unwrapped with the L1 key"))

                let block = try session.generateRandom(count: 16)
                let first = try session.encrypt(block, with: testKey, mechanism: .aesECB)
                let second = try session.encrypt(block, with: copy, mechanism: .aesECB)
                guard first == second else {
                    return fail("compare", KeystoreError(.internal, "the unwrapped key differs from the original: the token's wrap/unwrap does not round-trip"))
                }
                outcome.checks.append(.init("compare", passed: true, "original and unwrapped keys encrypt a random block identically"))

                // Destroy now (not in the defer) so that a failure to clean up is reported.
                do {
                    try session.destroyObject(copy)
                    made.removeLast()
                    try session.destroyObject(testKey)
                    made.removeLast()
                } catch let error as PKCS11Error {
                    session.mustClose = true
                    return fail("cleanup", KeystoreError(error, context: "destroying the probe's session keys"))
                }
                outcome.checks.append(.init("cleanup", passed: true, "both session keys destroyed; nothing left on the token"))
                return outcome
            }
            checks += outcome.checks
            return finish(outcome.failure, mechanism: outcome.mechanism)
        } catch let error as PKCS11Error {
            let failure = KeystoreError(error)
            checks.append(.init(error.recovery == .reinitializeToken ? "token" : "operation", passed: false, failure.reason))
            return finish(failure)
        } catch let error as KeystoreError {
            checks.append(.init("operation", passed: false, error.reason))
            return finish(error)
        } catch {
            checks.append(.init("operation", passed: false, "unexpected error"))
            return finish(KeystoreError(.internal, "unexpected error during the probe"))
        }
    }

    /// Why a key was not found, with what is there instead.
    static func explainMissing(_ query: ObjectQuery, session: Session, token: String) -> String {
        var loose = query
        loose.objectClass = nil
        if let others = try? session.findObjects(loose.template, limit: 4), let other = others.first,
           let info = try? session.info(of: other) {
            return "no secret key matches \(query) on token \"\(token)\"; there is a \(info.objectClass) object with that name: the L1 key must be a secret key"
        }
        return "no key matches \(query) on token \"\(token)\"; list the token's keys with `cmk hsm keys \(token)`"
    }
}
