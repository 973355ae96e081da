import CMKCore
/// The canonical encoding written directly, member by member in JCS order, without building a
/// `JSONValue` (the store encodes every record; a test holds this against the general encoder).
///
/// Member order: actor, client, details, error, key, keystore, latencyMicros, mechanism,
/// operation, outcome, requestId, seq, target, tenant, time. The store alone knows `seq` and
/// `time`, so the record is encoded by its appender in two parts and the store splices them:
/// `head` ‖ `"seq":N` ‖ `middle` ‖ `,"time":"T"}`.
package struct EncodedRecord: Sendable {
    var head: [UInt8]
    var middle: [UInt8]

    package func body(seq: UInt64, time: [UInt8]) -> [UInt8] {
        var out = head
        out.reserveCapacity(head.count + middle.count + time.count + 40)
        out.append(contentsOf: #""seq":"#.utf8)
        out.append(contentsOf: String(seq).utf8)
        out.append(contentsOf: middle)
        out.append(contentsOf: #","time":""#.utf8)
        out.append(contentsOf: time)
        out.append(contentsOf: #""}"#.utf8)
        return out
    }
}

extension AuditRecord {
    package func encoded() throws -> EncodedRecord {
        var head: [UInt8] = [UInt8(ascii: "{")]
        head.reserveCapacity(384)
        func member(_ key: String, _ value: String?, into out: inout [UInt8], leadingComma: Bool = false) {
            guard let value else { return }
            if leadingComma { out.append(UInt8(ascii: ",")) }
            JSONValue.writeString(key, into: &out)
            out.append(UInt8(ascii: ":"))
            JSONValue.writeString(value, into: &out)
            if !leadingComma { out.append(UInt8(ascii: ",")) }
        }
        head.append(contentsOf: #""actor":{"#.utf8)
        member("auth", actor.authMethod, into: &head)
        member("id", actor.id, into: &head)
        member("session", actor.session, into: &head)
        JSONValue.writeString("type", into: &head)
        head.append(UInt8(ascii: ":"))
        JSONValue.writeString(actor.kind.rawValue, into: &head)
        head.append(contentsOf: "},".utf8)
        member("client", clientAddress, into: &head)
        if !details.isEmpty {
            head.append(contentsOf: #""details":"#.utf8)
            try JSONValue.write(.object(details.mapValues { .string($0) }), into: &head)
            head.append(UInt8(ascii: ","))
        }
        member("error", errorCode, into: &head)
        member("key", keyReference, into: &head)
        member("keystore", keystore, into: &head)
        if let latencyMicros {
            guard latencyMicros >= -JSONValue.maxSafeInteger, latencyMicros <= JSONValue.maxSafeInteger else {
                throw CanonicalJSONError(offset: head.count, reason: "latencyMicros is outside the I-JSON safe range")
            }
            head.append(contentsOf: #""latencyMicros":"#.utf8)
            head.append(contentsOf: String(latencyMicros).utf8)
            head.append(UInt8(ascii: ","))
        }
        member("mechanism", mechanism, into: &head)
        member("operation", operation, into: &head)
        member("outcome", outcome.rawValue, into: &head)
        member("requestId", requestID, into: &head)
        var middle: [UInt8] = []
        member("target", target, into: &middle, leadingComma: true)
        member("tenant", tenant, into: &middle, leadingComma: true)
        return EncodedRecord(head: head, middle: middle)
    }
}
