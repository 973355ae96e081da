import CPKCS11

extension Session {
    /// Single-part encryption (`C_EncryptInit` + `C_Encrypt`).
    public func encrypt(_ plaintext: [UInt8], with key: ObjectHandle, mechanism: Mechanism) throws -> [UInt8] {
        try singlePart(plaintext, key: key, mechanism: mechanism, initialise: (.C_EncryptInit, functions.C_EncryptInit),
                       run: (.C_Encrypt, functions.C_Encrypt))
    }

    /// Single-part decryption (`C_DecryptInit` + `C_Decrypt`). A wrong GCM tag surfaces as the
    /// module reports it (SoftHSM: `CKR_GENERAL_ERROR`, others `CKR_ENCRYPTED_DATA_INVALID`).
    public func decrypt(_ ciphertext: [UInt8], with key: ObjectHandle, mechanism: Mechanism) throws -> [UInt8] {
        try singlePart(ciphertext, key: key, mechanism: mechanism, initialise: (.C_DecryptInit, functions.C_DecryptInit),
                       run: (.C_Decrypt, functions.C_Decrypt))
    }

    private typealias Initialise = @convention(c) (CK_SESSION_HANDLE, UnsafeMutablePointer<CK_MECHANISM>?, CK_OBJECT_HANDLE) -> CK_RV
    private typealias Run = @convention(c) (CK_SESSION_HANDLE, UnsafeMutablePointer<UInt8>?, UInt,
                                            UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<UInt>?) -> CK_RV

    private func singlePart(_ input: [UInt8], key: ObjectHandle, mechanism: Mechanism,
                            initialise: (PKCS11Function, Initialise?), run: (PKCS11Function, Run?)) throws -> [UInt8] {
        try mechanism.withCKMechanism(codes) { mech -> [UInt8] in
            try check(initialise.1?(handle, mech, key.rawValue) ?? Module.notSupported, initialise.0)
            var source = input
            // Output is at most input + one block + a 16-byte tag for the mechanisms used here.
            var length = UInt(input.count + 64)
            var output = [UInt8](repeating: 0, count: Int(length))
            let rv = source.withUnsafeMutableBufferPointer { inBuffer in
                output.withUnsafeMutableBufferPointer { outBuffer in
                    run.1?(handle, inBuffer.baseAddress, UInt(inBuffer.count), outBuffer.baseAddress, &length) ?? Module.notSupported
                }
            }
            try check(rv, run.0)
            output.removeSubrange(Int(length)...)
            return output
        }
    }
}
