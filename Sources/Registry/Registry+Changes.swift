public import Storage

/// What one replica tells the others that share its database (PostgreSQL): a commit wrote
/// outbox events, a node's record changed, the portal's picture changed. The database stays
/// the source of truth; a notification only says "read it now" (D98).
public enum RegistryChange: Sendable, Equatable {
    /// Events were committed to the outbox.
    case outbox
    /// A node was disabled, enabled, removed or re-keyed.
    case node(String)
    /// Something the portal shows changed (an acknowledgement, a revocation's progress).
    case dashboard
    /// A rotation job was started or resumed: the leading replica runs it.
    case rotation

    static let channel = "cmk_changes"

    var payload: String {
        switch self {
        case .outbox: "outbox"
        case .node(let id): "node:" + id
        case .dashboard: "dashboard"
        case .rotation: "rotation"
        }
    }

    init?(payload: String) {
        switch payload {
        case "outbox": self = .outbox
        case "dashboard": self = .dashboard
        case "rotation": self = .rotation
        case _ where payload.hasPrefix("node:"): self = .node(String(payload.dropFirst(5)))
        default: return nil
        }
    }
}

extension Registry {
    /// Whether other replicas may share this registry's database (PostgreSQL).
    public var isShared: Bool { store.dialect == .postgres }

    /// Changes other replicas announced: `.listening` when the listener (re)connects (catch up),
    /// then each change. Nil on SQLite.
    public func changes() -> AsyncStream<(listening: Bool, change: RegistryChange?)>? {
        guard let wakes = store.listen(channel: RegistryChange.channel) else { return nil }
        return AsyncStream { continuation in
            let task = Task {
                for await wake in wakes {
                    switch wake {
                    case .listening: continuation.yield((true, nil))
                    case .notified(let payload): if let change = RegistryChange(payload: payload) { continuation.yield((false, change)) }
                    }
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// Tells the other replicas (best effort, after the change committed).
    public func announce(_ change: RegistryChange) async {
        await store.notify(channel: RegistryChange.channel, payload: change.payload)
    }

    /// Whether this replica leads the others on the database (always, on SQLite): see
    /// `SQLStore.leadership`.
    public func leadership() -> AsyncStream<Bool> { store.leadership(key: RegistrySchema.postgresLeaderLock) }

    /// Whether the database answers now.
    public func isReachable() async -> Bool { await store.isReachable() }

    /// Inside a write: announced when it commits.
    static func announce(_ db: Database, _ change: RegistryChange) throws {
        try SQLStore.notify(db, channel: RegistryChange.channel, payload: change.payload)
    }
}
