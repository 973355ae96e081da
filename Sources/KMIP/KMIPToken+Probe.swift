import CloudKMS
public import KSI

extension KMIPToken {
    /// The key's attributes as the probe and the listing read them.
    struct KeyFacts: Sendable {
        var objectType: UInt32?
        var algorithm: UInt32?
        var bits: Int32?
        var usage: KMIP.UsageMask
        var state: UInt32?
        var name: String?

        init(_ attributes: [String: TTLV]) {
            objectType = attributes["Object Type"]?.enumeration
            algorithm = attributes["Cryptographic Algorithm"]?.enumeration
            bits = attributes["Cryptographic Length"]?.integer
            usage = KMIP.UsageMask(rawValue: attributes["Cryptographic Usage Mask"]?.integer ?? 0)
            state = attributes["State"]?.enumeration
            name = attributes["Name"]?[.nameValue]?.text
        }

        /// Why the key cannot be an L1 key, in the probe's order and words; nil if it can.
        func refusal() -> (check: String, error: KeystoreError)? {
            guard objectType == KMIP.ObjectType.symmetricKey.rawValue, algorithm == KMIP.aes else {
                return ("key_type", KeystoreError(.unsupported, "the object is not an AES symmetric key (object type \(objectType.map(String.init) ?? "?"), "
                                                  + "algorithm \(algorithm.map(String.init) ?? "?")); an L1 key must be AES"))
            }
            if let state, state != KMIP.State.active.rawValue {
                return ("key_state", KMIPToken.stateError(KMIP.State(rawValue: state), raw: state))
            } else if state == nil {
                return ("key_state", KeystoreError(.unsupported, "the KMIP server did not report the key's State"))
            }
            guard usage.contains([.encrypt, .decrypt]) else {
                return ("key_usage", KeystoreError(.permissionDenied, "the key's Cryptographic Usage Mask (0x\(String(usage.rawValue, radix: 16))) lacks Encrypt and Decrypt; "
                                                   + "the wraps are KMIP Encrypt and Decrypt, so the key needs both"))
            }
            return nil
        }
    }

    /// Discover Versions (or the configured version) over mutual TLS, Get Attributes (type AES,
    /// state Active, usage Encrypt and Decrypt), the construction new wraps will use, then a
    /// wrap/unwrap round trip of a random test key and an unwrap under another binding that
    /// must fail. Nothing is created on the server.
    public func probe(_ key: KeyReference) async -> ProbeReport {
        var probe = ProbeBuilder(key: key.description, token: name, provider: .kmip)
        let id: String
        do {
            id = try identifier(key)
            probe.pass("key_reference", "unique identifier \(id)")
        } catch {
            return probe.failed("key_reference", error)
        }
        let version: KMIP.ProtocolVersion
        do {
            version = try await kmip { version in
                // With a configured version nothing was exchanged yet: one Discover Versions
                // proves TLS both ways (a 1.0 server refusing the operation has answered too).
                if configuredVersion != nil {
                    do { _ = try await client.discoverVersions([version]) } catch let error as KMIPError where error.isOperationFailure {}
                }
                return version
            }
            probe.pass("connection", "mutual TLS to \(server), KMIP \(version)")
        } catch {
            return probe.failed("connection", error)
        }
        let facts: KeyFacts
        do {
            facts = KeyFacts(try await kmip { try await client.attributes(of: id, Self.stateAttributes, version: $0) })
            probe.pass("key_found", "found \(id)" + (facts.name.map { " (\($0))" } ?? ""))
        } catch {
            return probe.failed("key_found", error)
        }
        if let (check, error) = facts.refusal() { return probe.failed(check, error) }
        probe.pass("key_type", "AES-\(facts.bits.map(String.init) ?? "?") symmetric key")
        probe.pass("key_state", "Active")
        probe.pass("key_usage", "Encrypt and Decrypt permitted")
        do {
            let chosen = try await kmip { try await construction(for: id, version: $0) }
            probe.mechanism = chosen.rawValue
            probe.pass("mechanism", chosen == .gcm ? "AES-GCM with a 16-byte tag (the server authenticates)"
                                                   : "AES-CBC-PAD with a SHA-256 digest inside (no authenticated GCM at this server or version)")
        } catch {
            return probe.failed("mechanism", error)
        }
        let binding = BindingContext(tenant: "probe", l2Ref: KMIPToken.random(8).map { String($0, radix: 16) }.joined())
        return await probe.roundTrip(
            wrapped: { "KMIP Encrypt (\($0.blob.count)-byte blob)" }, unwrapped: "KMIP Decrypt, digest or tag checked",
            wrap: { try await self.wrap($0, with: key, context: binding) }, unwrap: { try await self.unwrap($0, with: key, context: binding) },
            otherBinding: ("binding", "an unwrap for another tenant and L2 key is refused",
                           "an unwrap for another binding succeeded: the blob would not be bound to its tenant and L2Ref",
                           { _ = try await self.unwrap($0, with: key, context: BindingContext(tenant: "other", l2Ref: binding.l2Ref)) }),
            kms: "the KMIP server")
    }
}
