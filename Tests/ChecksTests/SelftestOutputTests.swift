import Catalog
import Foundation
import KTAP
import Testing
@testable import Checks

func selftestFixture(_ name: String) throws -> String {
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/selftests/\(name)")
    return try String(contentsOf: url, encoding: .utf8)
}

/// A check that runs nothing but hands the runner a selftest's recorded output as nested results.
func replayCheck(_ name: String, output: String, end: ProgramEnd) -> CheckDefinition {
    CheckDefinition(CheckInfo(name, "replays a recorded selftest")) { _, rec in
        let cases = SelftestOutput.cases(program: "gup_longterm", output: output, end: end)
        rec.addSubtests(cases)
        let failed = cases.filter { $0.status != .pass }
        if !failed.isEmpty { rec.fail("\(failed.count) of \(cases.count) cases did not pass") }
    }
}

/// Runs `checks` through the real runner and parses its KTAP back the way the host does.
func roundTrip(_ checks: [CheckDefinition]) -> (text: String, run: TestRun) {
    let lines = Lines()
    let runner = SuiteRunner(checks: checks, context: fakeContext(), kernelLog: FakeKernelLog()) { lines.append($0) }
    _ = runner.run()
    let text = lines.all.joined(separator: "\n") + "\n"
    return (text, KTAPParser.parse(text))
}

@Suite("The kernel's selftests as nested KTAP")
struct SelftestOutputTests {
    @Test("gup_longterm's cases get their [RUN] line as name and their verdict text as reason")
    func names() throws {
        let output = try selftestFixture("gup_longterm-ok.log")
        let cases = SelftestOutput.cases(program: "gup_longterm", output: output, end: ProgramEnd(status: 0, signaled: false))
        #expect(cases.count == 24)
        #expect(cases.allSatisfy { $0.status == .pass })
        #expect(cases[0].name == "R/W longterm GUP pin in MAP_SHARED file mapping ... with memfd")
        #expect(cases[0].reason == "Should have worked")
        // The ext4 case: gup_longterm counts the refusal of a long-term R/W pin as its pass.
        #expect(cases[2].name.hasSuffix("with local tmpfile"))
        #expect(cases[2].reason == "Should have failed")
        #expect(SelftestOutput.totals(output) == "Totals: pass:24 fail:0 xfail:0 xpass:0 skip:0 error:0")
        #expect(Set(cases.map(\.name)).count == 24, "every case has its own name")
    }

    @Test("a selftest killed mid-run: the case in progress fails saying so, the rest are not run")
    func crash() throws {
        let output = try selftestFixture("gup_longterm-segv.log")
        let cases = SelftestOutput.cases(program: "gup_longterm", output: output, end: ProgramEnd(status: 11, signaled: true))
        #expect(cases.count == 24)
        #expect(cases[0..<7].allSatisfy { $0.status == .pass })
        #expect(cases[7].status == .fail)
        #expect(cases[7].name == "R/O longterm GUP pin in MAP_SHARED file mapping ... with tmpfile")
        #expect(cases[7].reason == "gup_longterm killed by signal 11 (SIGSEGV) before this case's result line")
        #expect(cases[8...].allSatisfy { $0.status == .notRun })
        #expect(cases[8].reason?.contains("killed by signal 11") == true)
    }

    @Test("nested under a check, the cases survive the host's parser; a crash fails the check, not the run's parse")
    func nesting() throws {
        let ok = try selftestFixture("gup_longterm-ok.log")
        let segv = try selftestFixture("gup_longterm-segv.log")
        let (text, run) = roundTrip([
            replayCheck("selftest.ok", output: ok, end: ProgramEnd(status: 0, signaled: false)),
            replayCheck("selftest.segv", output: segv, end: ProgramEnd(status: 11, signaled: true)),
        ])
        try #require(run.tests.count == 2, "\(text)")
        #expect(run.parseErrors.isEmpty, "\(run.parseErrors)")
        #expect(run.ending == .complete)
        let passed = run.tests[0]
        #expect(passed.name == "selftest.ok")
        #expect(passed.status == .pass)
        #expect(passed.subtests.count == 24)
        #expect(passed.subtests[2].name.hasSuffix("with local tmpfile"))
        let crashed = run.tests[1]
        #expect(crashed.status == .fail)
        #expect(crashed.subtests.count == 24)
        #expect(crashed.subtests[7].status == .fail)
        #expect(crashed.subtests[7].reason?.contains("SIGSEGV") == true)
        #expect(crashed.subtests[23].status == .notRun)
        // Leaves: 24 + 7 passing, the crashed case failing, 16 not run: the verdict fails, it is no crash.
        #expect(run.counts.passed == 31)
        #expect(run.counts.failed == 1)
        #expect(run.counts.notRun == 16)
        #expect(run.verdict == .fail)
        // The nesting is KTAP's: two spaces, a version line and the check's name before the cases.
        #expect(text.contains("  KTAP version 1\n  # Subtest: selftest.ok\n  1..24\n"))
    }

    @Test("gup_test: its TAP says ok whatever it pinned; the truncated size is the judge")
    func gupTestObservation() {
        let full = "TAP version 13\n1..1\n# PIN_LONGTERM_BENCHMARK: Time: get:120 put:40 us\nok 1 ioctl status 0\n# Totals: pass:1 fail:0 xfail:0 xpass:0 skip:0 error:0\n"
        let none = "TAP version 13\n1..1\n# PIN_LONGTERM_BENCHMARK: Time: get:3 put:0 us# , truncated (size: 0)\n# \nok 1 ioctl status 0\n"
        let failed = "TAP version 13\n1..1\nnot ok 1 ioctl status -1\n"
        let end = ProgramEnd(status: 0, signaled: false)
        #expect(GupTestRun.observation(output: full, bytes: 1 << 20, end: end) == .succeeded)
        #expect(GupTestRun.observation(output: none, bytes: 1 << 20, end: end) == .refused(nil))
        #expect(GupTestRun.observation(output: failed, bytes: 1 << 20, end: end) == .refused(nil))
        #expect(GupTestRun.observation(output: "mmap: Invalid argument\n", bytes: 1 << 20, end: ProgramEnd(status: 1, signaled: false)) == nil)
    }

    @Test("strace: the errno of the failing uverbs call, not the terminal probes")
    func straceErrno() {
        let log = """
            412 ioctl(1, TCGETS, 0x7ffd6c1c1e30) = -1 ENOTTY (Inappropriate ioctl for device)
            412 ioctl(3, RDMA_VERBS_IOCTL, 0x7ffd6c1c1c70) = -1 EREMOTEIO (Remote I/O error)
            412 +++ exited with 1 +++
            """
        #expect(Suite.uverbsErrno(strace: log) == .EREMOTEIO)
        #expect(Suite.uverbsErrno(strace: "412 write(3, \"...\", 24) = -1 EFAULT (Bad address)\n") == .EFAULT)
        #expect(Suite.uverbsErrno(strace: "") == nil)
    }

    @Test("perftest: write_bw's sleep after connecting is skipped on both ends by strace; read_bw runs as it is")
    func perftestSleepSkip() {
        let args = ["/usr/bin/ib_write_bw", "-d", "rxe0", "-p", "18610"]
        let write = Suite.perftestClientCommand(strace: "/usr/bin/strace", trace: "/tmp/t", tool: "ib_write_bw", arguments: args)
        #expect(write == ["/usr/bin/strace", "-f", "-qq", "-e", "trace=ioctl,write,clock_nanosleep", "-e", "status=failed",
                          "-e", "inject=clock_nanosleep:retval=0:when=1", "-o", "/tmp/t"] + args + ["127.0.0.1"])
        let readArgs = ["/usr/bin/ib_read_bw", "-d", "rxe0", "-p", "18611"]
        let read = Suite.perftestClientCommand(strace: "/usr/bin/strace", trace: "/tmp/t", tool: "ib_read_bw", arguments: readArgs)
        #expect(read == ["/usr/bin/strace", "-f", "-qq", "-e", "trace=ioctl,write", "-e", "status=failed", "-o", "/tmp/t"] + readArgs + ["127.0.0.1"])
        #expect(Suite.perftestSleepsAfterConnect == ["ib_write_bw"])
        // A kernel with seccomp filters: strace stops the client only at the calls it traces.
        let filtered = Suite.perftestClientCommand(strace: "/usr/bin/strace", trace: "/tmp/t", tool: "ib_read_bw", arguments: readArgs, seccompFilter: true)
        #expect(filtered == ["/usr/bin/strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=ioctl,write", "-e", "status=failed", "-o", "/tmp/t"] + readArgs + ["127.0.0.1"])
        #expect(Suite.perftestServerSleepSkip(strace: "/usr/bin/strace", log: "/tmp/s", pid: 62)
            == ["/usr/bin/strace", "-qq", "-e", "trace=clock_nanosleep", "-e", "inject=clock_nanosleep:retval=0:when=1", "-o", "/tmp/s", "-p", "62"])
        // The skipped sleep, were it logged, is no failing uverbs call.
        let log = """
            58 clock_nanosleep(CLOCK_REALTIME, 0, {tv_sec=1, tv_nsec=0}, 0x7ffc49e40c60) = 0 (INJECTED)
            58 ioctl(3, RDMA_VERBS_IOCTL, 0x7ffd6c1c1c70) = -1 EREMOTEIO (Remote I/O error)
            """
        #expect(Suite.uverbsErrno(strace: log) == .EREMOTEIO)
    }

    @Test("kernfs.mtime_on_write_fault waits for the coarse clock to pass the mtime it compares with, and no longer")
    func coarseClockWait() throws {
        try Suite.waitForCoarseClock(after: 5, now: { 6 })
        let start = monotonicSeconds()
        try Suite.waitForCoarseClock(after: Suite.coarseRealtimeNanoseconds())
        #expect(monotonicSeconds() - start < 0.5)
        #expect(throws: CheckError.self) { try Suite.waitForCoarseClock(after: 5, now: { 5 }) }
    }

    @Test("the lab machine formats its scratch NVMe with the label the suite takes for its own ext4")
    func labScratchLabel() throws {
        let lab = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("vm/lab.json")
        let text = try String(contentsOf: lab, encoding: .utf8)
        #expect(text.contains("\"ext4Label\": \"\(Suite.scratchLabel)\""))
    }

    @Test("the tracer of a process, from /proc/PID/status")
    func tracerPID() {
        #expect(Suite.tracerPID(status: "Name:\tib_write_bw\nState:\tS (sleeping)\nTracerPid:\t0\nUid:\t0\t0\t0\t0\n") == 0)
        #expect(Suite.tracerPID(status: "Name:\tib_write_bw\nTracerPid:\t71\n") == 71)
        #expect(Suite.tracerPID(status: "Name:\tib_write_bw\n") == nil)
    }

    @Test("perftest's server counts as listening once /proc/net/tcp or tcp6 shows its port in LISTEN")
    func perftestListening() throws {
        let proc = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-net-\(getpid())")
        try FileManager.default.createDirectory(at: proc, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: proc) }
        let header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        // 18610 = 0x48B2: established on tcp, listening on tcp6; 18611 = 0x48B3 nowhere.
        try (header + "   0: 0100007F:48B2 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000     0        0 1 1\n")
            .write(to: proc.appendingPathComponent("tcp"), atomically: true, encoding: .utf8)
        #expect(!Suite.tcpListening(port: 18610, proc: proc.path))
        try (header + "   0: 00000000000000000000000000000000:48B2 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1\n")
            .write(to: proc.appendingPathComponent("tcp6"), atomically: true, encoding: .utf8)
        #expect(Suite.tcpListening(port: 18610, proc: proc.path))
        #expect(!Suite.tcpListening(port: 18611, proc: proc.path))
    }
}
