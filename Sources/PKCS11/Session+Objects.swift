public import CMKCore
import CPKCS11
import Foundation

/// A summary of an object's public attributes, for listing keys. Never holds key material.
public struct ObjectInfo: Sendable, Hashable, Codable {
    public var handle: UInt
    public var objectClass: String
    public var keyType: String?
    public var label: String
    public var id: [UInt8]
    public var isTokenObject: Bool
    public var sensitive: Bool?
    public var extractable: Bool?
    public var encrypt: Bool?
    public var decrypt: Bool?
    public var wrap: Bool?
    public var unwrap: Bool?
    public var valueLength: UInt?
    public var modulusBits: UInt?

    /// `CKA_ID` as lowercase hex, as `pkcs11-tool` prints it.
    public var idHex: String { Hex.encode(id) }
}

extension Session {
    /// Handles of every object matching `template` (`C_FindObjectsInit/C_FindObjects/C_FindObjectsFinal`).
    public func findObjects(_ template: [Attribute], limit: Int = 1024) throws -> [ObjectHandle] {
        try withCKTemplate(template) { (pointer, count) throws in
            try check(functions.C_FindObjectsInit?(handle, pointer, count) ?? Module.notSupported, .C_FindObjectsInit)
        }
        // Final must run even if FindObjects fails, or the session stays in a find operation.
        defer { _ = functions.C_FindObjectsFinal?(handle) }
        var found: [ObjectHandle] = []
        var batch = [CK_OBJECT_HANDLE](repeating: 0, count: 64)
        while found.count < limit {
            var returned: UInt = 0
            let rv = batch.withUnsafeMutableBufferPointer { buffer in
                functions.C_FindObjects?(handle, buffer.baseAddress, UInt(buffer.count), &returned) ?? Module.notSupported
            }
            try check(rv, .C_FindObjects)
            if returned == 0 { break }
            found.append(contentsOf: batch.prefix(Int(returned)).map(ObjectHandle.init(rawValue:)))
        }
        return found
    }

    /// Reads attributes; those the token refuses (sensitive, unknown) come back absent.
    public func attributes(_ types: [AttributeType], of object: ObjectHandle) throws -> AttributeValues {
        let sizes = types.compactMap(\.fixedSize)
        if sizes.count == types.count {
            return try fixedSizeAttributes(types, sizes: sizes, of: object)
        }
        var template = types.map { CK_ATTRIBUTE(type: $0.rawValue, pValue: nil, ulValueLen: 0) }
        // First call: lengths. CKR_ATTRIBUTE_SENSITIVE / TYPE_INVALID still fill the others.
        var rv = ReturnValue(rawValue: functions.C_GetAttributeValue?(handle, object.rawValue, &template, UInt(template.count)) ?? Module.notSupported)
        guard rv == .ok || rv == .attributeSensitive || rv == .attributeTypeInvalid else {
            throw PKCS11Error(.returnValue(rv), function: .C_GetAttributeValue, module: module.path)
        }
        let unavailable = UInt.max
        let buffers: [UnsafeMutableRawBufferPointer?] = template.map { attribute in
            attribute.ulValueLen == unavailable ? nil : .allocate(byteCount: Swift.max(Int(attribute.ulValueLen), 1), alignment: 8)
        }
        defer { for buffer in buffers { buffer?.deallocate() } }
        for index in template.indices {
            if let buffer = buffers[index] {
                template[index].pValue = buffer.baseAddress
            } else {
                template[index].pValue = nil
                template[index].ulValueLen = 0
            }
        }
        rv = ReturnValue(rawValue: functions.C_GetAttributeValue?(handle, object.rawValue, &template, UInt(template.count)) ?? Module.notSupported)
        guard rv == .ok || rv == .attributeSensitive || rv == .attributeTypeInvalid else {
            throw PKCS11Error(.returnValue(rv), function: .C_GetAttributeValue, module: module.path)
        }
        var values: [AttributeType: [UInt8]] = [:]
        for (index, attribute) in template.enumerated() {
            guard let buffer = buffers[index], attribute.ulValueLen != unavailable else { continue }
            values[types[index]] = Array(UnsafeRawBufferPointer(rebasing: buffer[0..<Int(attribute.ulValueLen)]))
        }
        return AttributeValues(values: values)
    }

    /// One `C_GetAttributeValue` when every size is known in advance (the common case on the
    /// probe's path), instead of a sizing call first.
    private func fixedSizeAttributes(_ types: [AttributeType], sizes: [Int], of object: ObjectHandle) throws -> AttributeValues {
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: sizes.count * 8, alignment: 8)
        defer { storage.deallocate() }
        var template = types.enumerated().map { index, type in
            CK_ATTRIBUTE(type: type.rawValue, pValue: storage.baseAddress! + index * 8, ulValueLen: UInt(sizes[index]))
        }
        let rv = ReturnValue(rawValue: functions.C_GetAttributeValue?(handle, object.rawValue, &template, UInt(template.count)) ?? Module.notSupported)
        guard rv == .ok || rv == .attributeSensitive || rv == .attributeTypeInvalid else {
            throw PKCS11Error(.returnValue(rv), function: .C_GetAttributeValue, module: module.path)
        }
        var values: [AttributeType: [UInt8]] = [:]
        for (index, attribute) in template.enumerated() where attribute.ulValueLen != UInt.max && Int(attribute.ulValueLen) <= 8 {
            values[types[index]] = Array(UnsafeRawBufferPointer(start: storage.baseAddress! + index * 8, count: Int(attribute.ulValueLen)))
        }
        return AttributeValues(values: values)
    }

    /// A summary of the object for listings.
    public func info(of object: ObjectHandle) throws -> ObjectInfo {
        let values = try attributes([.class, .keyType, .label, .id, .token, .sensitive, .extractable,
                                     .encrypt, .decrypt, .wrap, .unwrap, .valueLen, .modulusBits], of: object)
        let objectClass = values.ulong(.class).map { ObjectClass(rawValue: $0) }
        return ObjectInfo(
            handle: object.rawValue,
            objectClass: objectClass?.uriName ?? "unknown",
            keyType: values.ulong(.keyType).map { KeyType(rawValue: $0).description },
            label: values.string(.label) ?? "",
            id: values.bytes(.id) ?? [],
            isTokenObject: values.bool(.token) ?? false,
            sensitive: values.bool(.sensitive), extractable: values.bool(.extractable),
            encrypt: values.bool(.encrypt), decrypt: values.bool(.decrypt),
            wrap: values.bool(.wrap), unwrap: values.bool(.unwrap),
            valueLength: values.ulong(.valueLen), modulusBits: values.ulong(.modulusBits))
    }

    /// Reads `CKA_VALUE` of an extractable, non-sensitive secret key into wiped memory.
    public func secretValue(of object: ObjectHandle) throws -> SecretBytes {
        var attribute = CK_ATTRIBUTE(type: AttributeType.value.rawValue, pValue: nil, ulValueLen: 0)
        try check(functions.C_GetAttributeValue?(handle, object.rawValue, &attribute, 1) ?? Module.notSupported, .C_GetAttributeValue)
        let secret = SecretBytes(count: Int(attribute.ulValueLen))
        try secret.withUnsafeMutableBytes { (buffer) throws in
            attribute.pValue = buffer.baseAddress
            try check(functions.C_GetAttributeValue?(handle, object.rawValue, &attribute, 1) ?? Module.notSupported, .C_GetAttributeValue)
        }
        return secret
    }

    public func destroyObject(_ object: ObjectHandle) throws {
        try check(functions.C_DestroyObject?(handle, object.rawValue) ?? Module.notSupported, .C_DestroyObject)
    }

    /// Generates a secret key (`C_GenerateKey`). AES by default; the template decides token or
    /// session object, usages and sensitivity.
    public func generateKey(_ mechanism: Mechanism = .aesKeyGen, template: [Attribute]) throws -> ObjectHandle {
        var key: CK_OBJECT_HANDLE = 0
        try mechanism.withCKMechanism(codes) { (mech) throws in
            try withCKTemplate(template) { (pointer, count) throws in
                try check(functions.C_GenerateKey?(handle, mech, pointer, count, &key) ?? Module.notSupported, .C_GenerateKey)
            }
        }
        return ObjectHandle(rawValue: key)
    }

    /// An AES key of `bits` with the given usages; a session object unless `token` is true.
    public func generateAESKey(bits: Int = 256, token: Bool = false, label: String? = nil, id: [UInt8]? = nil,
                               usages: [Attribute] = [.encrypt(true), .decrypt(true)],
                               sensitive: Bool = true, extractable: Bool = false) throws -> ObjectHandle {
        var template: [Attribute] = [.class(.secretKey), .keyType(.aes), .valueLen(bits / 8), .token(token),
                                     .private(true), .sensitive(sensitive), .extractable(extractable)]
        if let label { template.append(.label(label)) }
        if let id { template.append(.id(id)) }
        template += usages
        return try generateKey(.aesKeyGen, template: template)
    }

    /// Generates an RSA key pair (`C_GenerateKeyPair`); returns (public, private).
    public func generateRSAKeyPair(bits: Int, publicTemplate: [Attribute], privateTemplate: [Attribute]) throws -> (ObjectHandle, ObjectHandle) {
        var publicKey: CK_OBJECT_HANDLE = 0
        var privateKey: CK_OBJECT_HANDLE = 0
        let fullPublic = publicTemplate + [.modulusBits(bits), .publicExponent([0x01, 0x00, 0x01])]
        try Mechanism.rsaPKCSKeyPairGen.withCKMechanism(codes) { (mech) throws in
            try withCKTemplate(fullPublic) { (publicPointer, publicCount) throws in
                try withCKTemplate(privateTemplate) { (privatePointer, privateCount) throws in
                    try check(functions.C_GenerateKeyPair?(handle, mech, publicPointer, publicCount, privatePointer, privateCount,
                                                           &publicKey, &privateKey) ?? Module.notSupported, .C_GenerateKeyPair)
                }
            }
        }
        return (ObjectHandle(rawValue: publicKey), ObjectHandle(rawValue: privateKey))
    }

    /// Imports secret key bytes as an object (`C_CreateObject` with `CKA_VALUE`).
    public func createSecretKey(value: SecretBytes, template: [Attribute]) throws -> ObjectHandle {
        var object: CK_OBJECT_HANDLE = 0
        try withCKTemplate(template, extra: (.value, value)) { (pointer, count) throws in
            try check(functions.C_CreateObject?(handle, pointer, count, &object) ?? Module.notSupported, .C_CreateObject)
        }
        return ObjectHandle(rawValue: object)
    }
}
