// swift-tools-version: 6.2
import PackageDescription

// The modules the guest suite runs, optimized in debug builds too: under TCG the suite's own Swift
// (kernel-log scans, KTAP, generic code that -Onone leaves unspecialized) is emulated instruction
// by instruction, and every boot waits for it.
let guestOptimized: [SwiftSetting] = [.unsafeFlags(["-O"], .when(configuration: .debug))]

let package = Package(
    name: "p2plab",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "p2plab", targets: ["p2plab"]),
        // The suite where the kernel under test runs (the lab machine, real hardware); the host's
        // p2plab finds it beside itself.
        .executable(name: "p2plab-guest", targets: ["p2plab-guest"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", exact: "1.8.2"),
        .package(url: "https://github.com/swiftlang/swift-subprocess.git", exact: "1.0.2"),
        .package(url: "https://github.com/apple/swift-system.git", exact: "1.8.1"),
    ],
    targets: [
        .executableTarget(name: "p2plab", dependencies: ["P2PLab"]),
        // Swift's runtime and Foundation linked in: the guest would load each shared library over 9p
        // and relocate it under TCG, and the suite's start is part of every boot's wait. The modules
        // are compiled against the shared libraries (the host's p2plab uses them too), so Foundation's
        // C parts are named here, and the toolchain's lld links them: it takes static archives in
        // any order, where gold wants each after its users.
        .executableTarget(
            name: "p2plab-guest", dependencies: ["GuestSuite"],
            linkerSettings: [
                .unsafeFlags(["-static-stdlib", "-use-ld=lld"]),
                .linkedLibrary("CoreFoundation"), .linkedLibrary("_FoundationICU"),
                .linkedLibrary("_FoundationCollections"), .linkedLibrary("_FoundationCShims"),
            ]),
        // The child of lifecycle.exit_releases, which p2plab-guest runs from beside itself.
        .executableTarget(name: "p2plab-exit-holder", dependencies: ["CP2PLabUAPI"], linkerSettings: [.linkedLibrary("ibverbs")]),
        .target(
            name: "GuestSuite",
            dependencies: [
                "Checks", "Catalog", "KernelTree", "LabSupport", "LabCommandLine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: guestOptimized),
        .target(
            name: "LabCommandLine",
            dependencies: ["LabSupport", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .target(
            name: "P2PLab",
            dependencies: [
                "LabPipeline", "LabCommandLine", "KernelTree", "Machine", "Catalog", "KTAP", "LabSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .target(
            name: "LabSupport",
            dependencies: [
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: guestOptimized),
        .target(name: "KernelTree", dependencies: ["LabSupport"]),
        // One variant's way through the lab (source → series → build → module → boot → checks →
        // results); the commands are its clients. No C libraries: it runs on the host.
        .target(name: "LabPipeline", dependencies: ["KernelTree", "Machine", "KTAP", "KernelConsole", "LabSupport"]),
        .target(name: "Machine", dependencies: ["LabSupport", "KernelConsole", "CHostClock"]),
        // The host's time-stamp counter, whose rate a TCG guest would otherwise calibrate at boot.
        .target(name: "CHostClock"),
        // The suite as data (names, descriptions, needs, expectations, patch identity): no C, so the
        // host side can use it without linking what the guest side needs.
        .target(name: "Catalog", swiftSettings: guestOptimized),
        .target(name: "Checks", dependencies: ["Catalog", "KTAP", "KernelConsole", "LabSupport", "CIBVerbs", "CKmod", "CP2PLabUAPI"], swiftSettings: guestOptimized),
        .target(name: "KTAP", dependencies: ["KernelConsole", "LabSupport"], swiftSettings: guestOptimized),
        // Kernel-log classification (WARNING, BUG, Oops, panic, KASAN): what the VM's console
        // monitor, the guest's per-check /dev/kmsg scan and the KTAP parser all need.
        .target(name: "KernelConsole", swiftSettings: guestOptimized),
        .systemLibrary(name: "CIBVerbs", pkgConfig: "libibverbs", providers: [.apt(["libibverbs-dev"])]),
        .systemLibrary(name: "CKmod", pkgConfig: "libkmod", providers: [.apt(["libkmod-dev"])]),
        .target(name: "CP2PLabUAPI"),
        .testTarget(name: "KTAPTests", dependencies: ["KTAP", "KernelConsole"], resources: [.copy("Fixtures")]),
        .testTarget(name: "KernelTreeTests", dependencies: ["KernelTree"], resources: [.copy("Fixtures")]),
        .testTarget(name: "MachineTests", dependencies: ["Machine", "KTAP"], resources: [.copy("Fixtures")]),
        .testTarget(name: "CatalogTests", dependencies: ["Catalog", "KernelTree"], resources: [.copy("Fixtures")]),
        .testTarget(name: "ChecksTests", dependencies: ["Checks", "Catalog"], resources: [.copy("Fixtures")]),
        .testTarget(name: "P2PLabTests", dependencies: ["P2PLab", "Checks", "GuestSuite", "LabPipeline", "LabCommandLine", "Machine", "LabSupport"], resources: [.copy("Fixtures")]),
    ],
    swiftLanguageModes: [.v6]
)
