import Audit
import AuditFormat
import CMKCore
import Crypto
import Foundation
public import KSI
import Logging
import Metrics
import NIOConcurrencyHelpers
import Orbital
import PKCS11
public import Registry

/// The BYOK/HYOK handshake: a key reference checked, the L1 key probed, the link recorded and
/// the tenant's L2 made, held only wrapped.
extension Gateway {
    // MARK: Handshake

    public struct HandshakeRequest: Codable, Sendable {
        public var provider: String
        public var keystore: String
        public var key: String

        public init(provider: String, keystore: String, key: String) {
            (self.provider, self.keystore, self.key) = (provider, keystore, key)
        }
    }

    /// The BYOK/HYOK handshake: probe the L1 key; on success record the link and make the
    /// tenant's L2, held only wrapped. On failure, record the attempt and nothing else.
    public func handshake(tenantID: String, _ request: HandshakeRequest, by context: AuditContext) async throws -> (L1Link, L2Key) {
        let keystore = try handshakeKeystore(request)
        return try await keystore.run { try await handshake(tenantID: tenantID, request, keystore: keystore, by: context) }
    }

    /// The handshake's probe alone, for the portal's wizard: the same checks in the same order
    /// and the same report, an audited L1 request, but nothing is linked or recorded as an
    /// attempt. A failed probe is a result (the report says why), not an error.
    public func validate(tenantID: String, _ request: HandshakeRequest, by context: AuditContext) async throws -> ProbeReport {
        let keystore = try handshakeKeystore(request)
        return try await keystore.run {
            let (l1, reference) = try await handshakeTarget(tenantID: tenantID, request, keystore: keystore)
            return try await l1Request("probe", l1, by: context) { await keystore.token.probe(reference) }
        }
    }

    private func handshakeKeystore(_ request: HandshakeRequest) throws -> ConfiguredKeystore {
        guard let provider = Provider(rawValue: request.provider) else {
            throw DomainError(.unsupportedProvider,
                           "provider \"\(request.provider)\" is not known; supported: \(Provider.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let keystore = try keystore(request.keystore)
        guard keystore.provider == provider else {
            throw DomainError(.unsupportedProvider,
                           "keystore \(keystore.id) is \(keystore.provider.displayName) (\(keystore.provider.rawValue)), not \(provider.rawValue)")
        }
        return keystore
    }

    /// What the handshake checks before it touches the token: the tenant exists, the key
    /// reference is acceptable, and the tenant has no active link.
    private func handshakeTarget(tenantID: String, _ request: HandshakeRequest,
                                 keystore: ConfiguredKeystore) async throws -> (L1Target, KeyReference) {
        _ = try await registry.tenant(tenantID)
        let reference = try Self.keyReference(request.key, keystore: keystore)
        // Refuse before touching the HSM: the registry enforces it again in its transaction.
        let links = try await registry.links(tenantID: tenantID, limit: 500, after: nil).items
        if links.contains(where: { $0.state == .linked || $0.state == .pendingValidation }) {
            throw DomainError(.conflict, "tenant \(tenantID) already has an active L1 link; revoke it first")
        }
        if let restorable = links.first(where: { $0.state.isRestorable }) {
            throw DomainError(.linkRestorable,
                           "tenant \(tenantID) has revoked link \(restorable.id), whose L2 (and the data under it) can be restored with L1: restore it (POST …/l1-links/\(restorable.id)/restore), or shred it before linking a new key")
        }
        return (L1Target(tenant: tenantID, keystore: keystore.id, key: reference), reference)
    }

    private func handshake(tenantID: String, _ request: HandshakeRequest, keystore: ConfiguredKeystore,
                           by context: AuditContext) async throws -> (L1Link, L2Key) {
        let (l1, reference) = try await handshakeTarget(tenantID: tenantID, request, keystore: keystore)
        let report = try await l1Request("probe", l1, by: context) { await keystore.token.probe(reference) }
        let reportJSON = Self.json(report)
        try await registry.recordAttempt(HandshakeAttempt(
            id: UUID().uuidString.lowercased(), tenantID: tenantID, provider: request.provider, keystoreID: keystore.id,
            keyReference: reference.description, passed: report.passed, failureCode: report.failure?.code.rawValue,
            failureReason: report.failure?.reason, at: Date()))
        guard report.passed else {
            throw DomainError(.probeFailed, "the handshake probe failed: \(report.failure?.reason ?? "unknown reason")",
                           details: report)
        }
        let l2 = try await makeL2(l1, on: keystore, by: context)
        return try await registry.createLink(tenantID: tenantID, provider: request.provider, keystoreID: keystore.id,
                                             keyReference: reference.description, probeReport: reportJSON, probedAt: Date(), l2: l2)
    }

    /// Accepts a reference to a key on the keystore, of the keystore's kind. A PKCS#11 URI may
    /// not name a module or a PIN (the keystore's profile provides them), so an API caller
    /// cannot make the server load a library or read a file of their choice; an Azure key URI
    /// must name the configured vault, so a caller cannot send the server's credentials
    /// elsewhere. Cloud endpoints always come from the configuration.
    package static func keyReference(_ text: String, keystore: ConfiguredKeystore) throws -> KeyReference {
        guard text.count <= 2048 else { throw DomainError.invalidInput("the key reference is longer than 2048 characters") }
        let reference = try KeyReference(parsing: text)
        guard reference.provider == keystore.provider else {
            throw DomainError.invalidInput("keystore \(keystore.id) is \(keystore.provider.displayName): expected \(Self.referenceForm(keystore.provider)), not \(reference.provider.displayName)'s")
        }
        switch reference {
        case .pkcs11(var uri):
            if uri.modulePath != nil || uri.moduleName != nil || uri.pinSource != nil || uri.pinValue != nil {
                throw DomainError.invalidInput("the key reference may not name a module or a PIN: the keystore's profile provides them")
            }
            if uri.token == nil && uri.serial == nil { uri.token = keystore.profile?.token.label }
            if uri.serial == nil, uri.token == nil { uri.serial = keystore.profile?.token.serial }
            if uri.type == nil { uri.type = "secret-key" }
            return .pkcs11(uri)
        case .azureKeyVault(let key):
            if let vault = (keystore.token as? any VaultBound)?.vault, vault != key.vault {
                throw DomainError.invalidInput("the key URI names \(key.vault), but keystore \(keystore.id) is the vault \(vault)")
            }
            return reference
        case .awsKMS, .gcpKMS, .kmip:
            return reference
        }
    }

    package static func referenceForm(_ provider: Provider) -> String {
        switch provider {
        case .pkcs11: return "a PKCS#11 URI (pkcs11:object=…)"
        case .awsKMS: return "a key ARN, alias ARN, alias/<name> or key id"
        case .gcpKMS: return "a CryptoKey name (projects/…/cryptoKeys/…)"
        case .azureKeyVault: return "a key URI (https://<vault>/keys/<name>[/<version>])"
        case .kmip: return "a KMIP key (kmip:<unique identifier>)"
        }
    }

    /// The L2: made inside the token when the L1 key and the current IVK share it (the
    /// plaintext never leaves the token); otherwise generated on the L1 token, wrapped there,
    /// and carried to the platform token in wiped memory to be wrapped by the IVK. The sovereign
    /// binding is then sealed under the IVK (AES-GCM, bound to tenant and L2Ref).
    /// A cloud KMS makes the L2 itself and returns it only wrapped, bound to tenant and L2Ref
    /// (GenerateDataKeyWithoutPlaintext, or the provider's equivalent); the gateway then
    /// unwraps it once, with the same binding, to make the IVK-wrapped active binding.
    package func makeL2(_ target: L1Target, on keystore: ConfiguredKeystore, by context: AuditContext) async throws -> NewL2 {
        let (tenantID, l1) = (target.tenant, target.key)
        guard let ivk = try await registry.currentIVK() else {
            throw DomainError(.notReady, "no IVK version exists yet")
        }
        let ivkReference = try KeyReference(parsing: ivk.keyReference)
        let l2Ref = UUID().uuidString.lowercased()
        let sovereign: WrappedKey
        let active: WrappedKey
        if let cloud = keystore.token as? any ContextBindingKeystore {
            let binding = BindingContext(tenant: tenantID, l2Ref: l2Ref)
            sovereign = try await l1Request("generate_l2", target, by: context) { try await cloud.generateWrappedKey(with: l1, context: binding) }
            let material = try await l1Request("unwrap", target, mechanism: sovereign.mechanism, by: context) {
                try await cloud.unwrap(sovereign, with: l1, context: binding)
            }
            active = try await measured("wrap") { try await platform.wrap(material, with: ivkReference) }
        } else if let token = keystore.pkcs11, token.configuration.modulePath == platform.configuration.modulePath, platform.holds(l1) {
            (sovereign, active) = try await l1Request("generate_l2", target, by: context) {
                try await platform.generateL2(wrappedBy: l1, and: ivkReference)
            }
        } else if let token = keystore.token as? any WrappedKeyGenerating {
            sovereign = try await l1Request("generate_l2", target, by: context) { try await token.generateWrappedKey(with: l1) }
            let material = try await l1Request("unwrap", target, mechanism: sovereign.mechanism, by: context) {
                try await token.unwrap(sovereign, with: l1)
            }
            active = try await measured("wrap") { try await platform.wrap(material, with: ivkReference) }
        } else {
            throw DomainError(.keystoreUnsupported, "keystore \(keystore.id) cannot make a wrapped key")
        }
        let sealed = try await measured("seal") {
            try await platform.seal(sovereign.blob, with: ivkReference, aad: Self.sovereignAAD(tenantID: tenantID, l2Ref: l2Ref))
        }
        return NewL2(id: l2Ref, sovereignBinding: Data(sealed), sovereignMechanism: sovereign.mechanism, sovereignIVKVersion: ivk.version,
                     activeBinding: Data(active.blob), activeMechanism: active.mechanism, activeIVKVersion: ivk.version)
    }

    /// Binds a sealed sovereign binding to its record: moved to another tenant or L2, it does not open.
    package static func sovereignAAD(tenantID: String, l2Ref: String) -> [UInt8] {
        Array("openkcm/sovereign-binding/v1|\(tenantID)|\(l2Ref)".utf8)
    }

    /// The sovereign binding as L1 wrapped it: opens the seal with the IVK version that made it.
    public func sovereignBinding(of l2: L2Key) async throws -> WrappedKey {
        guard let sealed = l2.sovereignBinding, let mechanism = l2.sovereignMechanism, let ivkVersion = l2.sovereignIVKVersion else {
            throw DomainError(.linkShredded, "the L2 key \(l2.id) was shredded: its sovereign binding no longer exists")
        }
        let blob = try await platform.open(Array(sealed), with: try await ivkReference(version: ivkVersion),
                                           aad: Self.sovereignAAD(tenantID: l2.tenantID, l2Ref: l2.id))
        return WrappedKey(mechanism: mechanism, blob: blob)
    }

    /// The key of IVK version `version` on the platform token.
    package func ivkReference(version: Int) async throws -> KeyReference {
        guard let found = try await registry.ivkVersions().first(where: { $0.version == version }) else {
            throw DomainError(.internal, "IVK version \(version) is missing")
        }
        return try KeyReference(parsing: found.keyReference)
    }
}
