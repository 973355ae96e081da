// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "OpenKCM",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "cmk", targets: ["cmk"]),
        .executable(name: "cmk-audit-verify", targets: ["cmk-audit-verify"]),
        .library(name: "AuditFormat", targets: ["AuditFormat"]),
        .library(name: "KSI", targets: ["KSI"]),
        .library(name: "PKCS11", targets: ["PKCS11"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth", from: "2.5.0"),
        .package(url: "https://github.com/vapor/jwt-kit", from: "5.8.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.29.0"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
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
        // One-shot SHA-256 from the system libcrypto (libssl-dev) for the audit log's hot paths.
        .systemLibrary(
            name: "CSHA256",
            path: "Sources/CSHA256",
            pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]
        ),
        // The leaf every other target may share, and that imports none of ours: secret bytes that
        // wipe themselves, canonical JSON (RFC 8785), RFC 3339 dates, lowercase hex, Ed25519 and
        // X25519 key files. The node and the offline verifier need nothing heavier for these.
        .target(
            name: "CMKCore",
            dependencies: [.product(name: "Crypto", package: "swift-crypto")]
        ),
        .target(
            name: "PKCS11",
            dependencies: [
                "CMKCore",
                "CPKCS11",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .target(
            name: "KSI",
            dependencies: ["CMKCore", 
                "PKCS11",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        // What the cloud KMS drivers share: the HTTP transport (bounded time, retries with
        // backoff and jitter on throttling), credential sources, the probe report builder.
        .target(
            name: "CloudKMS",
            dependencies: ["CMKCore", 
                "KSI",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        // AWS KMS as a token: JSON 1.1 protocol, SigV4.
        .target(
            name: "AWSKMS",
            dependencies: ["CMKCore", 
                "CloudKMS", "KSI",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        // GCP Cloud KMS as a token: REST v1 with CRC32C both ways, service-account JWT grant.
        .target(
            name: "GCPKMS",
            dependencies: ["CMKCore", 
                "CloudKMS", "KSI",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        // KMIP servers as tokens: TTLV over mutual TLS, Encrypt/Decrypt under the L1 key.
        .target(
            name: "KMIP",
            dependencies: ["CMKCore",
                "CloudKMS", "KSI",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
            ]
        ),
        // Azure Key Vault / Managed HSM as a token: wrapkey/unwrapkey, client-credentials tokens.
        .target(
            name: "AzureKeyVault",
            dependencies: ["CMKCore", 
                "CloudKMS", "KSI",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        // SQL on either backend behind one small API: SQLite through GRDB (the embedded default)
        // or PostgreSQL through postgres-nio (several gateway replicas on one database). The
        // Registry and the audit store write their SQL once, against this.
        .target(
            name: "Storage",
            dependencies: ["CMKCore",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The system of record: tenants, keystores, L1 links, L2 keys, IVK versions, outbox.
        .target(
            name: "Registry",
            dependencies: ["CMKCore", "Storage", .product(name: "GRDB", package: "GRDB.swift")]
        ),
        // What a compliance team needs to verify an export offline: canonical records, an
        // RFC 9162 Merkle tree, checkpoints and verifier keys, the export format, the verifier
        // and the report `cmk audit verify` and `cmk-audit-verify` share. No GRDB, KSI or PKCS11.
        .target(
            name: "AuditFormat",
            dependencies: [
                "CMKCore",
                "CSHA256",
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // The live audit log: the store with group commit (SQLite), checkpoint signers (a key
        // file, or an HSM through the KSI), witness copies; writes the format above.
        .target(
            name: "Audit",
            dependencies: [
                "AuditFormat",
                "CMKCore",
                "Storage",
                "KSI",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ]
        ),
        // Orbital: the outbox's events pushed to every node's stream, their signed purge
        // acknowledgements, and revocation progress (folders in the kill-switch's order).
        .target(
            name: "Orbital",
            dependencies: [
                "CMKCore",
                "NodeProtocol",
                "Registry",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The gateway–node wire contract: signed requests, enrolment proof, HPKE binding, acks.
        .target(
            name: "NodeProtocol",
            dependencies: ["CMKCore", .product(name: "Crypto", package: "swift-crypto")]
        ),
        // TLS for the listeners: certificate files read again when they change (no restart),
        // optional client certificates, the loopback rule for plain HTTP.
        .target(
            name: "TLSSupport",
            dependencies: [
                "CMKCore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
        // The regional node: identity, keys under leases, application crypto, the Orbital
        // stream client, purge and signed acknowledgements, its local API.
        .target(
            name: "NodeAgent",
            dependencies: [
                "CMKCore",
                "NodeProtocol",
                "TLSSupport",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationEssentialsCompat", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The domain layer, below every transport: configuration, tenants and keystores, the
        // handshake, the kill-switch and its lifting, unseal, approvals, rotation, sessions and
        // the access policy. It throws `DomainError`s and imports no HTTP framework.
        .target(
            name: "ControlPlane",
            dependencies: ["Storage", 
                "CMKCore",
                "KSI",
                "AWSKMS",
                "GCPKMS",
                "AzureKeyVault",
                "KMIP",
                "PKCS11",
                "Registry",
                "Audit",
                "AuditFormat",
                "NodeProtocol",
                "Orbital",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // The gRPC Management API's messages and service stubs, generated from Protos/ by
        // Scripts/generate-grpc and committed (CI never builds the protobuf plugins).
        .target(
            name: "CMKProto",
            dependencies: [
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            exclude: ["Generated/proto-sources.sha256"]
        ),
        // The transports over it: the Management API (REST and gRPC), the node API, the portal.
        .target(
            name: "CMKServer",
            dependencies: ["Storage", "CMKCore", "ControlPlane", "CMKProto",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOCertificateReloading", package: "swift-nio-extras"),
                "KSI",
                "Registry",
                "Audit",
                "AuditFormat",
                "NodeProtocol",
                "Orbital",
                "TLSSupport",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationEssentialsCompat", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            // The portal: plain HTML, CSS and JavaScript, no build toolchain.
            resources: [.copy("Portal")]
        ),
        .executableTarget(
            name: "cmk",
            dependencies: ["CMKCore", "ControlPlane",
                "KSI",
                "PKCS11",
                "CMKServer",
                "Registry",
                "AuditFormat",
                "NodeAgent",
                "TLSSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // `cmk audit verify` on its own, for compliance teams: links the audit format only.
        .executableTarget(
            name: "cmk-audit-verify",
            dependencies: [
                "AuditFormat",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/cmk-audit-verify"
        ),
        .executableTarget(name: "audit-bench", dependencies: ["CMKCore", "Audit", "AuditFormat"], path: "Sources/audit-bench"),
        .executableTarget(
            name: "killswitch-bench",
            dependencies: [
                "CMKCore",
                "NodeAgent",
                "NodeProtocol",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationEssentialsCompat", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Sources/killswitch-bench"
        ),
        .executableTarget(
            name: "ksi-bench",
            dependencies: ["KSI", "PKCS11"],
            path: "Sources/ksi-bench"
        ),
        // Provisions the SoftHSM token directory the tests share (one per test process:
        // SoftHSM reads SOFTHSM2_CONF once, at C_Initialize).
        .target(name: "TestSupport", dependencies: ["CMKCore", "PKCS11", "KSI", "AuditFormat", "AWSKMS", "GCPKMS", "AzureKeyVault", "KMIP",
                                                  .product(name: "X509", package: "swift-certificates"),
                                                  .product(name: "SwiftASN1", package: "swift-asn1"),
                                                  .product(name: "Crypto", package: "swift-crypto"),
                                                  .product(name: "_CryptoExtras", package: "swift-crypto"),
                                                  .product(name: "NIOConcurrencyHelpers", package: "swift-nio")], path: "Tests/TestSupport",
                // The fault-injecting PKCS#11 module: C, compiled by the tests with gcc
                // (FaultModule.swift), never by SwiftPM (a Swift target cannot hold C files).
                exclude: ["FaultModule"]),
        .testTarget(name: "PKCS11Tests", dependencies: ["CMKCore", "CPKCS11", "PKCS11", "KSI", "TestSupport"]),
        .testTarget(name: "KSITests", dependencies: ["CMKCore", "KSI", "PKCS11", "TestSupport", .product(name: "Crypto", package: "swift-crypto")]),
        .testTarget(
            name: "CloudKMSTests",
            dependencies: ["CMKCore", "CloudKMS", "AWSKMS", "GCPKMS", "AzureKeyVault", "KMIP", "KSI", "PKCS11", "TestSupport",
                           .product(name: "NIOHTTP1", package: "swift-nio"),
                           .product(name: "NIOConcurrencyHelpers", package: "swift-nio")],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "AuditTests",
            dependencies: ["CMKCore", "Audit", "AuditFormat", "Storage", "TestSupport", "PKCS11", "KSI", .product(name: "Crypto", package: "swift-crypto"),
                           .product(name: "GRDB", package: "GRDB.swift")],
            resources: [.copy("Vectors")]
        ),
        .testTarget(
            name: "NodeAgentTests",
            dependencies: ["CMKCore", "NodeAgent", "NodeProtocol", "Audit", "PKCS11", .product(name: "Crypto", package: "swift-crypto"),
                           .product(name: "NIOConcurrencyHelpers", package: "swift-nio"), .product(name: "NIOCore", package: "swift-nio")]
        ),
        // The test bed itself: the private PostgreSQL cluster and haproxy the HA tests run on.
        .testTarget(name: "TestbedTests", dependencies: ["TestSupport"]),
        .testTarget(name: "RegistryTests", dependencies: ["CMKCore", "Registry", "Storage", "TestSupport", .product(name: "GRDB", package: "GRDB.swift")]),
        .testTarget(
            name: "CMKServerTests",
            dependencies: ["CMKCore", 
                "CMKServer", "ControlPlane", "KSI", "PKCS11", "Registry", "TestSupport", "Audit", "AuditFormat", "NodeProtocol", "NodeAgent", "Orbital", "TLSSupport",
                "AWSKMS", "GCPKMS", "AzureKeyVault", "KMIP",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationEssentialsCompat", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "JWTKit", package: "jwt-kit"),
                "CMKProto",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            // The browser walks, run by PortalTests (and Scripts/screenshots) with python3, and the
            // gRPC journey GRPCProcessTests runs with Python's grpcio.
            exclude: ["portal_e2e.py", "portal_tls.py", "grpc_journey.py"]
        ),
    ],
    swiftLanguageModes: [.v6]
)

// The compiler's import rules for every target of ours: existentials spelled `any`, members
// visible only through modules a file imports itself, imports internal unless marked public.
for target in package.targets where target.type != .system {
    target.swiftSettings = (target.swiftSettings ?? []) + [
        .enableUpcomingFeature("ExistentialAny"),
        .enableUpcomingFeature("MemberImportVisibility"),
        .enableUpcomingFeature("InternalImportsByDefault"),
    ]
}
