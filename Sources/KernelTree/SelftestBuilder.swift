import Foundation
import LabSupport

/// Builds the kernel's own mm selftests (`gup_longterm`, `gup_test`) from the tree a lab kernel was
/// built from, against that tree's exported headers, and caches them beside the kernel.
///
/// The cache key is what the binaries are made of: the git trees of the selftests, of mm/gup_test.h,
/// of the uAPI headers and tools/include, and the compiler. A rebuilt kernel whose series touches
/// none of these (the series under test only touches mm, fs and drivers) reuses the binaries; one
/// that changes a uAPI header or the selftests gets new ones.
public struct SelftestBuilder: Sendable {
    public let cache: CacheLayout
    public let runner: Runner

    /// The programs built, in tools/testing/selftests/mm.
    public static let programs = ["gup_longterm", "gup_test"]

    /// Tree paths whose content decides the binaries.
    static let keyPaths = [
        "tools/testing/selftests/mm", "tools/testing/selftests/kselftest.h", "tools/testing/selftests/lib.mk",
        "tools/include", "mm/gup_test.h", "include/uapi", "arch/x86/include/uapi", "scripts/Makefile.headersinst",
        "scripts/headers_install.sh",
    ]

    public let progress: @Sendable (String) -> Void

    public init(cache: CacheLayout, runner: Runner, progress: @escaping @Sendable (String) -> Void = { _ in }) {
        self.cache = cache
        self.runner = runner
        self.progress = progress
    }

    /// The directory holding the built programs; built unless an identical build is cached.
    /// - Parameters:
    ///   - sourceDir: the kernel tree, checked out at `head` (the variant just built).
    ///   - head: the commit the tree must be at.
    public func build(sourceDir: String, head: String, timeout: Double = 600) async throws -> URL {
        let fm = FileManager.default
        let git = Git(directory: URL(fileURLWithPath: sourceDir), runner: runner)
        let at = try await git.run(["rev-parse", "HEAD"])
        guard at == head else {
            throw BuildError.selftestBuildFailed(log: sourceDir, errors: "\(sourceDir) is at \(at.prefix(12)), not at the built kernel's \(head.prefix(12)); build the kernel again")
        }
        var fingerprint = "selftests v1"
        for path in Self.keyPaths {
            let tree = (try? await git.run(["rev-parse", "HEAD:\(path)"])) ?? "absent"
            fingerprint += "\u{0}\(path)=\(tree)"
        }
        let compiler = (try? await runner.capture(Command(["cc", "--version"])).standardOutput) ?? ""
        fingerprint += "\u{0}" + (compiler.split(separator: "\n").first.map(String.init) ?? "")
        let dir = cache.builds.appendingPathComponent("selftests/\(fnv1a64Hex(fingerprint))")
        let binaries = dir.appendingPathComponent("bin")
        if Self.programs.allSatisfy({ fm.isExecutableFile(atPath: binaries.appendingPathComponent($0).path) }) {
            return binaries
        }
        progress("kernel selftests: building \(Self.programs.joined(separator: ", ")) from \(head.prefix(12))")
        try? fm.removeItem(at: dir)
        try fm.ensureDirectory(binaries)
        // headers_install needs rsync (make fails with Error 127 without it).
        guard which("rsync") != nil else { throw BuildError.missingTool(tool: "rsync", package: "rsync") }
        let headers = dir.appendingPathComponent("headers")
        // A private object directory: headers_install must not touch the kernel's build or the tree.
        let objects = dir.appendingPathComponent("obj")
        try fm.ensureDirectory(objects)
        try await step(
            Command(["make", "-s", "-C", sourceDir, "O=\(objects.path)", "ARCH=x86_64", "headers_install", "INSTALL_HDR_PATH=\(headers.path)"]),
            log: dir.appendingPathComponent("headers.log"), timeout: timeout)
        // A copy that keeps the tree's layout: gup_longterm.c includes ../../../../mm/gup_test.h.
        let tree = dir.appendingPathComponent("tree")
        for path in ["tools/testing/selftests", "tools/include", "mm/gup_test.h"] {
            let target = tree.appendingPathComponent(path)
            try fm.ensureDirectory(target.deletingLastPathComponent())
            try fm.copyItem(atPath: sourceDir + "/" + path, toPath: target.path)
        }
        let targets = Self.programs.map { binaries.appendingPathComponent($0).path }
        try await step(
            Command(["make", "-C", tree.appendingPathComponent("tools/testing/selftests/mm").path, "OUTPUT=\(binaries.path)",
                     "KHDR_INCLUDES=-isystem \(headers.path)/include"] + targets),
            log: dir.appendingPathComponent("build.log"), timeout: timeout)
        guard Self.programs.allSatisfy({ fm.isExecutableFile(atPath: binaries.appendingPathComponent($0).path) }) else {
            throw BuildError.selftestBuildFailed(log: dir.appendingPathComponent("build.log").path, errors: "make finished but \(Self.programs.joined(separator: ", ")) are not all there")
        }
        // The copies are only needed to build; the binaries are what the guest runs.
        try? fm.removeItem(at: tree)
        try? fm.removeItem(at: objects)
        return binaries
    }

    private func step(_ command: Command, log: URL, timeout: Double) async throws {
        let result = try await runner.stream(command, logFile: log, timeout: timeout)
        guard result.succeeded else {
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            let errors = KernelBuilder.errorLines(text)
            throw BuildError.selftestBuildFailed(log: log.path, errors: errors.isEmpty ? text.lastLines(10) : errors)
        }
    }
}
