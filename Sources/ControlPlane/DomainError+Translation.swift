import Audit
import AuditFormat
public import CMKCore
import KSI
import Registry

extension DomainError {
    /// The lower layers' errors as the domain's, translated once, here: the registry's, the
    /// keystores' (a keystore's "not found" is a refusal of the request, not a missing
    /// resource of the API) and the audit log's (a request that cannot be recorded is not
    /// carried out). Nil for anything unexpected: the transports answer it opaquely.
    public static func from(_ error: any Error) -> DomainError? {
        switch error {
        case let error as DomainError:
            return error
        case let error as RegistryError:
            switch error.code {
            case .notFound: return DomainError(.notFound, error.message)
            case .conflict: return DomainError(.conflict, error.message)
            case .preconditionFailed: return DomainError(.preconditionFailed, error.message)
            case .invalidInput: return DomainError(.invalidInput, error.message)
            case .unavailable: return DomainError(.storageUnavailable, error.message)
            case .internal: return nil
            }
        case let error as KeystoreError:
            switch error.code {
            case .invalidInput: return DomainError(.invalidInput, error.reason)
            case .notFound: return DomainError(.keystoreNotFound, error.reason)
            case .permissionDenied: return DomainError(.keystoreRefused, error.reason)
            case .unsupported: return DomainError(.keystoreUnsupported, error.reason)
            case .conflict: return DomainError(.conflict, error.reason)
            case .unavailable: return DomainError(.keystoreUnavailable, error.reason)
            case .internal: return nil
            }
        case let error as AuditError:
            switch error.code {
            case .invalidInput: return DomainError(.invalidInput, error.reason)
            case .notFound: return DomainError(.notFound, error.reason)
            case .unavailable, .verificationFailed:
                return DomainError(.auditUnavailable,
                                   "the audit log cannot record this request, so it was not carried out; see the server log")
            }
        default:
            return nil
        }
    }
}
