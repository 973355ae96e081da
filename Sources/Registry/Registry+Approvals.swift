public import Foundation
import Storage

extension Registry {
    /// A new request, `PENDING`. `conflict` if an open (pending or approved, unexpired) request
    /// for the same operation and target exists: one decision at a time per target.
    public func createApprovalRequest(operation: ApprovalOperation, tenantID: String?, target: String, parameters: String,
                                      reason: String?, requestedBy: String, requesterRole: String, requiredApprovals: Int,
                                      expiresAt: Date, at: Date) async throws -> ApprovalRequest {
        try Validation.text(target, "the target", maxLength: 128)
        try Validation.json(parameters, "the parameters")
        try Validation.text(requestedBy, "the requester")
        if let reason { try Validation.text(reason, "the reason", maxLength: 500) }
        guard (1...8).contains(requiredApprovals) else { throw RegistryError(.invalidInput, "1-8 approvals besides the requester") }
        guard expiresAt > at else { throw RegistryError(.invalidInput, "a request must expire after it is made") }
        let id = Self.newID()
        return try await write { db in
            for row in try Row.fetchAll(db, sql: """
                SELECT id, expires_at FROM approval_request WHERE operation = ? AND target = ? AND state IN ('PENDING', 'APPROVED')
                """, arguments: [operation.rawValue, target]) where (row["expires_at"] as Int64) > at.registryMilliseconds {
                throw RegistryError(.conflict, "approval request \(row["id"] as String) for \(operation.rawValue) of \(target) is still open")
            }
            try db.execute(sql: """
                INSERT INTO approval_request (id, operation, tenant_id, target, parameters, reason, requested_by, requester_role,
                                              required_approvals, state, created_at, expires_at, version)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'PENDING', ?, ?, 1)
                """, arguments: [id, operation.rawValue, tenantID, target, parameters, reason, requestedBy, requesterRole,
                                 requiredApprovals, at.registryMilliseconds, expiresAt.registryMilliseconds])
            return try ApprovalRequest.fetch(db, id: id)!
        }
    }

    public func approvalRequest(_ id: String) async throws -> ApprovalRequest {
        try await read { db in
            guard let request = try ApprovalRequest.fetch(db, id: id) else { throw RegistryError(.notFound, "no approval request \(id)") }
            return request
        }
    }

    /// Newest first; `states` filters by stored state (expired ones are pending or approved).
    public func approvalRequests(states: [ApprovalState]? = nil, tenantID: String? = nil, limit: Int = 200) async throws -> [ApprovalRequest] {
        let limit = Cursor.clamp(limit)
        return try await read { db in
            var sql = "SELECT id FROM approval_request WHERE 1 = 1"
            var arguments: [(any DatabaseValueConvertible)?] = []
            if let states, !states.isEmpty {
                sql += " AND state IN (\(states.map { _ in "?" }.joined(separator: ", ")))"
                arguments += states.map(\.rawValue)
            }
            if let tenantID {
                sql += " AND tenant_id = ?"
                arguments.append(tenantID)
            }
            sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
            arguments.append(limit)
            return try String.fetchAll(db, sql: sql, arguments: StatementArguments(arguments)).compactMap { try ApprovalRequest.fetch(db, id: $0) }
        }
    }

    /// One person's vote, once. An approval that completes the count makes the request
    /// `APPROVED`; a rejection makes it `REJECTED`. `conflict` if the voter is the requester, has
    /// voted already, or the request is no longer open (decided, cancelled, used or expired).
    public func vote(on id: String, by approver: String, _ decision: ApprovalDecision, at: Date) async throws -> ApprovalRequest {
        try Validation.text(approver, "the approver")
        return try await write { db in
            guard let request = try ApprovalRequest.fetch(db, id: id) else { throw RegistryError(.notFound, "no approval request \(id)") }
            guard request.state(at: at) == .pending else {
                throw RegistryError(.conflict, "approval request \(id) is \(request.state(at: at).rawValue), not open for votes")
            }
            guard approver != request.requestedBy else {
                throw RegistryError(.conflict, "the requester cannot approve or reject their own request")
            }
            guard !request.votes.contains(where: { $0.approver == approver }) else {
                throw RegistryError(.conflict, "\(approver) has already voted on approval request \(id)")
            }
            try db.execute(sql: "INSERT INTO approval_vote (request_id, approver, decision, at) VALUES (?, ?, ?, ?)",
                           arguments: [id, approver, decision.rawValue, at.registryMilliseconds])
            let approvals = request.approvals + (decision == .approve ? 1 : 0)
            let newState: ApprovalState? = decision == .reject ? .rejected : approvals >= request.requiredApprovals ? .approved : nil
            if let newState {
                try db.execute(sql: "UPDATE approval_request SET state = ?, decided_at = ?, version = version + 1 WHERE id = ?",
                               arguments: [newState.rawValue, at.registryMilliseconds, id])
            } else {
                try db.execute(sql: "UPDATE approval_request SET version = version + 1 WHERE id = ?", arguments: [id])
            }
            return try ApprovalRequest.fetch(db, id: id)!
        }
    }

    /// The requester withdraws an open request. `conflict` if it is not theirs or not open.
    public func cancelApprovalRequest(_ id: String, by person: String, at: Date) async throws -> ApprovalRequest {
        try await write { db in
            guard let request = try ApprovalRequest.fetch(db, id: id) else { throw RegistryError(.notFound, "no approval request \(id)") }
            guard request.requestedBy == person else { throw RegistryError(.conflict, "only the requester can cancel a request") }
            let state = request.state(at: at)
            guard state == .pending || state == .approved else {
                throw RegistryError(.conflict, "approval request \(id) is \(state.rawValue), not open")
            }
            try db.execute(sql: "UPDATE approval_request SET state = 'CANCELLED', decided_at = ?, version = version + 1 WHERE id = ?",
                           arguments: [at.registryMilliseconds, id])
            return try ApprovalRequest.fetch(db, id: id)!
        }
    }

    /// Marks an approved request used, with nothing else to change in the registry (a node
    /// enrolment token is issued in the same transaction by `createEnrolment(…, approval:)`).
    func consumeApproval(_ db: Database, _ approval: (id: String, by: String)?, operation: ApprovalOperation, target: String,
                         at: Date) throws {
        guard let approval else { return }
        try ApprovalRequest.consume(db, id: approval.id, operation: operation, target: target, by: approval.by, at: at)
    }
}
