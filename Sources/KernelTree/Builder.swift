import Foundation
import LabSupport

/// What `p2plab build` produced, written as JSON next to the outputs (`manifest.json`) and as the
/// cache's `builds/latest.json`, which `boot` and `test` read.
public struct BuildManifest: Sendable, Codable, Equatable {
    public var source: String
    public var sourceId: String
    public var baseCommit: String
    public var variant: String
    public var branch: String
    public var head: String
    public var patches: [AppliedPatch]
    public var configHash: String
    public var fragments: [String]
    public var compiler: String
    public var kernelRelease: String
    /// Seconds spent in make (0 on a cache hit).
    public var buildSeconds: Double
    /// True when the outputs came from the cache without running make.
    public var cacheHit: Bool
    public var bzImage: String
    public var config: String
    public var objectDir: String
    public var sourceDir: String
    public var log: String
    public var createdAt: String
    /// The series' id on the list (its cover letter's Message-ID), when known.
    public var seriesID: String? = nil
    /// KCIDB's patchset hash: SHA-256 over the newline-terminated SHA-256 of each applied patch,
    /// in order ("" for the baseline).
    public var patchsetHash: String? = nil
}

/// The lean base p2plab starts every config from; part of the config hash.
public let baseConfigRecipe = ["tinyconfig", "kvm_guest.config"]

/// Configures and builds a prepared variant out of tree, caching by source + config.
public struct KernelBuilder: Sendable {
    public let cache: CacheLayout
    public let runner: Runner
    public let jobs: Int
    public let progress: @Sendable (String) -> Void
    /// Minimum free space before a build starts (a lean build needs about 2.5 GiB).
    public var requiredFreeMiB = 4096
    /// The config targets every build starts from, before the fragments are merged.
    public var baseRecipe: [String]
    public let limits: LabLimits

    public init(cache: CacheLayout, runner: Runner, jobs: Int = ProcessInfo.processInfo.activeProcessorCount,
                baseRecipe: [String] = baseConfigRecipe, limits: LabLimits = .standard,
                progress: @escaping @Sendable (String) -> Void) {
        self.cache = cache
        self.runner = runner
        self.jobs = max(1, jobs)
        self.baseRecipe = baseRecipe
        self.limits = limits
        self.progress = progress
    }

    /// The config hash: the base recipe plus every fragment's text, in order.
    public static func configHash(texts: [String], base: [String] = baseConfigRecipe) -> String {
        fnv1a64Hex((base + texts).joined(separator: "\u{0}"))
    }

    /// Where a variant's build lives: its config hash, object directory and outputs.
    struct Place {
        var fragments: [ConfigFragment]
        var configHash: String
        var objDir: URL
        var outDir: URL
        var manifest: URL { outDir.appendingPathComponent("manifest.json") }
    }

    func place(_ variant: PreparedVariant, fragmentFiles: [URL]) throws -> Place {
        let texts = try fragmentFiles.map { url -> String in
            guard let t = try? String(contentsOf: url, encoding: .utf8) else { throw BuildError.missingFragment(url.path) }
            return t
        }
        let configHash = Self.configHash(texts: texts, base: baseRecipe)
        let outKey = "\(variant.source.id)-\(configHash.prefix(12))-\(variant.label)-\(variant.head.prefix(12))"
        return Place(
            fragments: zip(fragmentFiles, texts).map { ConfigFragment(origin: $0.path, text: $1) }, configHash: configHash,
            objDir: cache.objects.appendingPathComponent("\(variant.source.objectKey)-\(configHash.prefix(12))"),
            outDir: cache.builds.appendingPathComponent(outKey))
    }

    /// The finished build of `variant` with these fragments, if the cache holds one; builds nothing.
    public func cachedBuild(_ variant: PreparedVariant, fragmentFiles: [URL]) throws -> BuildManifest? {
        let fm = FileManager.default
        guard let data = try? Data(contentsOf: try place(variant, fragmentFiles: fragmentFiles).manifest),
              let cached = try? JSONDecoder().decode(BuildManifest.self, from: data),
              fm.fileExists(atPath: cached.bzImage), fm.fileExists(atPath: cached.objectDir + "/.config") else { return nil }
        return cached
    }

    /// Builds `bzImage` and modules for the checked-out variant, or returns the cached build.
    /// `symversReady` is called (once, from the build's output reader) when the build's
    /// `Module.symvers` is final and vmlinux is still being linked (see ``SymversWatch``).
    public func build(_ variant: PreparedVariant, fragmentFiles: [URL],
                      symversReady: (@Sendable () -> Void)? = nil) async throws -> BuildManifest {
        let fm = FileManager.default
        let place = try place(variant, fragmentFiles: fragmentFiles)
        let (fragments, configHash, objDir, outDir) = (place.fragments, place.configHash, place.objDir, place.outDir)
        let manifestURL = place.manifest
        if var cached = try cachedBuild(variant, fragmentFiles: fragmentFiles) {
            cached.cacheHit = true
            cached.buildSeconds = 0
            // Same commits, same patches; what the series says about them comes from the variant.
            cached.patches = variant.patches
            cached.seriesID = variant.seriesID
            cached.patchsetHash = variant.patchsetHash
            progress("build: cache hit for \(variant.label) (\(outDir.path))")
            try writeLatest(cached)
            return cached
        }
        try checkTools()
        try checkSpace(at: cache.root)
        try fm.ensureDirectory(objDir)
        try fm.ensureDirectory(outDir)
        let log = outDir.appendingPathComponent("build.log")
        try? fm.removeItem(at: log)
        let src = variant.source.workdir.path
        let stamp = objDir.appendingPathComponent(".p2plab-config-hash")
        let configURL = objDir.appendingPathComponent(".config")
        if (try? String(contentsOf: stamp, encoding: .utf8)) != configHash || !fm.fileExists(atPath: configURL.path) {
            progress("config: \((baseRecipe + fragmentFiles.map(\.lastPathComponent)).joined(separator: " + "))")
            for target in baseRecipe {
                try await make([target], src: src, obj: objDir, log: log, timeout: limits.configure)
            }
            if !fragmentFiles.isEmpty {
                try await runner.checked(Command(["\(src)/scripts/kconfig/merge_config.sh", "-m", "-O", objDir.path, configURL.path] + fragmentFiles.map(\.path), in: src), timeout: limits.configure)
            }
            try await make(["olddefconfig"], src: src, obj: objDir, log: log, timeout: limits.configure)
            try configHash.write(to: stamp, atomically: true, encoding: .utf8)
        }
        let config = (try? String(contentsOf: configURL, encoding: .utf8)) ?? ""
        // A later fragment overrides an earlier one (merge_config.sh does the same): `--config` with
        // `# CONFIG_KPROBES is not set` turns off what the lab's own fragment turns on.
        let dropped = fragments.enumerated().flatMap { index, fragment in
            let overridden = Set(fragments.dropFirst(index + 1).flatMap { $0.options.map(\.name) })
            return fragment.dropped(in: config).filter { !overridden.contains($0.name) }.map { "\($0.name)=\($0.asked) (got \($0.got))" }
        }
        if !dropped.isEmpty { throw BuildError.configDropped(options: dropped, config: configURL.path) }

        progress("build: make -j\(jobs) bzImage modules (\(variant.label)); log: \(log.path)")
        let start = Date()
        let counter = ProgressCounter(start: start, report: progress)
        let watch = symversReady.map { SymversWatch(ready: $0) }
        let result = try await runner.stream(
            makeCommand(["bzImage", "modules"], src: src, obj: objDir), logFile: log, timeout: limits.build
        ) { line in
            counter.saw(line)
            watch?.saw(line)
        }
        let seconds = Date().timeIntervalSince(start)
        guard result.succeeded else {
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            if text.contains("No space left on device") { throw BuildError.noSpace(path: cache.root.path, freeMiB: freeMiB(at: cache.root), needMiB: requiredFreeMiB) }
            throw BuildError.buildFailed(log: log.path, errors: Self.errorLines(text))
        }
        progress(String(format: "build: done in %.0f s (%d objects)", seconds, counter.count))
        let bzImage = outDir.appendingPathComponent("bzImage")
        try? fm.removeItem(at: bzImage)
        try fm.copyItem(at: objDir.appendingPathComponent("arch/x86/boot/bzImage"), to: bzImage)
        let savedConfig = outDir.appendingPathComponent("config")
        try? fm.removeItem(at: savedConfig)
        try fm.copyItem(at: configURL, to: savedConfig)
        let release = ((try? String(contentsOf: objDir.appendingPathComponent("include/config/kernel.release"), encoding: .utf8)) ?? "")
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let compiler = (try? await runner.capture(Command(["gcc", "--version"]), timeout: limits.query).standardOutput.split(separator: "\n").first.map(String.init)) ?? nil
        let manifest = BuildManifest(
            source: variant.source.description, sourceId: variant.source.id, baseCommit: variant.source.baseCommit,
            variant: variant.label, branch: variant.branch, head: variant.head, patches: variant.patches,
            configHash: configHash, fragments: fragmentFiles.map(\.path), compiler: compiler ?? "unknown",
            kernelRelease: release, buildSeconds: seconds, cacheHit: false, bzImage: bzImage.path,
            config: savedConfig.path, objectDir: objDir.path, sourceDir: src, log: log.path,
            createdAt: ISO8601DateFormatter().string(from: Date()), seriesID: variant.seriesID, patchsetHash: variant.patchsetHash)
        try LabJSON.encode(manifest).write(to: manifestURL)
        try writeLatest(manifest)
        return manifest
    }

    func writeLatest(_ manifest: BuildManifest) throws {
        try FileManager.default.ensureDirectory(cache.latestBuild.deletingLastPathComponent())
        try LabJSON.encode(manifest).write(to: cache.latestBuild)
    }

    func makeCommand(_ targets: [String], src: String, obj: URL) -> Command {
        Command(["make", "-C", src, "O=\(obj.path)", "-j\(jobs)"] + Self.reproducible + targets)
    }

    /// Build timestamp, number, user and host fixed, so the same source and config always give the
    /// same bzImage: a bisect step can then tell by hash that a commit changed nothing it boots.
    public static let reproducible = [
        "KBUILD_BUILD_TIMESTAMP=1970-01-01 00:00:00 UTC", "KBUILD_BUILD_VERSION=1", "KBUILD_BUILD_USER=p2plab", "KBUILD_BUILD_HOST=p2plab",
    ]

    func make(_ targets: [String], src: String, obj: URL, log: URL, timeout: Double) async throws {
        let r = try await runner.stream(makeCommand(targets, src: src, obj: obj), logFile: log, timeout: timeout)
        if !r.succeeded {
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            throw BuildError.buildFailed(log: log.path, errors: Self.errorLines(text))
        }
    }

    /// The lines of a make log that say what went wrong (the last 15 error lines, else the tail).
    public static func errorLines(_ log: String) -> String {
        let lines = log.split(separator: "\n")
        let errors = lines.filter { $0.contains("error:") || $0.contains("Error ") || $0.contains("*** ") }
        return (errors.isEmpty ? Array(lines.suffix(15)) : Array(errors.suffix(15))).joined(separator: "\n")
    }

    /// The tools a kernel build needs, with the Debian package that has each.
    static let tools = [("make", "make"), ("gcc", "gcc"), ("flex", "flex"), ("bison", "bison"), ("bc", "bc"),
                        ("perl", "perl"), ("git", "git"),
                        // the lab config compresses the bzImage with LZ4
                        ("lz4", "lz4")]

    func checkTools() throws {
        for (tool, package) in Self.tools where which(tool) == nil {
            throw BuildError.missingTool(tool: tool, package: package)
        }
        for (header, package) in [("/usr/include/libelf.h", "libelf-dev"), ("/usr/include/openssl/ssl.h", "libssl-dev")]
        where !FileManager.default.fileExists(atPath: header) {
            throw BuildError.missingTool(tool: header, package: package)
        }
    }

    func checkSpace(at url: URL) throws {
        let free = freeMiB(at: url)
        if free >= 0 && free < requiredFreeMiB { throw BuildError.noSpace(path: url.path, freeMiB: free, needMiB: requiredFreeMiB) }
    }

    func freeMiB(at url: URL) -> Int {
        guard let attrs = try? FileManager.default.attributesOfFileSystem(forPath: url.path),
              let free = attrs[.systemFreeSize] as? NSNumber else { return -1 }
        return Int(free.int64Value >> 20)
    }
}

/// Tells from a kernel build's output when its `Module.symvers` is final: at the first line after
/// `MODPOST Module.symvers`. Kbuild runs modpost on vmlinux.o once, and vmlinux depends on it, so
/// whatever make prints next comes from after modpost (the vmlinux link, `CC .vmlinux.export.o`,
/// kallsyms); nothing later in the build writes Module.symvers or the configuration an external
/// module builds against. The last ~3.5 s of an incremental build (three links for kallsyms, the
/// bzImage) run mostly on one core, so the test module builds on the other meanwhile.
final class SymversWatch: @unchecked Sendable {
    private let lock = NSLock()
    private var sawModpost = false
    private var fired = false
    private let ready: @Sendable () -> Void

    init(ready: @escaping @Sendable () -> Void) { self.ready = ready }

    /// Whether `line` is Kbuild's announcement of modpost on vmlinux.o.
    static func isModpost(_ line: String) -> Bool {
        line.hasPrefix("  MODPOST") && line.hasSuffix("Module.symvers")
    }

    func saw(_ line: String) {
        let fire: Bool = lock.withLock {
            if fired { return false }
            if sawModpost {
                fired = true
                return true
            }
            if Self.isModpost(line) { sawModpost = true }
            return false
        }
        if fire { ready() }
    }
}

/// Counts kbuild's per-object lines (`  CC      mm/gup.o`) and reports progress at most every 15 s,
/// so a long cold build never looks stuck and a log is not flooded.
final class ProgressCounter: @unchecked Sendable {
    private let lock = NSLock()
    private let start: Date
    private var lastReport: Date
    private(set) var count = 0
    private let report: @Sendable (String) -> Void

    init(start: Date, report: @escaping @Sendable (String) -> Void) {
        self.start = start
        self.lastReport = start
        self.report = report
    }

    func saw(_ line: String) {
        let isObject = line.hasPrefix("  CC") || line.hasPrefix("  AS") || line.hasPrefix("  LD") || line.hasPrefix("  AR")
        lock.lock()
        defer { lock.unlock() }
        if isObject { count += 1 }
        let now = Date()
        if now.timeIntervalSince(lastReport) >= 15 {
            lastReport = now
            report(String(format: "build: %d objects, %.0f s elapsed", count, now.timeIntervalSince(start)))
        }
    }
}
