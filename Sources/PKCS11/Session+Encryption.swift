import CPKCS11

extension Session {
    /// Single-part encryption (`C_EncryptInit` + `C_Encrypt`).
    public func encrypt(_ plaintext: [UInt8], with key: ObjectHandle, mechanism: Mechanism) throws -> [UInt8] {
        try mechanism.withCKMechanism(codes) { (mech) throws -> [UInt8] in
            try check(functions.C_EncryptInit?(handle, mech, key.rawValue) ?? Module.notSupported, .C_EncryptInit)
            var input = plaintext
            // Output is at most input + one block + a 16-byte tag for the mechanisms used here.
            var length = UInt(plaintext.count + 64)
            var output = [UInt8](repeating: 0, count: Int(length))
            let rv = input.withUnsafeMutableBufferPointer { inBuffer in
                output.withUnsafeMutableBufferPointer { outBuffer in
                    functions.C_Encrypt?(handle, inBuffer.baseAddress, UInt(inBuffer.count), outBuffer.baseAddress, &length) ?? Module.notSupported
                }
            }
            try check(rv, .C_Encrypt)
            output.removeSubrange(Int(length)...)
            return output
        }
    }

    /// Single-part decryption (`C_DecryptInit` + `C_Decrypt`). A wrong GCM tag surfaces as the
    /// module reports it (SoftHSM: `CKR_GENERAL_ERROR`, others `CKR_ENCRYPTED_DATA_INVALID`).
    public func decrypt(_ ciphertext: [UInt8], with key: ObjectHandle, mechanism: Mechanism) throws -> [UInt8] {
        try mechanism.withCKMechanism(codes) { (mech) throws -> [UInt8] in
            try check(functions.C_DecryptInit?(handle, mech, key.rawValue) ?? Module.notSupported, .C_DecryptInit)
            var input = ciphertext
            var length = UInt(ciphertext.count + 64)
            var output = [UInt8](repeating: 0, count: Int(length))
            let rv = input.withUnsafeMutableBufferPointer { inBuffer in
                output.withUnsafeMutableBufferPointer { outBuffer in
                    functions.C_Decrypt?(handle, inBuffer.baseAddress, UInt(inBuffer.count), outBuffer.baseAddress, &length) ?? Module.notSupported
                }
            }
            try check(rv, .C_Decrypt)
            output.removeSubrange(Int(length)...)
            return output
        }
    }
}
