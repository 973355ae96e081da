import CMKCore
import Foundation

/// How callers name an object: by label and/or `CKA_ID`, optionally restricted to a class and a
/// key type. The pool caches the handle each query resolves to.
public struct ObjectQuery: Hashable, Sendable, CustomStringConvertible {
    public var label: String?
    public var id: [UInt8]?
    public var objectClass: ObjectClass?
    public var keyType: KeyType?

    public init(label: String? = nil, id: [UInt8]? = nil, objectClass: ObjectClass? = nil, keyType: KeyType? = nil) {
        self.label = label
        self.id = id
        self.objectClass = objectClass
        self.keyType = keyType
    }

    public var template: [Attribute] {
        var template: [Attribute] = []
        if let objectClass { template.append(.class(objectClass)) }
        if let keyType { template.append(.keyType(keyType)) }
        if let label { template.append(.label(label)) }
        if let id { template.append(.id(id)) }
        return template
    }

    public var description: String {
        var parts: [String] = []
        if let objectClass { parts.append(objectClass.uriName) }
        if let label { parts.append("label \"\(label)\"") }
        if let id { parts.append("id \(Hex.encode(id))") }
        return parts.isEmpty ? "any object" : parts.joined(separator: " ")
    }
}
