import Foundation
import LabSupport

/// Builds the out-of-tree test module (`kernel/module`) against a kernel build directory:
/// a p2plab object directory for lab kernels, or `/lib/modules/$(uname -r)/build` on real hardware.
///
/// Every finished build is kept under `builds/modules/<fingerprint>` (same sources, same kernel
/// build directory, same `Module.symvers` → that `.ko`, no make at all). A kernel p2plab rebuilt
/// changes the fingerprint, but rarely anything the module includes, so the module is built in one
/// persistent work directory per object directory and kbuild's own dependency tracking (the `.cmd`
/// files: headers through fixdep, `CONFIG_` symbols through `include/config/`) decides what to
/// recompile: after a bisect step that touched only `.c` files of the kernel, only MODPOST and the
/// link run again.
public struct ModuleBuilder: Sendable {
    public let cache: CacheLayout
    public let runner: Runner
    public let limits: LabLimits
    public let progress: @Sendable (String) -> Void

    public init(cache: CacheLayout, runner: Runner, limits: LabLimits = .standard, progress: @escaping @Sendable (String) -> Void = { _ in }) {
        self.cache = cache
        self.runner = runner
        self.limits = limits
        self.progress = progress
    }

    /// The files of the module's source directory a build reads.
    static func isModuleSource(_ name: String) -> Bool {
        name.hasSuffix(".c") || name.hasSuffix(".h") || name == "Kbuild" || name == "Makefile"
    }

    /// The persistent work directory for builds against `kernelBuildDir`.
    public func workDirectory(kernelBuildDir: String) -> URL {
        cache.builds.appendingPathComponent("modules/" + Self.workDirectoryName(kernelBuildDir: kernelBuildDir))
    }

    /// `work-` and a hash of the build directory's path; a fingerprint directory is 16 bare hex
    /// digits, so the two never collide.
    static func workDirectoryName(kernelBuildDir: String) -> String {
        "work-" + fnv1a64Hex(URL(fileURLWithPath: kernelBuildDir).standardizedFileURL.path)
    }

    /// The cache lock that keeps two runs out of one work directory (`p2plab check` builds
    /// without any checkout lock).
    static func lockName(kernelBuildDir: String) -> String {
        "module-" + workDirectoryName(kernelBuildDir: kernelBuildDir)
    }

    /// Whether the work directory may be reused for `kernelBuildDir`. Only for an object directory
    /// p2plab builds: its sources change through git checkout and make, which give every changed
    /// file a new mtime, so kbuild's mtime comparison sees it. Installed headers
    /// (`/lib/modules/…/build`) come from a package that keeps the archive's mtimes (clamped to
    /// SOURCE_DATE_EPOCH by reproducible builds), which may be older than the last module build:
    /// reinstalling a kernel under the same release could go unnoticed, so those build from scratch.
    func reusesWorkDirectory(kernelBuildDir: String) -> Bool {
        let objects = cache.objects.standardizedFileURL.path + "/"
        return URL(fileURLWithPath: kernelBuildDir).standardizedFileURL.path.hasPrefix(objects)
    }

    /// Returns the path of `p2plab_test.ko`, building it unless an identical build is cached.
    public func build(moduleSource: URL, kernelBuildDir: String) async throws -> URL {
        let fm = FileManager.default
        guard fm.fileExists(atPath: kernelBuildDir + "/Makefile") else {
            throw BuildError.moduleBuildFailed(log: kernelBuildDir, errors: "no kernel build directory at \(kernelBuildDir): install the kernel headers (linux-headers-$(uname -r)) or build with p2plab build")
        }
        let names = try fm.contentsOfDirectory(atPath: moduleSource.path).filter(Self.isModuleSource).sorted()
        var files: [String: Data] = [:]
        for name in names { files[name] = try Data(contentsOf: moduleSource.appendingPathComponent(name)) }
        var fingerprint = kernelBuildDir
        for name in names { fingerprint += "\u{0}" + name + "\u{0}" + (String(data: files[name]!, encoding: .utf8) ?? "") }
        let release = (try? String(contentsOf: URL(fileURLWithPath: kernelBuildDir + "/include/config/kernel.release"), encoding: .utf8)) ?? ""
        fingerprint += release
        // The module links against the kernel's Module.symvers; a rebuilt kernel invalidates it.
        if let attrs = try? fm.attributesOfItem(atPath: kernelBuildDir + "/Module.symvers"), let date = attrs[.modificationDate] as? Date {
            fingerprint += "\(date.timeIntervalSince1970)"
        }
        let dir = cache.builds.appendingPathComponent("modules/\(fnv1a64Hex(fingerprint))")
        let ko = dir.appendingPathComponent("p2plab_test.ko")
        let work = workDirectory(kernelBuildDir: kernelBuildDir)
        return try await CacheLock.withLock(Self.lockName(kernelBuildDir: kernelBuildDir), in: cache, timeout: limits.cacheLock, waiting: progress) {
            if fm.fileExists(atPath: ko.path) { return ko }
            try? fm.removeItem(at: dir)
            try fm.ensureDirectory(dir)
            try ModuleWorkDirectory(url: work).prepare(files: files, fresh: !reusesWorkDirectory(kernelBuildDir: kernelBuildDir))
            let log = dir.appendingPathComponent("build.log")
            let built = work.appendingPathComponent("p2plab_test.ko")
            let r = try await runner.stream(Command(["make", "-C", kernelBuildDir, "M=\(work.path)", "modules"]), logFile: log, timeout: limits.module)
            guard r.succeeded, fm.fileExists(atPath: built.path) else {
                let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
                throw BuildError.moduleBuildFailed(log: log.path, errors: KernelBuilder.errorLines(text))
            }
            // The sources it was built from stay beside it (the work directory moves on; its
            // debug info, and so a decoded trace, names the work directory's copy).
            for (name, content) in files { try content.write(to: dir.appendingPathComponent(name)) }
            // Through a temporary name: the cache hit above is "the .ko exists", so it must never
            // see half a copy.
            let partial = dir.appendingPathComponent("p2plab_test.ko.partial")
            try? fm.removeItem(at: partial)
            try fm.copyItem(at: built, to: partial)
            try fm.moveItem(at: partial, to: ko)
            try ModuleWorkDirectory(url: work).finished()
            return ko
        }
    }
}

/// The persistent directory the module is built in: its sources kept in step with the module's
/// source directory by content, so a file whose bytes did not change keeps its mtime and kbuild
/// does not recompile what depends on it.
struct ModuleWorkDirectory {
    let url: URL

    /// The names this directory's sources had at the last sync, so a source file that was removed
    /// goes too (a stale header left behind could make a broken module build here and nowhere else).
    var manifest: URL { url.appendingPathComponent(".p2plab-sources") }
    /// Present from the start of a build until it succeeded: a build that was killed (a timeout, a
    /// crash) may leave an object written halfway with an mtime newer than its sources, which
    /// kbuild would take as up to date, so the next build starts from an empty directory.
    var unfinished: URL { url.appendingPathComponent(".p2plab-building") }

    /// Makes the directory ready for a build of `files` (name → content): emptied first when
    /// `fresh` or when the last build did not finish, then synced and marked unfinished.
    /// Returns the names it wrote.
    @discardableResult
    func prepare(files: [String: Data], fresh: Bool) throws -> [String] {
        let fm = FileManager.default
        if fresh || fm.fileExists(atPath: unfinished.path) { try? fm.removeItem(at: url) }
        try fm.ensureDirectory(url)
        try Data().write(to: unfinished)
        return try sync(files)
    }

    /// The last build succeeded: the next one may reuse what it left.
    func finished() throws {
        try FileManager.default.removeItem(at: unfinished)
    }

    /// Writes each file whose content differs from the copy here (or that is missing), removes the
    /// files an earlier sync wrote that are no longer in `files`, and returns the names written.
    @discardableResult
    func sync(_ files: [String: Data]) throws -> [String] {
        let fm = FileManager.default
        try fm.ensureDirectory(url)
        var written: [String] = []
        for (name, content) in files.sorted(by: { $0.key < $1.key }) {
            let target = url.appendingPathComponent(name)
            if let current = fm.contents(atPath: target.path), current == content { continue }
            try content.write(to: target, options: .atomic)
            written.append(name)
        }
        let before = ((try? String(contentsOf: manifest, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        for name in before where files[name] == nil && !name.contains("/") {
            try? fm.removeItem(at: url.appendingPathComponent(name))
        }
        try (files.keys.sorted().joined(separator: "\n") + "\n").write(to: manifest, atomically: true, encoding: .utf8)
        return written
    }
}
