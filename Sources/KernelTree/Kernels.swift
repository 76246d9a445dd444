import Foundation
import LabSupport

/// What to build, typed: where the source comes from, the series, the config fragments, the jobs.
public struct KernelRecipe: Sendable, Equatable {
    public var source: SourceSpec
    /// A directory with a `series` file, or an mbox.
    public var series: URL
    /// The lab's fragment first, then the user's, merged in this order.
    public var fragments: [URL]
    public var jobs: Int
    /// The checkout whose `kernel/series` holds the bundled versions, to name the one with the
    /// same patches rebased when a series does not apply to the Debian source.
    public var bundledRoot: URL?

    public init(source: SourceSpec, series: URL, fragments: [URL], jobs: Int = ProcessInfo.processInfo.activeProcessorCount, bundledRoot: URL? = nil) {
        self.source = source
        self.series = series
        self.fragments = fragments
        self.jobs = jobs
        self.bundledRoot = bundledRoot
    }
}

/// A built variant: the kernel's manifest and, when asked for, the test module built against it
/// and the kernel's mm selftests built from its tree (or why they could not be).
public struct BuiltKernel: Sendable {
    public var manifest: BuildManifest
    public var module: URL?
    public var selftests: Result<URL, BuildError>?
    /// How long preparing it took, phase by phase (a cached build is a short `build`).
    public var times: PhaseTimes

    public init(manifest: BuildManifest, module: URL? = nil, selftests: Result<URL, BuildError>? = nil, times: PhaseTimes = PhaseTimes()) {
        self.manifest = manifest
        self.module = module
        self.selftests = selftests
        self.times = times
    }
}

/// The kernels of one cache: source → series → build (→ test module), safe for concurrent runs.
///
/// Every variant of one source is checked out in one directory and built in one object directory,
/// so two runs sharing the cache would switch each other's files mid-build. A lock per checkout
/// (`<cache>/locks/`) covers the checkout, the build and the module build (which reads the object
/// directory); booting and checking happen outside it, from the variant's own copied bzImage.
public struct Kernels: Sendable {
    public let cache: CacheLayout
    public let runner: Runner
    public let limits: LabLimits
    public let progress: @Sendable (String) -> Void

    public init(cache: CacheLayout, runner: Runner, limits: LabLimits = .standard, progress: @escaping @Sendable (String) -> Void) {
        self.cache = cache
        self.runner = runner
        self.limits = limits
        self.progress = progress
    }

    public var sources: SourceManager { SourceManager(cache: cache, runner: runner, limits: limits, progress: progress) }

    func builder(_ recipe: KernelRecipe) -> KernelBuilder {
        KernelBuilder(cache: cache, runner: runner, jobs: recipe.jobs, limits: limits, progress: progress)
    }

    /// The lock name of a source spec's preparation (unpacking, worktree creation).
    static func prepareLock(_ spec: SourceSpec) -> String {
        switch spec {
        case .debian(let package): "prepare-\(package)"
        case .tree(let path, _): "prepare-tree-" + fnv1a64Hex(path.standardizedFileURL.path).prefix(10)
        }
    }

    /// Builds `selection` of `recipe` (or takes it from the cache) and, with `moduleSource`, the
    /// test module against it (and, with `selftests`, the kernel's mm selftests from its tree),
    /// holding the checkout's lock throughout.
    public func build(_ recipe: KernelRecipe, _ selection: PatchSelection, moduleSource: URL? = nil,
                      selftests: Bool = false) async throws -> BuiltKernel {
        let series = try PatchSeries.load(from: recipe.series)
        var times = PhaseTimes()
        let source = try await times.time("source") {
            try await CacheLock.withLock(Self.prepareLock(recipe.source), in: cache, timeout: limits.cacheLock, waiting: progress) {
                try await sources.prepare(recipe.source)
            }
        }
        return try await withCheckout(source.workdir.path) {
            let variant: PreparedVariant
            do {
                variant = try await times.time("series") { try await sources.checkout(source, series: series, selection: selection) }
            } catch let SeriesError.doesNotApply(patch, file, hunk, detail, renames, nil)
                where !renames.isEmpty && recipe.source == .defaultDebian && recipe.bundledRoot != nil {
                throw SeriesError.doesNotApply(patch: patch, file: file, hunk: hunk, detail: detail, renames: renames,
                                               bundled: Self.bundledVersion(matching: series, root: recipe.bundledRoot!))
            }
            // The selftests build from the same checkout into their own directory: they need only the
            // tree at the variant's commit, so they build beside the kernel (on a new machine that hides
            // their ~20 s in the kernel build) and are waited for before the checkout is let go.
            let sourceDir = variant.source.workdir.path, head = variant.head
            let besideTests: Task<(Result<URL, BuildError>, Double), Never>? = (selftests && moduleSource != nil)
                ? Task { [self] in
                    let start = Date()
                    let result = await self.selftests(sourceDir: sourceDir, head: head)
                    return (result, Date().timeIntervalSince(start))
                } : nil
            let manifest: BuildManifest
            let ko: URL
            // The test module builds as soon as the kernel's Module.symvers is final, while vmlinux
            // and the bzImage are still being linked (mostly on one core); a cached kernel gives no
            // such moment, and the module builds after it as before.
            let kernelBuilder = builder(recipe)
            let objectDir = try kernelBuilder.place(variant, fragmentFiles: recipe.fragments).objDir.path
            let moduleBuilder = ModuleBuilder(cache: cache, runner: runner, limits: limits, progress: progress)
            let besideModule = BesideTask<URL>()
            var symversReady: (@Sendable () -> Void)?
            if let moduleSource {
                symversReady = {
                    besideModule.start { try await moduleBuilder.build(moduleSource: moduleSource, kernelBuildDir: objectDir) }
                }
            }
            do {
                let ready = symversReady
                manifest = try await times.time("build") {
                    try await kernelBuilder.build(variant, fragmentFiles: recipe.fragments, symversReady: ready)
                }
                guard let moduleSource else { return BuiltKernel(manifest: manifest, module: nil, times: times) }
                if let early = besideModule.task {
                    let waited = Date()
                    ko = try await early.value
                    times.add("module", Date().timeIntervalSince(waited))
                } else {
                    ko = try await times.time("module") {
                        try await moduleBuilder.build(moduleSource: moduleSource, kernelBuildDir: manifest.objectDir)
                    }
                }
            } catch {
                _ = await besideModule.task?.result
                besideTests?.cancel()
                _ = await besideTests?.value
                throw error
            }
            var tests: Result<URL, BuildError>?
            if let besideTests {
                // Only the part the kernel and module builds did not cover is a phase of its own.
                let waited = Date()
                let (result, seconds) = await besideTests.value
                tests = result
                times.add("selftests", Date().timeIntervalSince(waited))
                times.add("selftests beside the build", seconds)
            }
            return BuiltKernel(manifest: manifest, module: ko, selftests: tests, times: times)
        }
    }

    /// The kernel's mm selftests for this build (cached beside it), or why there are none: a
    /// failed selftest build makes their checks skip with the reason, not the whole run fail.
    /// Built from the checkout, so only under its lock.
    func selftests(sourceDir: String, head: String) async -> Result<URL, BuildError> {
        do {
            return .success(try await SelftestBuilder(cache: cache, runner: runner, progress: progress).build(sourceDir: sourceDir, head: head))
        } catch let error as BuildError {
            progress(String(error.description.split(separator: "\n").first ?? ""))
            return .failure(error)
        } catch {
            return .failure(.selftestBuildFailed(log: sourceDir, errors: "\(error)"))
        }
    }

    /// The test module against a kernel built earlier (a cached build), under its checkout's lock:
    /// the module build reads the object directory another run might be rebuilding.
    public func module(for manifest: BuildManifest, moduleSource: URL) async throws -> BuiltKernel {
        try await withCheckout(manifest.sourceDir) {
            let ko = try await ModuleBuilder(cache: cache, runner: runner, limits: limits, progress: progress)
                .build(moduleSource: moduleSource, kernelBuildDir: manifest.objectDir)
            return BuiltKernel(manifest: manifest, module: ko)
        }
    }

    /// Runs `body` holding the lock of the checkout at `path` (and so of its object directories).
    public func withCheckout<T: Sendable>(_ path: String, _ body: () async throws -> T) async throws -> T {
        let name = "checkout-" + fnv1a64Hex(URL(fileURLWithPath: path).standardizedFileURL.path).prefix(12)
        return try await CacheLock.withLock(name, in: cache, timeout: limits.cacheLock, waiting: progress, body)
    }

    /// The bundled version (rebased for the Debian source) that holds the same patches as
    /// `series` (by Message-ID, else by subject when only one version has those subjects), unless
    /// `series` is that version.
    public static func bundledVersion(matching series: PatchSeries, root: URL) -> String? {
        let others = BundledSeries.versions(root: root).compactMap { name -> (String, PatchSeries)? in
            let dir = BundledSeries.directory(root: root).appendingPathComponent(name)
            guard dir.standardizedFileURL.path != URL(fileURLWithPath: series.origin).standardizedFileURL.path,
                  let bundled = try? PatchSeries.load(from: dir) else { return nil }
            return (name, bundled)
        }
        let ids = series.patches.map(\.messageID)
        if !ids.contains(nil), let match = others.first(where: { $0.1.patches.map(\.messageID) == ids }) { return match.0 }
        let bySubject = others.filter { $0.1.patches.map(\.subject) == series.patches.map(\.subject) }
        return bySubject.count == 1 ? bySubject[0].0 : nil
    }

    /// The finished build of `selection` of `recipe` from the Debian source already in the cache,
    /// or nil: downloads, checks out and builds nothing (the bench reads the lab's cache this way).
    public func cached(_ recipe: KernelRecipe, _ selection: PatchSelection) async throws -> BuildManifest? {
        guard case .debian(let package) = recipe.source, let source = try await sources.preparedDebian(package: package) else { return nil }
        let series = try PatchSeries.load(from: recipe.series)
        guard let variant = try await sources.recordedVariant(source, series: series, selection: selection) else { return nil }
        return try builder(recipe).cachedBuild(variant, fragmentFiles: recipe.fragments)
    }
}

/// A task started at most once from a synchronous callback (a build's output reader), awaited later.
final class BesideTask<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var started: Task<Value, any Error>?

    var task: Task<Value, any Error>? { lock.withLock { started } }

    func start(_ body: @escaping @Sendable () async throws -> Value) {
        lock.withLock {
            if started == nil { started = Task { try await body() } }
        }
    }
}
