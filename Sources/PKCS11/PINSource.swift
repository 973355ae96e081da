public import CMKCore
import Foundation

/// Where a PIN comes from. PINs are never written in configuration files, URIs or command lines
/// (those end up in shell history, `ps` output and logs): only a file or an environment variable
/// that holds the PIN.
public enum PINSource: Sendable, Hashable, CustomStringConvertible {
    /// A file whose content (without a trailing newline) is the PIN.
    case file(String)
    /// An environment variable that holds the PIN.
    case environment(String)

    /// Parses `file:/path`, `file:///path`, `env:NAME`, or a bare absolute path.
    public init(parsing text: String) throws {
        if text.hasPrefix("env:") {
            let name = String(text.dropFirst(4))
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                throw PKCS11Error(.invalidArgument, reason: "pin-source env: needs a variable name such as env:HSM_PIN")
            }
            self = .environment(name)
        } else if text.hasPrefix("file:") {
            let path = text.hasPrefix("file://") ? String(text.dropFirst(7)) : String(text.dropFirst(5))
            guard path.hasPrefix("/") else {
                throw PKCS11Error(.invalidArgument, reason: "pin-source file: needs an absolute path, such as file:/run/secrets/hsm-pin")
            }
            self = .file(path)
        } else if text.hasPrefix("/") {
            self = .file(text)
        } else {
            throw PKCS11Error(.invalidArgument, reason: "pin-source must be file:/path or env:NAME, got a value of another form")
        }
    }

    /// The form `init(parsing:)` reads. Names where the PIN is, never the PIN.
    public var description: String {
        switch self {
        case .file(let path): return "file:\(path)"
        case .environment(let name): return "env:\(name)"
        }
    }

    /// Reads the PIN into wiped-on-release memory. The intermediate buffers are wiped too.
    public func read() throws -> SecretBytes {
        switch self {
        case .environment(let name):
            guard let value = getenv(name) else {
                throw PKCS11Error(.pinSourceUnavailable, reason: "environment variable \(name) is not set")
            }
            let length = strlen(value)
            guard length > 0 else {
                throw PKCS11Error(.pinSourceUnavailable, reason: "environment variable \(name) is empty")
            }
            return SecretBytes(copying: UnsafeRawBufferPointer(start: value, count: length))
        case .file(let path):
            let descriptor = open(path, O_RDONLY | O_CLOEXEC)
            guard descriptor >= 0 else {
                let reason = String(cString: strerror(errno))
                throw PKCS11Error(.pinSourceUnavailable, reason: "cannot read PIN file \(path): \(reason)")
            }
            defer { close(descriptor) }
            let capacity = 256
            let scratch = SecretBytes(count: capacity)
            let length = scratch.withUnsafeMutableBytes { buffer in
                Glibc.read(descriptor, buffer.baseAddress, capacity)
            }
            guard length >= 0 else {
                throw PKCS11Error(.pinSourceUnavailable, reason: "cannot read PIN file \(path)")
            }
            guard length < capacity else {
                throw PKCS11Error(.pinSourceUnavailable, reason: "PIN file \(path) holds \(capacity) bytes or more; a PIN is shorter")
            }
            var end = length
            scratch.withUnsafeBytes { bytes in
                while end > 0, bytes[end - 1] == 0x0A || bytes[end - 1] == 0x0D { end -= 1 }
            }
            guard end > 0 else {
                throw PKCS11Error(.pinSourceUnavailable, reason: "PIN file \(path) is empty")
            }
            return scratch.withUnsafeBytes { SecretBytes(copying: $0[0..<end]) }
        }
    }
}
