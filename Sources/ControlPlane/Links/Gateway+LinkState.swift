import Audit
import AuditFormat
package import CMKCore
import Crypto
import Foundation
import KSI
import Logging
import NIOConcurrencyHelpers
import Orbital
import PKCS11
package import Registry

/// Which operations a link's state allows.
extension Gateway {
    /// The error for an operation that needs a live link, by the link's state.
    package static func notLive(_ link: L1Link) -> DomainError {
        switch link.state {
        case .shredded:
            DomainError(.linkShredded, "link \(link.id) was shredded: its L2 key is destroyed and cannot come back")
        case .shredScheduled:
            DomainError(.shredScheduled,
                     "link \(link.id) is revoked and scheduled for shredding at \(RFC3339.format(link.shredAfter ?? Date())); cancel the shred to restore it")
        case .revoked:
            DomainError(.linkRevoked, "link \(link.id) is revoked; restore it (with L1, and approval) to use it again")
        case .linked, .pendingValidation:
            DomainError(.linkNotRevoked, "link \(link.id) is \(link.state.rawValue), not revoked")
        }
    }

    /// Refuses unless the link is `REVOKED`, with the code of the state it is in.
    package static func requireRevoked(_ link: L1Link) throws {
        guard link.state == .revoked else { throw notLive(link) }
    }
}
