public import Crypto
import Foundation
public import Registry

/// Orbital: the dispatcher between the registry's outbox and the regional nodes. A
/// kill-switch goes through it in the order of its folders:
///
/// - `Outbox/`: the events a commit wrote (`committed`), and the outbox read by sequence;
/// - `Dispatch/`: every open node stream woken at once (`Dispatcher`), heartbeats;
/// - `Stream/`: one node's stream, catch-up from its cursor then pushed frames (`EventStream`,
///   `EventFrame`);
/// - `Acknowledgements/`: a node's signed purge statement, verified once (`VerifiedAck`) and
///   stored in batches (`BatchWriter`);
/// - `Progress/`: who has acknowledged, and the `LOCKED` verdict (`RevocationProgress`).
///
/// It knows nothing of HTTP: the gateway's node routes hand it a writer for the stream and the
/// bytes of an acknowledgement.
public final class Orbital: Sendable {
    public let registry: Registry
    public let dispatcher: Dispatcher
    /// Signs every event and heartbeat the nodes receive; they pin its public half at enrolment.
    public let signer: Curve25519.Signing.PrivateKey
    let recent = RecentEvents()
    let acks: BatchWriter<NodeAck, Bool>

    public init(registry: Registry, signer: Curve25519.Signing.PrivateKey, heartbeat: Duration = .seconds(15)) {
        self.registry = registry
        self.signer = signer
        self.dispatcher = Dispatcher(heartbeat: heartbeat, signer: signer)
        self.acks = BatchWriter { [registry] in try await registry.recordAcks($0) }
    }
}
