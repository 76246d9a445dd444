import Foundation
import LabSupport
import Machine
import Testing

/// p2plab-guest-setup, which the lab guest's init runs for its mounts and rxe0, run here in a
/// mount namespace of its own (unshare -m), so the host's mounts are not touched.
@Suite("The guest's setup program")
struct GuestSetupTests {
    /// Compiled as a boot compiles it, into a cache of the tests' own.
    static let compiled = GuestSetupProgram.ensure(
        vmDirectory: repoRoot.appendingPathComponent("vm"),
        cache: CacheLayout(root: FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-guest-setup-tests-\(getpid())")))
    static var program: URL { compiled.program ?? URL(fileURLWithPath: "/nonexistent") }
    static let built = compiled.program != nil
    static let canUnshare = getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare")

    /// Runs `script` under `sh` in a new mount namespace; its status and what it printed.
    func inNamespace(_ script: String) throws -> Invocation {
        try runCollecting(URL(fileURLWithPath: "/usr/bin/unshare"), ["-m", "--propagation", "private", "/bin/sh", "-c", script], stderrToo: true)
    }

    @Test("compiles once per version of the source, statically linked, into the cache")
    func compiles() throws {
        #expect(Self.compiled.problem == nil, "\(Self.compiled.problem ?? "")")
        let program = try #require(Self.compiled.program)
        let again = GuestSetupProgram.ensure(vmDirectory: repoRoot.appendingPathComponent("vm"), cache: CacheLayout(root: program.deletingLastPathComponent().deletingLastPathComponent()))
        #expect(again.program == program)
        let elf = try Data(contentsOf: program)
        // No PT_INTERP program header: the kernel starts it without ld.so.
        #expect(!String(decoding: elf, as: UTF8.self).contains("/lib64/ld-linux-x86-64.so.2"))
        let broken = try tempDirectory("guest-setup-broken")
        try "int main(void) { return nope; }\n".write(to: broken.appendingPathComponent(GuestSetupProgram.sourceName), atomically: true, encoding: .utf8)
        let failed = GuestSetupProgram.ensure(vmDirectory: broken, cache: CacheLayout(root: broken.appendingPathComponent("cache")))
        #expect(failed.program == nil)
        #expect(failed.problem?.contains("failed:") == true, "\(failed.problem ?? "")")
        try? FileManager.default.removeItem(at: broken)
    }

    @Test(
        "mounts every entry in order, makes X-mount.mkdir's mount points, passes flags as flags and the rest as data, and names what failed",
        .enabled(if: built, "p2plab-guest-setup could not be compiled"), .enabled(if: canUnshare, "needs root and unshare"))
    func mounts() throws {
        let dir = try tempDirectory("guest-setup")
        let fstab = dir.appendingPathComponent("fstab")
        let base = dir.path
        // The first mount point exists already, the others are made (X-mount.mkdir) or missing.
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("a"), withIntermediateDirectories: true)
        try """
            # a comment, then a blank line

            tmpfs  \(base)/a        tmpfs  defaults,size=1m              0 0
            tmpfs  \(base)/a/deep\\040dir/b  tmpfs  ro,nosuid,mode=0700,X-mount.mkdir  0 0
            none   \(base)/missing  nosuchfs  defaults                 0 0
            tmpfs  \(base)/c        tmpfs  X-mount.mkdir                 0 0

            """.write(to: fstab, atomically: true, encoding: .utf8)
        let result = try inNamespace("""
            '\(Self.program.path)' '\(fstab.path)'; echo "status $?"
            grep ' \(base)/' /proc/self/mountinfo
            """)
        let lines = result.output.split(separator: "\n").map(String.init)
        #expect(lines.contains("status 1"), "\(result.output)")
        // The failing entry is named, and the entries after it were still mounted.
        #expect(lines.contains { $0.hasPrefix("p2plab-guest-setup: mount none on \(base)/missing (nosuchfs, defaults): ") })
        let mounted = lines.filter { $0.contains(" - tmpfs ") }
        #expect(mounted.count == 3, "\(result.output)")
        let a = mounted.first { $0.contains(" \(base)/a rw") }
        #expect(a?.contains("size=1024k") == true, "size= reached the filesystem: \(a ?? "none")")
        let b = mounted.first { $0.contains(" \(base)/a/deep\\040dir/b ") }
        #expect(b?.contains(" ro,nosuid") == true, "ro and nosuid became flags: \(b ?? "none")")
        #expect(b?.contains("mode=700") == true)
        #expect(mounted.contains { $0.contains(" \(base)/c rw") })
        // Outside the namespace nothing was mounted.
        let host = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
        #expect(!host.contains(" \(base)/"))
        try? FileManager.default.removeItem(at: dir)
    }

    @Test(
        "an unreadable table is exit 2 with one line; a soft-RoCE device it cannot add is exit 1 with one line",
        .enabled(if: built, "p2plab-guest-setup could not be compiled"), .enabled(if: canUnshare, "needs root and unshare"))
    func failures() throws {
        let missing = try inNamespace("'\(Self.program.path)' /nonexistent/fstab; echo \"status $?\"")
        #expect(missing.output == "p2plab-guest-setup: cannot read /nonexistent/fstab: No such file or directory\nstatus 2\n")
        let usage = try inNamespace("'\(Self.program.path)' a b; echo \"status $?\"")
        #expect(usage.output.hasSuffix("status 2\n"))
        let dir = try tempDirectory("guest-setup-rxe")
        let empty = dir.appendingPathComponent("fstab")
        try "".write(to: empty, atomically: true, encoding: .utf8)
        let rxe = try inNamespace("'\(Self.program.path)' '\(empty.path)' rxe9 p2plab-no-such-netdev; echo \"status $?\"")
        let lines = rxe.output.split(separator: "\n").map(String.init)
        #expect(lines.count == 2, "\(rxe.output)")
        #expect(lines.first?.hasPrefix("p2plab-guest-setup: adding rxe9 (rxe) on p2plab-no-such-netdev: ") == true)
        #expect(lines.last == "status 1")
        try? FileManager.default.removeItem(at: dir)
    }
}
