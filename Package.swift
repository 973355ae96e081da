// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "OpenKCM",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "cmk", targets: ["cmk"]),
        .library(name: "KSI", targets: ["KSI"]),
        .library(name: "PKCS11", targets: ["PKCS11"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
    ],
    targets: [
        // The PKCS#11 headers as libp11-kit-dev ships them, plus a few inline helpers that
        // Swift cannot express safely (a memory wipe the optimiser may not remove).
        .systemLibrary(
            name: "CPKCS11",
            path: "Sources/CPKCS11",
            pkgConfig: "p11-kit-1",
            providers: [.apt(["libp11-kit-dev"])]
        ),
        .target(
            name: "PKCS11",
            dependencies: [
                "CPKCS11",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .target(
            name: "KSI",
            dependencies: [
                "PKCS11",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "cmk",
            dependencies: [
                "KSI",
                "PKCS11",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "ksi-bench",
            dependencies: ["KSI", "PKCS11"],
            path: "Sources/ksi-bench"
        ),
        // Provisions the SoftHSM token directory the tests share (one per test process:
        // SoftHSM reads SOFTHSM2_CONF once, at C_Initialize).
        .target(name: "TestSupport", dependencies: ["PKCS11", "KSI"], path: "Tests/TestSupport"),
        .testTarget(name: "PKCS11Tests", dependencies: ["PKCS11", "KSI", "TestSupport"]),
        .testTarget(name: "KSITests", dependencies: ["KSI", "PKCS11", "TestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
