public import CMKCore
/// Who made a request: an administrator, an automation token, a regional node, or the platform
/// itself (the scheduled prober).
public struct AuditActor: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable, CaseIterable {
        case user, token, node, system
    }

    public var kind: Kind
    /// User name, token id, node id, or the system component (`prober`).
    public var id: String
    /// The session or token the request came with, when there is one.
    public var session: String?
    /// How the actor authenticated: `bootstrap-bearer`, `password+totp`, `jwt`, `node-signature`, `internal`.
    public var authMethod: String

    public init(kind: Kind, id: String, session: String? = nil, authMethod: String) {
        self.kind = kind
        self.id = id
        self.session = session
        self.authMethod = authMethod
    }

    public static let prober = AuditActor(kind: .system, id: "prober", authMethod: "internal")
}

/// One entry of the audit log: a request to an L1 key or an administrative action. Holds no
/// PIN, secret or key byte: references and outcomes only (see Docs/AuditFormat.md).
public struct AuditRecord: Sendable, Equatable {
    public enum Outcome: String, Sendable, Codable, CaseIterable {
        /// Done as asked.
        case success
        /// Attempted and failed (the keystore refused, a probe check failed, bad input).
        case failure
        /// Refused before it was attempted (authorization, a revoked link).
        case denied
    }

    /// Position in the log (the Merkle leaf index), assigned by the store.
    public var seq: UInt64
    /// Milliseconds since 1970 (UTC), assigned by the store, non-decreasing with `seq`.
    public var time: Int64
    public var actor: AuditActor
    /// Dotted verb: `l1.probe`, `l1.wrap`, `l1.unwrap`, `tenant.create`, `link.revoke`, …
    public var operation: String
    public var outcome: Outcome
    public var tenant: String?
    public var keystore: String?
    /// The L1 key's reference (PKCS#11 URI, ARN, key URI): a name, never key material.
    public var keyReference: String?
    public var mechanism: String?
    /// The stable error code when the outcome is not success.
    public var errorCode: String?
    /// The resource acted on (link id, tenant id, L2 ref) when it is not the tenant itself.
    public var target: String?
    public var requestID: String?
    public var clientAddress: String?
    public var latencyMicros: Int64?
    /// Further facts as short strings (a failed probe check's name, an event id).
    public var details: [String: String]

    public init(actor: AuditActor, operation: String, outcome: Outcome, tenant: String? = nil, keystore: String? = nil,
                keyReference: String? = nil, mechanism: String? = nil, errorCode: String? = nil, target: String? = nil,
                requestID: String? = nil, clientAddress: String? = nil, latencyMicros: Int64? = nil,
                details: [String: String] = [:], seq: UInt64 = 0, time: Int64 = 0) {
        self.seq = seq
        self.time = time
        self.actor = actor
        self.operation = operation
        self.outcome = outcome
        self.tenant = tenant
        self.keystore = keystore
        self.keyReference = keyReference
        self.mechanism = mechanism
        self.errorCode = errorCode
        self.target = target
        self.requestID = requestID
        self.clientAddress = clientAddress
        self.latencyMicros = latencyMicros
        self.details = details
    }
}

// MARK: - The canonical form (Docs/AuditFormat.md §2)

extension AuditRecord {
    /// The record as a JSON object; absent optional fields are left out.
    public var jsonValue: JSONValue {
        var members: [String: JSONValue] = [
            "seq": .integer(Int64(seq)),
            "time": .string(RFC3339.format(milliseconds: time)),
            "actor": .object(actorMembers),
            "operation": .string(operation),
            "outcome": .string(outcome.rawValue),
        ]
        func put(_ key: String, _ value: String?) { if let value { members[key] = .string(value) } }
        put("tenant", tenant)
        put("keystore", keystore)
        put("key", keyReference)
        put("mechanism", mechanism)
        put("error", errorCode)
        put("target", target)
        put("requestId", requestID)
        put("client", clientAddress)
        if let latencyMicros { members["latencyMicros"] = .integer(latencyMicros) }
        if !details.isEmpty { members["details"] = .object(details.mapValues { .string($0) }) }
        return .object(members)
    }

    private var actorMembers: [String: JSONValue] {
        var members: [String: JSONValue] = ["type": .string(actor.kind.rawValue), "id": .string(actor.id),
                                            "auth": .string(actor.authMethod)]
        if let session = actor.session { members["session"] = .string(session) }
        return members
    }

    /// The bytes the Merkle leaf is computed over: RFC 8785 JSON of `jsonValue`.
    public func canonicalBytes() throws -> [UInt8] {
        try encoded().body(seq: seq, time: Array(RFC3339.format(milliseconds: time).utf8))
    }

    /// Reads a record back from its JSON object; unknown members are refused, so that a
    /// verifier never silently ignores a field it cannot interpret.
    public init(json: JSONValue) throws {
        guard case .object(let members) = json else { throw AuditError(.invalidInput, "a record is a JSON object") }
        let known: Set<String> = ["seq", "time", "actor", "operation", "outcome", "tenant", "keystore", "key", "mechanism",
                                  "error", "target", "requestId", "client", "latencyMicros", "details"]
        if let unknown = members.keys.first(where: { !known.contains($0) }) {
            throw AuditError(.invalidInput, "unknown record member \"\(unknown)\"")
        }
        func string(_ key: String, in object: [String: JSONValue] = members) throws -> String? {
            guard let value = object[key] else { return nil }
            guard let text = value.stringValue else { throw AuditError(.invalidInput, "\"\(key)\" must be a string") }
            return text
        }
        func required(_ key: String, in object: [String: JSONValue] = members) throws -> String {
            guard let text = try string(key, in: object) else { throw AuditError(.invalidInput, "\"\(key)\" is missing") }
            return text
        }
        guard let seq = members["seq"]?.integerValue, seq >= 0 else { throw AuditError(.invalidInput, "\"seq\" must be a non-negative integer") }
        guard let time = RFC3339.parseMilliseconds(try required("time")) else { throw AuditError(.invalidInput, "\"time\" is not an RFC 3339 time") }
        guard case .object(let actor)? = members["actor"] else { throw AuditError(.invalidInput, "\"actor\" must be an object") }
        guard let kind = AuditActor.Kind(rawValue: try required("type", in: actor)) else { throw AuditError(.invalidInput, "unknown actor type") }
        guard let outcome = Outcome(rawValue: try required("outcome")) else { throw AuditError(.invalidInput, "unknown outcome") }
        var details: [String: String] = [:]
        if let value = members["details"] {
            guard case .object(let object) = value else { throw AuditError(.invalidInput, "\"details\" must be an object") }
            for (key, item) in object {
                guard let text = item.stringValue else { throw AuditError(.invalidInput, "details values are strings") }
                details[key] = text
            }
        }
        let latency: Int64?
        if let value = members["latencyMicros"] {
            guard let micros = value.integerValue else { throw AuditError(.invalidInput, "\"latencyMicros\" must be an integer") }
            latency = micros
        } else {
            latency = nil
        }
        self.init(actor: AuditActor(kind: kind, id: try required("id", in: actor), session: try string("session", in: actor),
                                    authMethod: try required("auth", in: actor)),
                  operation: try required("operation"), outcome: outcome, tenant: try string("tenant"),
                  keystore: try string("keystore"), keyReference: try string("key"), mechanism: try string("mechanism"),
                  errorCode: try string("error"), target: try string("target"), requestID: try string("requestId"),
                  clientAddress: try string("client"), latencyMicros: latency, details: details,
                  seq: UInt64(seq), time: time)
    }
}
