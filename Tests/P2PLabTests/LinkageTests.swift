import Foundation
import Testing

/// The host binary builds, boots and reports; only the guest suite talks to RDMA devices and loads
/// modules. So a host without rdma-core's libraries can still run `p2plab test`.
@Suite("What each executable links")
struct LinkageTests {
    static let products = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent(".build/debug")
    static let built = ["p2plab", "p2plab-guest"].allSatisfy {
        FileManager.default.isExecutableFile(atPath: products.appendingPathComponent($0).path)
    }
    static let ldd = FileManager.default.isExecutableFile(atPath: "/usr/bin/ldd")

    /// The shared libraries `ldd` says `name` needs.
    static func libraries(_ name: String) throws -> [String] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/ldd")
        process.arguments = [products.appendingPathComponent(name).path]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self).split(separator: "\n").map {
            String($0.trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "")
        }
    }

    @Test(
        "the host p2plab links neither libibverbs nor libkmod; p2plab-guest links both",
        .enabled(if: built, "build both products first (swift build; scripts/setup does)"),
        .enabled(if: ldd, "needs /usr/bin/ldd"))
    func hostLinksNoRDMA() throws {
        let guest = try Self.libraries("p2plab-guest")
        // The control: ldd reads this binary's needs, so an empty answer below means something.
        #expect(guest.contains { $0.hasPrefix("libibverbs.so") })
        #expect(guest.contains { $0.hasPrefix("libkmod.so") })
        let host = try Self.libraries("p2plab")
        #expect(!host.isEmpty)
        #expect(!host.contains { $0.hasPrefix("libibverbs.so") })
        #expect(!host.contains { $0.hasPrefix("libkmod.so") })
    }

    @Test(
        "p2plab-guest carries Swift's runtime and Foundation itself, the host's p2plab uses the shared ones",
        .enabled(if: built, "build both products first (swift build; scripts/setup does)"),
        .enabled(if: ldd, "needs /usr/bin/ldd"))
    func guestLoadsLittle() throws {
        let guest = try Self.libraries("p2plab-guest")
        // The control: the libraries that stay shared are still listed.
        #expect(guest.contains { $0.hasPrefix("libibverbs.so") })
        #expect(!guest.contains { $0.hasPrefix("libswift") || $0.hasPrefix("libFoundation") || $0.hasPrefix("libdispatch") })
        let host = try Self.libraries("p2plab")
        #expect(host.contains { $0.hasPrefix("libswiftCore.so") })
    }

    @Test(
        "scripts/setup builds the exit holder beside p2plab-guest (the suite starts it from there)",
        .enabled(if: built, "build both products first (swift build; scripts/setup does)"))
    func exitHolderBesideGuest() throws {
        let holder = Self.products.appendingPathComponent("p2plab-exit-holder")
        #expect(FileManager.default.isExecutableFile(atPath: holder.path),
                "\(holder.path) missing: lifecycle.exit_releases would SKIP; build every executable (swift build)")
        let setup = Self.products.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("scripts/setup")
        let text = try String(contentsOf: setup, encoding: .utf8)
        // A build of named products only would leave the holder out.
        #expect(!text.contains("build --product"))
    }
}
