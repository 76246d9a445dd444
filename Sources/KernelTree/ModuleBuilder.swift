import Foundation
import LabSupport

/// Builds the out-of-tree test module (`kernel/module`) against a kernel build directory:
/// a p2plab object directory for lab kernels, or `/lib/modules/$(uname -r)/build` on real hardware.
public struct ModuleBuilder: Sendable {
    public let cache: CacheLayout
    public let runner: Runner
    public let limits: LabLimits

    public init(cache: CacheLayout, runner: Runner, limits: LabLimits = .standard) {
        self.cache = cache
        self.runner = runner
        self.limits = limits
    }

    /// Returns the path of `p2plab_test.ko`, building it unless an identical build is cached.
    public func build(moduleSource: URL, kernelBuildDir: String) async throws -> URL {
        let fm = FileManager.default
        guard fm.fileExists(atPath: kernelBuildDir + "/Makefile") else {
            throw BuildError.moduleBuildFailed(log: kernelBuildDir, errors: "no kernel build directory at \(kernelBuildDir): install the kernel headers (linux-headers-$(uname -r)) or build with p2plab build")
        }
        let files = try fm.contentsOfDirectory(atPath: moduleSource.path)
            .filter { $0.hasSuffix(".c") || $0.hasSuffix(".h") || $0 == "Kbuild" || $0 == "Makefile" }.sorted()
        var fingerprint = kernelBuildDir
        for f in files { fingerprint += "\u{0}" + f + "\u{0}" + ((try? String(contentsOf: moduleSource.appendingPathComponent(f), encoding: .utf8)) ?? "") }
        let release = (try? String(contentsOf: URL(fileURLWithPath: kernelBuildDir + "/include/config/kernel.release"), encoding: .utf8)) ?? ""
        fingerprint += release
        // The module links against the kernel's Module.symvers; a rebuilt kernel invalidates it.
        if let attrs = try? fm.attributesOfItem(atPath: kernelBuildDir + "/Module.symvers"), let date = attrs[.modificationDate] as? Date {
            fingerprint += "\(date.timeIntervalSince1970)"
        }
        let dir = cache.builds.appendingPathComponent("modules/\(fnv1a64Hex(fingerprint))")
        let ko = dir.appendingPathComponent("p2plab_test.ko")
        if fm.fileExists(atPath: ko.path) { return ko }
        try? fm.removeItem(at: dir)
        try fm.ensureDirectory(dir)
        for f in files { try fm.copyItem(at: moduleSource.appendingPathComponent(f), to: dir.appendingPathComponent(f)) }
        let log = dir.appendingPathComponent("build.log")
        let r = try await runner.stream(Command(["make", "-C", kernelBuildDir, "M=\(dir.path)", "modules"]), logFile: log, timeout: limits.module)
        guard r.succeeded, fm.fileExists(atPath: ko.path) else {
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            throw BuildError.moduleBuildFailed(log: log.path, errors: KernelBuilder.errorLines(text))
        }
        return ko
    }
}
