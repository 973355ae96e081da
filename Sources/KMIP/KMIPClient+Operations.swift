public import CMKCore
import Foundation

/// The KMIP operations the driver uses, in the KMIP 1.x encoding (1.0–1.4 agree on these;
/// 1.4 adds the authenticated-encryption fields of Encrypt and Decrypt). One batch item per
/// message.
extension KMIPClient {
    /// The request message: header (protocol version, the answer size we accept, one item)
    /// and the batch item.
    public static func requestMessage(_ operation: KMIP.Operation, _ payload: [TTLV], version: KMIP.ProtocolVersion) -> TTLV {
        .structure(.requestMessage, [
            .structure(.requestHeader, [
                .structure(.protocolVersion, [TTLV(.protocolVersionMajor, .integer(version.major)),
                                              TTLV(.protocolVersionMinor, .integer(version.minor))]),
                TTLV(.maximumResponseSize, .integer(Int32(TTLV.Limits.maxMessageBytes))),
                TTLV(.batchCount, .integer(1)),
            ]),
            .structure(.batchItem, [TTLV(.operation, .enumeration(operation.rawValue)), .structure(.requestPayload, payload)]),
        ])
    }

    /// The response payload of a successful answer to `operation`; a failed one throws its
    /// Result Reason and Result Message.
    public static func responsePayload(_ response: TTLV, for operation: KMIP.Operation) throws -> TTLV {
        guard response.tag == .responseMessage, let header = response[.responseHeader] else {
            throw KMIPError(.malformed, "the answer is not a Response Message")
        }
        guard header[.batchCount]?.integer == 1 else { throw KMIPError(.malformed, "the answer does not carry exactly one batch item") }
        let items = response.all(.batchItem)
        guard items.count == 1, let item = items.first else { throw KMIPError(.malformed, "the answer does not carry exactly one batch item") }
        if let answered = item[.operation]?.enumeration, answered != operation.rawValue {
            throw KMIPError(.malformed, "the answer is for operation 0x\(String(answered, radix: 16)), not \(operation)")
        }
        guard let status = item[.resultStatus]?.enumeration.flatMap(KMIP.ResultStatus.init(rawValue:)) else {
            throw KMIPError(.malformed, "the answer has no Result Status")
        }
        switch status {
        case .success:
            return item[.responsePayload] ?? .structure(.responsePayload, [])
        case .operationFailed, .operationUndone:
            let reason = item[.resultReason]?.enumeration.flatMap(KMIP.ResultReason.init(rawValue:))
            let message = item[.resultMessage]?.text.map { String($0.prefix(300)) } ?? ""
            throw KMIPError(.operationFailed(operation, reason), "\(reason.map(String.init(describing:)) ?? "no reason")" + (message.isEmpty ? "" : ": \(message)"))
        case .operationPending:
            throw KMIPError(.malformed, "the server answered Operation Pending (asynchronous operations are not used)")
        }
    }

    /// One operation: request, answer, payload.
    public func call(_ operation: KMIP.Operation, _ payload: [TTLV], version: KMIP.ProtocolVersion, idempotent: Bool = true) async throws -> TTLV {
        let answer = try await exchange(Self.requestMessage(operation, payload, version: version), idempotent: idempotent)
        return try Self.responsePayload(answer, for: operation)
    }

    // MARK: Operations

    /// Discover Versions (KMIP 1.1+): the versions of `offered` the server speaks, in its order
    /// of preference. Sent in a 1.1 header, which every 1.1+ server reads.
    public func discoverVersions(_ offered: [KMIP.ProtocolVersion]) async throws -> [KMIP.ProtocolVersion] {
        let payload = offered.map { version in
            TTLV.structure(.protocolVersion, [TTLV(.protocolVersionMajor, .integer(version.major)), TTLV(.protocolVersionMinor, .integer(version.minor))])
        }
        let answer = try await call(.discoverVersions, payload, version: .init(1, 1))
        return answer.all(.protocolVersion).compactMap { item in
            guard let major = item[.protocolVersionMajor]?.integer, let minor = item[.protocolVersionMinor]?.integer else { return nil }
            return KMIP.ProtocolVersion(major, minor)
        }
    }

    static func attribute(_ name: String, _ value: TTLV.Value) -> TTLV {
        .structure(.attribute, [TTLV(.attributeName, .textString(name)), TTLV(.attributeValue, value)])
    }

    /// Create: a new AES key of `bits`, with a name and usage mask; returns its unique identifier.
    /// (Used by the tests acting as the key's owner, and by operators' tooling; the gateway
    /// never makes L1 keys.)
    public func createAESKey(bits: Int32 = 256, name: String, usage: KMIP.UsageMask, version: KMIP.ProtocolVersion) async throws -> String {
        let payload: [TTLV] = [
            TTLV(.objectType, .enumeration(KMIP.ObjectType.symmetricKey.rawValue)),
            .structure(.templateAttribute, [
                Self.attribute("Cryptographic Algorithm", .enumeration(KMIP.aes)),
                Self.attribute("Cryptographic Length", .integer(bits)),
                Self.attribute("Cryptographic Usage Mask", .integer(usage.rawValue)),
                .structure(.attribute, [TTLV(.attributeName, .textString("Name")),
                                        .structure(.attributeValue, [TTLV(.nameValue, .textString(name)), TTLV(.nameType, .enumeration(1))])]),
            ]),
        ]
        let answer = try await call(.create, payload, version: version, idempotent: false)
        guard let id = answer[.uniqueIdentifier]?.text else { throw KMIPError(.malformed, "Create answered without a Unique Identifier") }
        return id
    }

    public func activate(_ id: String, version: KMIP.ProtocolVersion) async throws {
        _ = try await call(.activate, [TTLV(.uniqueIdentifier, .textString(id))], version: version)
    }

    /// Revoke: the key leaves the Active state (Deactivated, or Compromised with `keyCompromise`).
    public func revoke(_ id: String, reason: KMIP.RevocationReasonCode, message: String? = nil, version: KMIP.ProtocolVersion) async throws {
        var revocation = [TTLV(.revocationReasonCode, .enumeration(reason.rawValue))]
        if let message { revocation.append(TTLV(.revocationMessage, .textString(message))) }
        var payload = [TTLV(.uniqueIdentifier, .textString(id)), .structure(.revocationReason, revocation)]
        if reason == .keyCompromise || reason == .caCompromise {
            payload.append(TTLV(.compromiseOccurrenceDate, .dateTime(Int64(Date().timeIntervalSince1970))))
        }
        _ = try await call(.revoke, payload, version: version)
    }

    public func destroy(_ id: String, version: KMIP.ProtocolVersion) async throws {
        _ = try await call(.destroy, [TTLV(.uniqueIdentifier, .textString(id))], version: version, idempotent: false)
    }

    /// Get Attributes (1.x: by name): the values found, by attribute name (the first of each).
    public func attributes(of id: String, _ names: [String], version: KMIP.ProtocolVersion) async throws -> [String: TTLV] {
        let payload = [TTLV(.uniqueIdentifier, .textString(id))] + names.map { TTLV(.attributeName, .textString($0)) }
        let answer = try await call(.getAttributes, payload, version: version)
        var found: [String: TTLV] = [:]
        for attribute in answer.all(.attribute) {
            guard let name = attribute[.attributeName]?.text, let value = attribute[.attributeValue], found[name] == nil else { continue }
            found[name] = value
        }
        return found
    }

    /// Locate: the unique identifiers of the symmetric keys, at most `maximum`.
    public func locateSymmetricKeys(maximum: Int, version: KMIP.ProtocolVersion) async throws -> [String] {
        let payload: [TTLV] = [
            TTLV(.maximumItems, .integer(Int32(maximum))),
            Self.attribute("Object Type", .enumeration(KMIP.ObjectType.symmetricKey.rawValue)),
        ]
        let answer = try await call(.locate, payload, version: version)
        return answer.all(.uniqueIdentifier).compactMap(\.text)
    }

    public struct CipherParameters: Sendable {
        public var mode: KMIP.BlockCipherMode
        public var padding: KMIP.PaddingMethod?
        public var tagLength: Int32?

        public static let cbcPad = CipherParameters(mode: .cbc, padding: .pkcs5, tagLength: nil)
        public static let gcm = CipherParameters(mode: .gcm, padding: nil, tagLength: 16)

        /// In the specification's field order (KMIP 1.4 §2.1.5: Block Cipher Mode, Padding
        /// Method, …, Cryptographic Algorithm, …, Tag Length): servers that read fields in
        /// order (PyKMIP) reject any other as an Invalid Message.
        var encoded: TTLV {
            var fields = [TTLV(.blockCipherMode, .enumeration(mode.rawValue))]
            if let padding { fields.append(TTLV(.paddingMethod, .enumeration(padding.rawValue))) }
            fields.append(TTLV(.cryptographicAlgorithm, .enumeration(KMIP.aes)))
            if let tagLength { fields.append(TTLV(.tagLength, .integer(tagLength))) }
            return .structure(.cryptographicParameters, fields)
        }
    }

    public struct Encrypted: Sendable {
        public var data: [UInt8]
        public var tag: [UInt8]?
    }

    /// Encrypt under the key `id` with the IV we chose (so that the blob does not depend on the
    /// server making one), and for GCM the additional data (KMIP 1.4).
    public func encrypt(_ id: String, _ plaintext: SecretBytes, parameters: CipherParameters, iv: [UInt8], aad: [UInt8]?,
                        version: KMIP.ProtocolVersion) async throws -> Encrypted {
        var payload = [TTLV(.uniqueIdentifier, .textString(id)), parameters.encoded,
                       TTLV(.data, .byteString(plaintext.withUnsafeBytes { Array($0) })), TTLV(.ivCounterNonce, .byteString(iv))]
        if let aad { payload.append(TTLV(.authenticatedEncryptionAdditionalData, .byteString(aad))) }
        let answer = try await call(.encrypt, payload, version: version)
        guard let data = answer[.data]?.bytes else { throw KMIPError(.malformed, "Encrypt answered without Data") }
        return Encrypted(data: data, tag: answer[.authenticatedEncryptionTag]?.bytes)
    }

    /// Decrypt; the plaintext goes into wiped memory.
    public func decrypt(_ id: String, _ ciphertext: [UInt8], parameters: CipherParameters, iv: [UInt8], aad: [UInt8]?, tag: [UInt8]?,
                        version: KMIP.ProtocolVersion) async throws -> SecretBytes {
        var payload = [TTLV(.uniqueIdentifier, .textString(id)), parameters.encoded, TTLV(.data, .byteString(ciphertext)),
                       TTLV(.ivCounterNonce, .byteString(iv))]
        if let aad { payload.append(TTLV(.authenticatedEncryptionAdditionalData, .byteString(aad))) }
        if let tag { payload.append(TTLV(.authenticatedEncryptionTag, .byteString(tag))) }
        let answer = try await call(.decrypt, payload, version: version)
        guard let data = answer[.data]?.bytes else { throw KMIPError(.malformed, "Decrypt answered without Data") }
        return SecretBytes(copying: data)
    }
}
