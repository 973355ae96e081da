// The Swift side of Scripts/bench-ksi: the same three loops as Scripts/bench/ksi_bench.c, made
// through the KSI's PKCS#11 driver (session pool, handle cache, off-pool threads, error
// translation), one awaited operation at a time. Prints one JSON line per loop.
import Foundation
import KSI
import PKCS11

struct Arguments {
    var module = "/usr/lib/softhsm/libsofthsm2.so"
    var token = ""
    var pinEnv = ""
    var key = "l1"
    var target = "bench-target"
    var iterations = 10_000
    var warmup = 200
    var ops: Set<String> = ["wrap", "unwrap_destroy", "probe"]

    init() {
        var arguments = CommandLine.arguments.dropFirst()
        while let flag = arguments.popFirst() {
            guard let value = arguments.popFirst() else { Self.usage() }
            switch flag {
            case "--module": module = value
            case "--token": token = value
            case "--pin-env": pinEnv = value
            case "--key": key = value
            case "--target": target = value
            case "--iterations": iterations = Int(value) ?? 0
            case "--warmup": warmup = Int(value) ?? 0
            case "--ops": ops = Set(value.split(separator: ",").map(String.init))
            default: Self.usage()
            }
        }
        if token.isEmpty || pinEnv.isEmpty || iterations <= 0 { Self.usage() }
    }

    static func usage() -> Never {
        FileHandle.standardError.write(Data("usage: ksi-bench --token LABEL --pin-env NAME [--module PATH] [--key LABEL] [--target LABEL] [--iterations N] [--warmup W]\n".utf8))
        exit(64)
    }
}

@inline(__always) func nowMicroseconds() -> Double {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return Double(spec.tv_sec) * 1e6 + Double(spec.tv_nsec) / 1e3
}

func report(_ op: String, _ latencies: [Double]) {
    let sorted = latencies.sorted()
    let total = latencies.reduce(0, +)
    func rank(_ p: Double) -> Double { sorted[max(0, Int((p * Double(sorted.count)).rounded(.up)) - 1)] }
    let line = String(format: "{\"impl\":\"%@\",\"op\":\"%@\",\"iterations\":%d,\"ops_per_sec\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f}",
                      implementation, op, sorted.count, Double(sorted.count) / (total / 1e6), rank(0.50), rank(0.99))
    print(line)
}

func measure(_ op: String, warmup: Int, iterations: Int, _ body: @Sendable () async throws -> Void) async throws {
    for _ in 0..<warmup { try await body() }
    var latencies: [Double] = []
    latencies.reserveCapacity(iterations)
    for _ in 0..<iterations {
        let start = nowMicroseconds()
        try await body()
        latencies.append(nowMicroseconds() - start)
    }
    report(op, latencies)
}

let arguments = Arguments()
/// `OPENKCM_BENCH_HOP=1` measures callers on Swift's global executor (one thread hand-off each way
/// per operation); the default runs the loop on the token's executor, as the gateway does.
let onExecutor = ProcessInfo.processInfo.environment["OPENKCM_BENCH_HOP"] != "1"
let implementation = onExecutor ? "ksi" : "ksi-hop"
let keystore = PKCS11Keystore()
do {
    var l1URI = PKCS11URI()
    l1URI.token = arguments.token
    l1URI.object = arguments.key
    l1URI.modulePath = arguments.module
    l1URI.pinSource = "env:\(arguments.pinEnv)"
    var targetURI = l1URI
    targetURI.object = arguments.target
    let token = try await keystore.token(for: l1URI)
    let l1 = KeyReference.pkcs11(l1URI)
    let target = KeyReference.pkcs11(targetURI)

    try await withTaskExecutorPreference(onExecutor ? token.executor : nil) {
    if arguments.ops.contains("wrap") { try await measure("wrap", warmup: arguments.warmup, iterations: arguments.iterations) {
        _ = try await token.wrapResidentKey(target, with: l1)
    } }
    let blob = try await token.wrapResidentKey(target, with: l1)
    if arguments.ops.contains("unwrap_destroy") { try await measure("unwrap_destroy", warmup: arguments.warmup, iterations: arguments.iterations) {
        try await token.verifyUnwrap(blob, with: l1)
    } }
    if arguments.ops.contains("probe") { try await measure("probe", warmup: arguments.warmup, iterations: arguments.iterations) {
        let result = await token.probe(l1)
        if !result.passed { throw result.error ?? KeystoreError(.internal, "probe failed") }
    } }
    }
} catch {
    FileHandle.standardError.write(Data("ksi-bench: \(error)\n".utf8))
    await keystore.shutdown(finalizingModules: true)
    exit(2)
}
await keystore.shutdown(finalizingModules: true)
