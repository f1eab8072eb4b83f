// swift-tools-version:6.0
import PackageDescription

// Layers (dependencies point downwards only) — see ../shared/ARCHITECTURE.md:
//   strato (CLI, composition roots, benchmarks) → Experiments, Twin → Features → Coordinator, DataPlane, node kinds → Cluster
//   → Wire, Protocol, Scheduling (pure) → CZeroMQ, CSQLite, CChecksum
let package = Package(
    name: "Stratolab",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "strato", targets: ["strato"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CZeroMQ", path: "Sources/CZeroMQ", pkgConfig: "libzmq",
            providers: [.apt(["libzmq3-dev"])]),
        .systemLibrary(
            name: "CSQLite", path: "Sources/CSQLite", pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]),
        // Generated messages keep their fields in a class; Swift checks exclusive access to a class's
        // fields at run time on every get and set, which was a fifth of the heartbeat codec's time
        // (`strato bench wire`). Only the generated accessors are here, and they never overlap.
        .target(
            name: "Protocol",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")],
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"])]),
        .target(name: "Wire", dependencies: ["CZeroMQ", "Protocol"]),
        // Pure: policies, knowledge base, cost and performance models; knows nothing of the wire.
        .target(name: "Scheduling"),
        // CRC-32C for data-plane chunks (SSE4.2 where the CPU has it).
        .target(name: "CChecksum", path: "Sources/CChecksum"),
        .target(
            name: "Cluster",
            dependencies: ["Wire", "Protocol", "Scheduling", .product(name: "Logging", package: "swift-log")]),
        .target(
            name: "Coordinator",
            dependencies: ["Cluster", "Scheduling", "CSQLite", .product(name: "Logging", package: "swift-log")]),
        // Bulk transfers agent to agent: chunked, credit flow control, CRC-32C per chunk, CURVE.
        .target(
            name: "DataPlane",
            dependencies: ["Cluster", "Wire", "Protocol", "CChecksum", .product(name: "Logging", package: "swift-log")]),
        .target(name: "GPUAgent", dependencies: ["Cluster", "Scheduling"]),
        // One folder per capability (Jobs, Inference, …): its agent-side handler, coordinator-side
        // controller and execution backends; registered by the composition roots in strato.
        .target(
            name: "Features",
            dependencies: ["Cluster", "Coordinator", "GPUAgent", "Scheduling", "DataPlane", "CChecksum", .product(name: "Logging", package: "swift-log")]),
        // The digital twin: a discrete-event loop over the coordinator's machines and the features' twin models.
        .target(name: "Twin", dependencies: ["Features", "Scheduling"]),
        .target(name: "MemoryAgent", dependencies: ["Cluster", "Scheduling"]),
        .target(name: "RenderAgent", dependencies: ["Cluster", "Scheduling"]),
        .target(
            name: "Experiments",
            dependencies: ["Cluster", "Coordinator", "GPUAgent", "MemoryAgent", "RenderAgent", "Features", "Yams"]),
        .executableTarget(
            name: "strato",
            dependencies: [
                "CZeroMQ", "Coordinator", "DataPlane", "Features", "Twin", "GPUAgent", "MemoryAgent", "RenderAgent", "Experiments", "Wire",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        .testTarget(
            name: "StratolabTests",
            dependencies: ["Wire", "Cluster", "Coordinator", "Scheduling", "Experiments", "Features", "Twin", "GPUAgent", "MemoryAgent", "RenderAgent", "DataPlane", "Yams"]),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["Wire", "Cluster", "Experiments", "Scheduling", "GPUAgent", "Features"]),
    ],
    swiftLanguageModes: [.v5]
)
