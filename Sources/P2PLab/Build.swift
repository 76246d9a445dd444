import ArgumentParser
import Foundation
import KernelTree
import LabPipeline
import LabSupport

extension P2PLabCommand {
    /// Build a kernel: Debian 6.12 source or your tree, plus the series, plus the lab config.
    struct Build: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "build",
            abstract: "Build a kernel: Debian 6.12 source or your tree, plus the series, plus the lab config.",
            discussion: """
                The source is recorded once as a baseline git commit; each variant of the series is a branch \
                applied with git am (one commit per patch), built out of tree in an object directory keyed by \
                source and config, so switching variants rebuilds only what changed.
                """)

        @OptionGroup var options: BuildOptions

        @Flag(help: "Print the build manifest as JSON on stdout.")
        var json = false

        func run() async throws {
            let setup = try LabSetup.forCommands(cache: options.cacheLayout)
            let pipeline = VariantPipeline(setup: setup, runner: options.runner, progress: progressLine)
            let manifest = try await pipeline.kernel(try options.recipe(setup), options.selection, module: false).manifest
            if json {
                print(String(decoding: try LabJSON.encode(manifest), as: UTF8.self))
                return
            }
            let applied = manifest.patches.filter { $0.state == .applied }.count
            let present = manifest.patches.filter { $0.state == .alreadyInTree }.count
            print("kernel    \(manifest.kernelRelease) (\(manifest.variant): \(applied) patches applied\(present > 0 ? ", \(present) already in tree" : ""))")
            print("source    \(manifest.source), branch \(manifest.branch)")
            if let id = manifest.seriesID { print("series    \(id)") }
            if let hash = manifest.patchsetHash, !hash.isEmpty { print("patchset  \(hash) (KCIDB patchset hash)") }
            print("bzImage   \(manifest.bzImage)")
            print("config    \(manifest.config)")
            print("manifest  \(URL(fileURLWithPath: manifest.bzImage).deletingLastPathComponent().appendingPathComponent("manifest.json").path)")
            print(manifest.cacheHit ? "time      cached" : String(format: "time      %.0f s", manifest.buildSeconds))
        }
    }
}
