import CPKCS11

extension Session {
    /// Wraps `key` with `wrappingKey` (`C_WrapKey`), sizing the output with a first call.
    public func wrapKey(_ key: ObjectHandle, with wrappingKey: ObjectHandle, mechanism: Mechanism) throws -> [UInt8] {
        try mechanism.withCKMechanism(codes) { (mech) throws -> [UInt8] in
            // One call with a generous buffer covers AES wraps (input + 8..16 bytes) and RSA
            // moduli up to 8192 bits; fall back to the sizing call when the module asks.
            var length: UInt = 1040
            var output = [UInt8](repeating: 0, count: Int(length))
            var rv = output.withUnsafeMutableBufferPointer { buffer in
                functions.C_WrapKey?(handle, mech, wrappingKey.rawValue, key.rawValue, buffer.baseAddress, &length) ?? Module.notSupported
            }
            if ReturnValue(rawValue: rv) == .bufferTooSmall {
                output = [UInt8](repeating: 0, count: Int(length))
                rv = output.withUnsafeMutableBufferPointer { buffer in
                    functions.C_WrapKey?(handle, mech, wrappingKey.rawValue, key.rawValue, buffer.baseAddress, &length) ?? Module.notSupported
                }
            }
            try check(rv, .C_WrapKey)
            output.removeSubrange(Int(length)...)
            return output
        }
    }

    /// Unwraps `wrapped` with `unwrappingKey` into a new object described by `template`
    /// (`C_UnwrapKey`). Never put `CKA_VALUE_LEN` in the template: the blob defines it, and
    /// SoftHSM refuses the call (and may leave an empty object behind) when it is present.
    public func unwrapKey(_ wrapped: [UInt8], with unwrappingKey: ObjectHandle, mechanism: Mechanism,
                          template: [Attribute]) throws -> ObjectHandle {
        var object: CK_OBJECT_HANDLE = 0
        var blob = wrapped
        try mechanism.withCKMechanism(codes) { (mech) throws in
            try withCKTemplate(template) { (pointer, count) throws in
                let rv = blob.withUnsafeMutableBufferPointer { buffer in
                    functions.C_UnwrapKey?(handle, mech, unwrappingKey.rawValue, buffer.baseAddress, UInt(buffer.count),
                                           pointer, count, &object) ?? Module.notSupported
                }
                try check(rv, .C_UnwrapKey)
            }
        }
        return ObjectHandle(rawValue: object)
    }
}
