import Foundation
import LabSupport

/// `vm/guest-setup.c`, compiled for the guest's init: the mounts and rxe0 in one statically linked
/// program. Under TCG the dynamically linked `mount` and `rdma` each took 0.3-0.5 s to load over
/// 9p before doing anything; a static C program starts in about 0.1 s.
///
/// It is built with the host's `cc -static` (the kernel build needs the same compiler and libc)
/// into the cache, once per version of the source: the file's name carries the source's hash, so
/// a checkout with another version builds its own and two boots never race on one file (each
/// compiles to a temporary name and renames it into place).
public enum GuestSetupProgram {
    public static let sourceName = "guest-setup.c"

    /// Where the program for `source` goes in `cache`.
    public static func location(source: String, cache: CacheLayout) -> URL {
        cache.root.appendingPathComponent("tools/p2plab-guest-setup-\(fnv1a64Hex(source))")
    }

    /// The compiled program for `vmDirectory`'s source, built now if the cache lacks it; nil with
    /// the reason when it cannot be built (no source, no compiler, no static libc): init then runs
    /// `mount` and `rdma`, which do the same, only slower.
    public static func ensure(vmDirectory: URL, cache: CacheLayout, compiler: String = "cc", timeout: Double = 60)
        -> (program: URL?, problem: String?)
    {
        let sourceURL = vmDirectory.appendingPathComponent(sourceName)
        guard let source = try? String(contentsOf: sourceURL, encoding: .utf8) else {
            return (nil, "\(sourceURL.path) is missing")
        }
        let program = location(source: source, cache: cache)
        if FileManager.default.isExecutableFile(atPath: program.path) { return (program, nil) }
        do {
            try FileManager.default.ensureDirectory(program.deletingLastPathComponent())
        } catch {
            return (nil, "cannot create \(program.deletingLastPathComponent().path): \(error.localizedDescription)")
        }
        let partial = program.deletingLastPathComponent().appendingPathComponent(".\(program.lastPathComponent).\(getpid())")
        let arguments = ["-O2", "-static", "-Wall", "-o", partial.path, sourceURL.path]
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [compiler] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch {
            return (nil, "cannot run \(compiler): \(error.localizedDescription)")
        }
        let killer = DispatchWorkItem { if process.isRunning { process.terminate() } }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: killer)
        let said = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        killer.cancel()
        guard process.terminationReason == .exit, process.terminationStatus == 0 else {
            try? FileManager.default.removeItem(at: partial)
            let last = said.split(separator: "\n").last.map(String.init) ?? "no output"
            return (nil, "\(compiler) \(arguments.joined(separator: " ")) failed: \(last)")
        }
        // rename(2) replaces atomically: a boot that compiled the same program at once loses nothing.
        guard rename(partial.path, program.path) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(at: partial)
            return (nil, "cannot put \(program.path) in place: \(reason)")
        }
        return (program, nil)
    }
}
