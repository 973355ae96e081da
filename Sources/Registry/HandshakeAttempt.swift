public import Foundation
import Storage

/// One handshake, passed or failed, kept so that an administrator can see why onboarding did
/// not work (`failureCode` is the KSI's stable code, `failureReason` its words for operators).
public struct HandshakeAttempt: Codable, Sendable, Equatable {
    public var id: String
    public var tenantID: String
    public var provider: String
    public var keystoreID: String
    /// The key reference as tried, without any PIN.
    public var keyReference: String
    public var passed: Bool
    public var failureCode: String?
    public var failureReason: String?
    public var at: Date

    public init(id: String = UUID().uuidString.lowercased(), tenantID: String, provider: String, keystoreID: String,
                keyReference: String, passed: Bool, failureCode: String? = nil, failureReason: String? = nil, at: Date) {
        self.id = id
        self.tenantID = tenantID
        self.provider = provider
        self.keystoreID = keystoreID
        self.keyReference = keyReference
        self.passed = passed
        self.failureCode = failureCode
        self.failureReason = failureReason
        self.at = at
    }
}

extension HandshakeAttempt {
    init(row: Row) {
        self.init(
            id: row["id"],
            tenantID: row["tenant_id"],
            provider: row["provider"],
            keystoreID: row["keystore_id"],
            keyReference: row["key_reference"],
            passed: row["passed"],
            failureCode: row["failure_code"],
            failureReason: row["failure_reason"],
            at: Date(registryMilliseconds: row["at"])
        )
    }
}
