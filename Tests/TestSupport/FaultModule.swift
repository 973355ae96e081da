import Foundation
import NIOConcurrencyHelpers

/// The fault-injecting PKCS#11 module (`FaultModule/fault_pkcs11.c`): SoftHSM underneath, with
/// failures, hangs and crashes on the Nth call of a chosen function, and a count of every call.
///
/// Compiled with gcc once per test process into a private directory (the C file is not part of
/// any SwiftPM target: `Package.swift` excludes the folder). The shim reads its control file on
/// every call, so a test changes the fault mid-run by writing the file again (`inject`).
///
/// One shim per process, like any PKCS#11 module (`ModuleManager` loads a path once). Under it
/// runs the same SoftHSM library and token directory as `SoftHSMFixture`, so tokens are shared;
/// tests that use it use their own token (`fault`).
public final class FaultModule: Sendable {
    /// The compiled module.
    public let path: String
    /// The control file this process's shim reads.
    public let controlPath: String
    /// The counts file this process's shim writes.
    public let countsPath: String
    public let directory: String

    public static let shared: FaultModule = {
        do {
            return try FaultModule()
        } catch {
            fatalError("fault module: \(error)")
        }
    }()

    /// The C source, in the repository.
    public static var sourcePath: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("FaultModule/fault_pkcs11.c").path
    }

    init() throws {
        // SoftHSM reads SOFTHSM2_CONF at C_Initialize: the fixture's tokens must exist first.
        let fixture = SoftHSMFixture.shared
        directory = fixture.directory + "/fault-module"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        path = directory + "/libfault_pkcs11.so"
        controlPath = directory + "/control"
        countsPath = directory + "/counts"
        let result = try SoftHSMFixture.run("/usr/bin/gcc", [
            "-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-Wno-unused-parameter",
            "-I/usr/include/p11-kit-1", "-o", path, Self.sourcePath, "-ldl", "-lpthread",
        ])
        guard result.status == 0 else {
            throw SoftHSMFixture.FixtureError(message: "gcc could not build \(Self.sourcePath): \(result.error)")
        }
        try Data().write(to: URL(fileURLWithPath: controlPath))
        // The shim reads these on every call; set before the module is loaded in this process.
        setenv("OPENKCM_FAULT_CONTROL", controlPath, 1)
        setenv("OPENKCM_FAULT_COUNTS", countsPath, 1)
        setenv("OPENKCM_FAULT_MODULE", SoftHSMFixture.modulePath, 1)
    }

    /// Replaces the faults with `rules` (`"C_WrapKey 1 DEVICE_ERROR"`, `"C_Login 1+ PIN_INCORRECT"`,
    /// `"C_WrapKey 1 hang:3"`; see the C file) and starts the call counts from zero. No rules:
    /// every call goes straight through.
    public func inject(_ rules: [String] = []) throws {
        let generation = Self.generation.withLockedValue { value -> Int in
            value += 1
            return value
        }
        // A fresh first line makes every call of `inject` a change the shim notices, even with
        // the same rules, and so a new start for the counts.
        let text = (["# generation \(generation) \(UUID())"] + rules).joined(separator: "\n") + "\n"
        let temporary = controlPath + ".tmp"
        try Data(text.utf8).write(to: URL(fileURLWithPath: temporary))
        _ = rename(temporary, controlPath)
        try? FileManager.default.removeItem(atPath: countsPath)
    }

    /// Calls per function since the last `inject` (as of the last call the shim saw).
    public func counts(at path: String? = nil) -> [String: Int] {
        guard let text = try? String(contentsOfFile: path ?? countsPath, encoding: .utf8) else { return [:] }
        var counts: [String: Int] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, let count = Int(parts[1]) { counts[String(parts[0])] = count }
        }
        return counts
    }

    public func count(_ function: String) -> Int { counts()[function] ?? 0 }

    /// The environment a child process needs to load the shim with its own control and counts
    /// files (so its faults and counts do not mix with this process's).
    public func childEnvironment(control: String, counts: String) -> [String: String] {
        ["OPENKCM_FAULT_CONTROL": control, "OPENKCM_FAULT_COUNTS": counts,
         "OPENKCM_FAULT_MODULE": SoftHSMFixture.modulePath, "SOFTHSM2_CONF": SoftHSMFixture.shared.configPath]
    }

    private static let generation = NIOLockedValueBox(0)
}

