import CP2PLabUAPI
import Foundation
import Testing
@testable import Checks

#if canImport(Glibc)
import Glibc
#endif

/// The teardown checks' and the torture's children die of the SIGBUS they are expected to take, at
/// once: they inherit the Swift runtime's crash handlers, whose backtracer symbolicated for 22 s in
/// a torture's forked child on a loaded host (30 s and more in three others, which the parent then
/// reported as ETIMEDOUT).
@Suite("Forked children die of a SIGBUS at once, without the Swift backtracer")
struct ForkChildSignalTests {
    /// A shared mapping of a file truncated to nothing: touching it is a SIGBUS, like a zapped p2pmem page.
    func vanishedMapping() throws -> (UnsafeMutableRawPointer, Int) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-sigbus-\(getpid())").path
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        try #require(fd >= 0)
        defer { close(fd); unlink(path) }
        try #require(ftruncate(fd, off_t(page)) == 0)
        let base = try #require(mmap(nil, page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0))
        try #require(base != MAP_FAILED)
        try #require(ftruncate(fd, 0) == 0)
        return (base, page)
    }

    /// Runs `body` with stdout and stderr going to a file (a child inherits them), and returns what was written.
    func capturingOutput(_ body: () -> Void) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-child-output-\(getpid())").path
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        try #require(fd >= 0)
        defer { close(fd); unlink(path) }
        fflush(nil)
        let (out, err) = (dup(1), dup(2))
        dup2(fd, 1)
        dup2(fd, 2)
        body()
        dup2(out, 1)
        dup2(err, 2)
        close(out)
        close(err)
        return (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    }

    @Test("the fork probe's child writing a vanished page dies of SIGBUS, and the backtracer never starts")
    func forkProbe() throws {
        let (base, page) = try vanishedMapping()
        defer { munmap(base, page) }
        var report = p2plab_fork_report()
        var rc: Int32 = 0
        let output = try capturingOutput { rc = p2plab_fork_probe(base, 1, 0x7465_7374, &report) }
        #expect(rc == -EPIPE, "rc \(rc)")
        #expect(WaitStatus(report.child_status).signal == SIGBUS, "child status \(report.child_status)")
        #expect(!output.contains("crashed"), "the child ran the backtracer: \(output.prefix(200))")
    }

    @Test("the teardown checks' writing child dies of SIGBUS, and the backtracer never starts")
    func writeInChild() throws {
        let (base, page) = try vanishedMapping()
        defer { munmap(base, page) }
        var outcome = p2plab_child_outcome()
        var rc: Int32 = 0
        let output = try capturingOutput { rc = p2plab_write_in_child(base, 1, 10_000, &outcome) }
        #expect(rc == 0 && outcome.timed_out == 0)
        #expect(WaitStatus(outcome.status).signal == SIGBUS, "child status \(outcome.status)")
        #expect(!output.contains("crashed"), "the child ran the backtracer: \(output.prefix(200))")
    }
}
