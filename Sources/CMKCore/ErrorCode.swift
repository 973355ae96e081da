/// Every error code the gateway answers with, in one list: the REST API's `error.code`, the
/// audit log's `errorCode`, the node's reactions to the gateway's answers, and the
/// `reason` of a gRPC error's details all take their words from here. A code is part of the
/// contract: never renamed, only added.
public enum ErrorCode: String, Sendable, Codable, CaseIterable {
    // Input and resources
    case invalidInput = "invalid_input"
    case notFound = "not_found"
    case conflict
    case preconditionFailed = "precondition_failed"
    case bodyTooLarge = "body_too_large"
    case methodNotAllowed = "method_not_allowed"
    case idempotencyInProgress = "idempotency_in_progress"
    case idempotencyKeyReused = "idempotency_key_reused"
    // Who is calling
    case unauthenticated
    case forbidden
    case stepUpRequired = "step_up_required"
    case csrfFailed = "csrf_failed"
    case invalidCredentials = "invalid_credentials"
    case sessionExpired = "session_expired"
    case locked
    /// In the audit log only: the API answers a disabled account's login `invalid_credentials`,
    /// so that it does not tell which accounts exist.
    case accountDisabled = "account_disabled"
    /// The session manager's word for malformed login input (the rest of the API says
    /// `invalid_input`); kept as it is on the wire until the contract issue folds the two.
    case badRequest = "bad_request"
    case clientCertificateRequired = "client_certificate_required"
    // Keystores and the handshake
    case probeFailed = "probe_failed"
    case unsupportedProvider = "unsupported_provider"
    case keystoreNotFound = "keystore_not_found"
    case keystoreRefused = "keystore_refused"
    case keystoreUnsupported = "keystore_unsupported"
    case keystoreUnavailable = "keystore_unavailable"
    case l1KeyMismatch = "l1_key_mismatch"
    // Link lifecycle
    case linkRevoked = "link_revoked"
    case linkNotRevoked = "link_not_revoked"
    case linkRestorable = "link_restorable"
    case linkShredded = "link_shredded"
    case shredScheduled = "shred_scheduled"
    case shredNotScheduled = "shred_not_scheduled"
    case rotationRunning = "rotation_running"
    // Approvals
    case approvalRequired = "approval_required"
    case selfApproval = "self_approval"
    case approvalPending = "approval_pending"
    case approvalNotRequired = "approval_not_required"
    case alreadyVoted = "already_voted"
    case approvalClosed = "approval_closed"
    case approvalExpired = "approval_expired"
    case approvalMismatch = "approval_mismatch"
    // Nodes: enrolment, unseal, acknowledgements, streams
    case enrolmentRefused = "enrolment_refused"
    case nodeDisabled = "node_disabled"
    case nodeRemoved = "node_removed"
    case rekeyRefused = "rekey_refused"
    case regionNotAllowed = "region_not_allowed"
    case keyRevoked = "key_revoked"
    case keyShredScheduled = "key_shred_scheduled"
    case keyShredded = "key_shredded"
    case invalidAck = "invalid_ack"
    case alreadyAcknowledged = "already_acknowledged"
    case tooManyStreams = "too_many_streams"
    // The service itself
    case auditUnavailable = "audit_unavailable"
    /// The registry's database cannot be reached (a PostgreSQL restart or failover): nothing
    /// was changed, or the message says the outcome is unknown. Retry.
    case storageUnavailable = "storage_unavailable"
    case notReady = "not_ready"
    case `internal`

    /// What kind of failure the code is, unless the error that carries it says otherwise.
    public var kind: ErrorKind {
        switch self {
        case .invalidInput, .badRequest: .invalidInput
        case .notFound: .notFound
        case .conflict, .idempotencyInProgress, .l1KeyMismatch, .linkRevoked, .linkNotRevoked, .linkRestorable,
             .shredScheduled, .shredNotScheduled, .rotationRunning, .approvalPending, .approvalNotRequired, .alreadyVoted,
             .approvalClosed, .approvalExpired, .approvalMismatch, .rekeyRefused, .keyRevoked, .keyShredScheduled,
             .alreadyAcknowledged: .conflict
        case .preconditionFailed: .preconditionFailed
        case .bodyTooLarge: .tooLarge
        case .methodNotAllowed: .methodNotAllowed
        case .idempotencyKeyReused, .probeFailed, .unsupportedProvider, .keystoreNotFound, .keystoreRefused,
             .keystoreUnsupported, .invalidAck: .unprocessable
        case .unauthenticated, .invalidCredentials, .sessionExpired, .clientCertificateRequired, .enrolmentRefused: .unauthenticated
        case .forbidden, .accountDisabled, .stepUpRequired, .csrfFailed, .approvalRequired, .selfApproval, .nodeDisabled, .nodeRemoved,
             .regionNotAllowed: .permissionDenied
        case .locked, .tooManyStreams: .exhausted
        case .linkShredded, .keyShredded: .gone
        case .keystoreUnavailable, .auditUnavailable, .storageUnavailable, .notReady: .unavailable
        case .internal: .internal
        }
    }
}

/// A failure's kind, free of any transport: the REST layer turns it into an HTTP status, the
/// gRPC layer into a status code, each in one `switch`.
public enum ErrorKind: Sendable, Hashable {
    case invalidInput
    case unauthenticated
    case permissionDenied
    case notFound
    case methodNotAllowed
    case conflict
    case gone
    case preconditionFailed
    case tooLarge
    /// Well-formed, but refused on its merits (a failed probe, a key the keystore lacks).
    case unprocessable
    /// Rate or count limits (a locked login, too many streams).
    case exhausted
    case unavailable
    case `internal`
}
