/// The outbox's event types, as the registry writes them and nodes read them off the stream.
public enum EventType: String, Sendable, CaseIterable {
    /// The kill-switch. Payload:
    /// `{"epoch": n, "l2Ref": "<uuid>"|null, "link": "<uuid>", "revokedAt": "<ISO 8601 UTC, ms>", "tenant": "<id>"}`;
    /// `epoch` is the link's epoch that was revoked (a restore starts the next one).
    case l1Revoked = "l1.revoked"
    /// A revoked link restored with L1: the same L2, a new epoch. Payload:
    /// `{"epoch": n, "l2Ref": "<uuid>", "link": "<uuid>", "restoredAt": "…", "tenant": "<id>"}`.
    case l1Restored = "l1.restored"
    /// A link's L2 destroyed for good. Payload: `{"l2Ref", "link", "shreddedAt", "tenant"}`.
    case l2Shredded = "l2.shredded"
    /// The regions allowed to unseal a tenant's L2 changed. Payload:
    /// `{"allowedRegions": ["…"]|null, "tenant": "<id>"}`; a node outside them drops the tenant's keys.
    case tenantRegions = "tenant.regions"
    /// An application credential was revoked; nodes refuse it from then on.
    case credentialRevoked = "credential.revoked"
    /// Not an outbox event: the gateway's signed heartbeat on an event stream.
    case streamHeartbeat = "stream.heartbeat"
}
