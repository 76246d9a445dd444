import ArgumentParser
import Foundation
import KernelTree
import LabPipeline
import LabSupport

/// The build options shared by `build`, `test` and `bisect`.
struct BuildOptions: ParsableArguments {
    @Option(help: "Your own git kernel tree (default: Debian's linux-source-6.12, fetched with apt-get download).")
    var tree: String?

    @Option(help: "With --tree: the commit to start from.")
    var base: String = "HEAD"

    @Option(help: "The series: a bundled version (v2, v3, v4, v5), a directory with a `series` file, or an mbox (default: v2).")
    var series: String?

    @Option(help: "Apply only the first N patches (0 = the baseline).")
    var upto: Int?

    @Flag(help: "Build the baseline (same as --upto 0).")
    var baseline = false

    @Option(help: "Leave these patches out (comma-separated numbers, e.g. 2 or 1,3).", transform: BuildOptions.parseNumbers)
    var without: [Int] = []

    @Option(name: .customLong("config"), help: "An extra config fragment (repeatable), merged after the lab's.")
    var configFragments: [String] = []

    @Option(
        help: ArgumentHelp(
            "Sanitizer kernel: any of \(Sanitizer.allCases.map(\.rawValue).joined(separator: ",")) (comma-separated); each combination builds in its own object directory.",
            valueName: "LIST"),
        transform: Sanitizer.parseList)
    var sanitize: [Sanitizer] = []

    @Option(help: "Parallel make jobs (default: the number of CPUs).")
    var jobs: Int?

    @Option(help: "Cache directory (default: $P2PLAB_CACHE or ~/.cache/p2plab).")
    var cache: String?

    @Flag(help: "Print every external command (git, make, QEMU, …), shell-quoted, before it runs.")
    var showCommands = false

    static func parseNumbers(_ text: String) throws -> [Int] {
        try text.split(separator: ",").map {
            guard let n = Int($0.trimmingCharacters(in: .whitespaces)), n > 0 else {
                throw ValidationError("--without takes patch numbers from 1, like 2 or 1,3")
            }
            return n
        }
    }

    func validate() throws {
        if baseline && upto != nil && upto != 0 { throw ValidationError("--baseline and --upto \(upto!) contradict each other") }
        if let upto, upto < 0 { throw ValidationError("--upto takes 0 or more") }
        if tree == nil && base != "HEAD" { throw ValidationError("--base goes with --tree") }
    }

    var selection: PatchSelection { PatchSelection(upto: baseline ? 0 : upto, without: without) }

    var cacheLayout: CacheLayout { CacheLayout(root: cache.map { URL(fileURLWithPath: $0) }) }

    var sourceSpec: SourceSpec {
        if let tree { return .tree(path: URL(fileURLWithPath: tree), base: base) }
        return .defaultDebian
    }

    func seriesURL(root: URL) throws -> URL {
        try BundledSeries.resolve(series, root: root)
    }

    func fragmentURLs(root: URL) -> [URL] {
        [root.appendingPathComponent("kernel/config/p2plab.config")] + Sanitizer.fragments(sanitize, root: root)
            + configFragments.map { URL(fileURLWithPath: $0) }
    }
}

/// A sanitizer `--sanitize` can build in: one fragment `kernel/config/sanitize-NAME.config` each,
/// after `sanitize-common.config` (debug info for decode_stacktrace.sh, stack traces).
enum Sanitizer: String, CaseIterable, Sendable, Comparable, ExpressibleByArgument {
    case kasan
    case lockdep
    case debugVM = "debug-vm"
    case kfence
    case ubsan

    static func < (lhs: Sanitizer, rhs: Sanitizer) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }

    static func parseList(_ text: String) throws -> [Sanitizer] {
        let names = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        var chosen: Set<Sanitizer> = []
        for name in names {
            guard let sanitizer = Sanitizer(rawValue: name) else {
                throw ValidationError("--sanitize: unknown sanitizer '\(name)'; choose from \(allCases.map(\.rawValue).joined(separator: ", "))")
            }
            chosen.insert(sanitizer)
        }
        guard !chosen.isEmpty else { throw ValidationError("--sanitize needs at least one of \(allCases.map(\.rawValue).joined(separator: ", "))") }
        return chosen.sorted()
    }

    /// The fragments of `sanitizers`, in a fixed order (so the same set always hashes the same).
    static func fragments(_ sanitizers: [Sanitizer], root: URL) -> [URL] {
        guard !sanitizers.isEmpty else { return [] }
        let dir = root.appendingPathComponent("kernel/config")
        return [dir.appendingPathComponent("sanitize-common.config")]
            + Set(sanitizers).sorted().map { dir.appendingPathComponent("sanitize-\($0.rawValue).config") }
    }

}

extension BuildOptions {
    /// The runner the kernel steps use: with --show-commands it prints each external command,
    /// shell-quoted, before it runs.
    var runner: Runner { Runner(echo: showCommands) }

    /// The typed recipe the pipeline builds from.
    func recipe(_ setup: LabSetup) throws -> KernelRecipe {
        KernelRecipe(
            source: sourceSpec, series: try seriesURL(root: setup.root), fragments: fragmentURLs(root: setup.root),
            jobs: jobs ?? ProcessInfo.processInfo.activeProcessorCount, bundledRoot: setup.root)
    }
}

/// Prints progress lines on stderr, prefixed so they stand apart from results.
@Sendable func progressLine(_ text: String) {
    FileHandle.standardError.write(Data("[p2plab] \(text)\n".utf8))
}

