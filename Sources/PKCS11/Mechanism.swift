import CPKCS11

/// A mechanism with its parameters, as the layer asks for it. The code sent to the module goes
/// through the profile's `MechanismCodes`.
public enum Mechanism: Sendable, Hashable {
    case aesKeyGen
    /// RFC 3394 AES Key Wrap (input a multiple of 8 bytes).
    case aesKeyWrap
    /// RFC 5649 AES Key Wrap with Padding.
    case aesKeyWrapPad
    /// AES-GCM with a 12-byte IV (normally), additional data and a tag length in bits.
    case aesGCM(iv: [UInt8], aad: [UInt8], tagBits: Int)
    case aesECB
    case aesCBCPad(iv: [UInt8])
    case rsaPKCSKeyPairGen
    /// RSA-OAEP with the hash, MGF1 with the same hash, and an optional label.
    case rsaOAEP(hash: OAEPHash, label: [UInt8])
    /// Edwards-curve key pair generation (PKCS#11 3.0; SoftHSM 2.6).
    case ecEdwardsKeyPairGen
    /// Pure EdDSA (Ed25519 without pre-hashing, no parameters).
    case eddsa

    public enum OAEPHash: String, Sendable, Hashable, CaseIterable {
        case sha1, sha256, sha384, sha512

        var mechanism: MechanismType {
            switch self {
            case .sha1: return .sha1
            case .sha256: return .sha256
            case .sha384: return .sha384
            case .sha512: return .sha512
            }
        }

        var mgf: UInt {
            switch self {
            case .sha1: return 0x1
            case .sha256: return 0x2
            case .sha384: return 0x3
            case .sha512: return 0x4
            }
        }
    }

    /// The standard mechanism, before any profile override.
    public var type: MechanismType {
        switch self {
        case .aesKeyGen: return .aesKeyGen
        case .aesKeyWrap: return .aesKeyWrap
        case .aesKeyWrapPad: return .aesKeyWrapPad
        case .aesGCM: return .aesGCM
        case .aesECB: return .aesECB
        case .aesCBCPad: return .aesCBCPad
        case .rsaPKCSKeyPairGen: return .rsaPKCSKeyPairGen
        case .rsaOAEP: return .rsaPKCSOAEP
        case .ecEdwardsKeyPairGen: return .ecEdwardsKeyPairGen
        case .eddsa: return .eddsa
        }
    }

    /// Builds the `CK_MECHANISM` (and its parameter structure) for the duration of `body`.
    func withCKMechanism<R>(
        _ codes: MechanismCodes,
        _ body: (UnsafeMutablePointer<CK_MECHANISM>) throws -> R
    ) throws -> R {
        let code = codes.code(for: type).rawValue
        switch self {
        case .aesKeyGen, .aesKeyWrap, .aesKeyWrapPad, .aesECB, .rsaPKCSKeyPairGen, .ecEdwardsKeyPairGen, .eddsa:
            var mechanism = CK_MECHANISM(mechanism: code, pParameter: nil, ulParameterLen: 0)
            return try body(&mechanism)
        case .aesCBCPad(let iv):
            var ivCopy = iv
            return try ivCopy.withUnsafeMutableBytes { (ivBuffer) throws -> R in
                var mechanism = CK_MECHANISM(mechanism: code, pParameter: ivBuffer.baseAddress, ulParameterLen: UInt(ivBuffer.count))
                return try body(&mechanism)
            }
        case .aesGCM(let iv, let aad, let tagBits):
            var ivCopy = iv
            var aadCopy = aad
            return try ivCopy.withUnsafeMutableBufferPointer { (ivBuffer) throws -> R in
                try aadCopy.withUnsafeMutableBufferPointer { (aadBuffer) throws -> R in
                    var parameters = CK_GCM_PARAMS(
                        pIv: ivBuffer.baseAddress, ulIvLen: UInt(ivBuffer.count), ulIvBits: UInt(ivBuffer.count * 8),
                        pAAD: aadBuffer.count > 0 ? aadBuffer.baseAddress : nil, ulAADLen: UInt(aadBuffer.count),
                        ulTagBits: UInt(tagBits))
                    return try withUnsafeMutablePointer(to: &parameters) { (pointer) throws -> R in
                        var mechanism = CK_MECHANISM(mechanism: code, pParameter: pointer, ulParameterLen: UInt(MemoryLayout<CK_GCM_PARAMS>.size))
                        return try body(&mechanism)
                    }
                }
            }
        case .rsaOAEP(let hash, let label):
            var labelCopy = label
            return try labelCopy.withUnsafeMutableBytes { (labelBuffer) throws -> R in
                var parameters = CK_RSA_PKCS_OAEP_PARAMS(
                    hashAlg: hash.mechanism.rawValue, mgf: hash.mgf,
                    // CKZ_DATA_SPECIFIED is the only source the spec defines; an empty label is
                    // a null pointer with length 0 (SoftHSM refuses source 0).
                    source: 0x1,
                    pSourceData: labelBuffer.count > 0 ? labelBuffer.baseAddress : nil,
                    ulSourceDataLen: UInt(labelBuffer.count))
                return try withUnsafeMutablePointer(to: &parameters) { (pointer) throws -> R in
                    var mechanism = CK_MECHANISM(mechanism: code, pParameter: pointer, ulParameterLen: UInt(MemoryLayout<CK_RSA_PKCS_OAEP_PARAMS>.size))
                    return try body(&mechanism)
                }
            }
        }
    }
}
