#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Secret bytes (a PIN, key material) in memory this type owns, overwritten when released.
///
/// Swift arrays copy freely and never promise to wipe; this type keeps one heap buffer, never
/// prints its contents, and wipes it with `explicit_bzero` in `deinit` (a call the optimiser
/// may not remove, unlike a plain `memset` of memory about to be freed).
public final class SecretBytes: @unchecked Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    private let buffer: UnsafeMutableRawBufferPointer
    public let count: Int

    public init(count: Int) {
        self.count = count
        self.buffer = .allocate(byteCount: Swift.max(count, 1), alignment: 16)
        self.buffer.initializeMemory(as: UInt8.self, repeating: 0)
    }

    /// Copies `bytes` in. The caller remains responsible for its own copy.
    public convenience init<C: Collection>(copying bytes: C) where C.Element == UInt8 {
        self.init(count: bytes.count)
        var index = 0
        for byte in bytes {
            buffer[index] = byte
            index += 1
        }
    }

    /// Reads access to the bytes; the pointer must not escape the closure.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(buffer)[0..<count]))
    }

    public func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]))
    }

    /// Constant-time comparison.
    public func isEqual(to other: SecretBytes) -> Bool {
        guard count == other.count else { return false }
        var difference: UInt8 = 0
        for index in 0..<count { difference |= buffer[index] ^ other.buffer[index] }
        return difference == 0
    }

    deinit {
        #if canImport(Glibc)
        explicit_bzero(buffer.baseAddress!, buffer.count)
        #else
        memset_s(buffer.baseAddress!, buffer.count, 0, buffer.count)
        #endif
        buffer.deallocate()
    }

    public var description: String { "SecretBytes(\(count) bytes, redacted)" }
    public var debugDescription: String { description }
}
