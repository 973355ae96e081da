import CPKCS11

extension Session {
    /// The DER encoding of the Ed25519 curve's OID (1.3.101.112), for `CKA_EC_PARAMS`.
    public static let ed25519Parameters: [UInt8] = [0x06, 0x03, 0x2B, 0x65, 0x70]

    /// Generates an Ed25519 key pair (`C_GenerateKeyPair`, `CKM_EC_EDWARDS_KEY_PAIR_GEN`);
    /// returns (public, private).
    public func generateEd25519KeyPair(publicTemplate: [Attribute], privateTemplate: [Attribute]) throws -> (ObjectHandle, ObjectHandle) {
        var publicKey: CK_OBJECT_HANDLE = 0
        var privateKey: CK_OBJECT_HANDLE = 0
        let fullPublic = publicTemplate + [.ecParams(Self.ed25519Parameters)]
        try Mechanism.ecEdwardsKeyPairGen.withCKMechanism(codes) { (mech) throws in
            try withCKTemplate(fullPublic) { (publicPointer, publicCount) throws in
                try withCKTemplate(privateTemplate) { (privatePointer, privateCount) throws in
                    try check(functions.C_GenerateKeyPair?(handle, mech, publicPointer, publicCount, privatePointer, privateCount,
                                                           &publicKey, &privateKey) ?? Module.notSupported, .C_GenerateKeyPair)
                }
            }
        }
        return (ObjectHandle(rawValue: publicKey), ObjectHandle(rawValue: privateKey))
    }

    /// Single-part signing (`C_SignInit` + `C_Sign`). Signatures here are at most 512 bytes.
    public func sign(_ message: [UInt8], with key: ObjectHandle, mechanism: Mechanism) throws -> [UInt8] {
        try mechanism.withCKMechanism(codes) { mech -> [UInt8] in
            try check(functions.C_SignInit?(handle, mech, key.rawValue) ?? Module.notSupported, .C_SignInit)
            var input = message
            var length: UInt = 512
            var output = [UInt8](repeating: 0, count: Int(length))
            let rv = input.withUnsafeMutableBufferPointer { inBuffer in
                output.withUnsafeMutableBufferPointer { outBuffer in
                    functions.C_Sign?(handle, inBuffer.baseAddress, UInt(inBuffer.count), outBuffer.baseAddress, &length) ?? Module.notSupported
                }
            }
            try check(rv, .C_Sign)
            output.removeSubrange(Int(length)...)
            return output
        }
    }
}
