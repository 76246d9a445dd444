import Catalog
import Foundation
import KTAP
import KernelConsole
import LabSupport
import Testing
@testable import Checks

/// A kernel log that replays canned lines per check (keyed by the marker's check name).
final class FakeKernelLog: KernelLogSource, @unchecked Sendable {
    private let lock = NSLock()
    private var current = ""
    private let lines: [String: [String]]
    private(set) var markers: [String] = []

    init(_ lines: [String: [String]] = [:]) { self.lines = lines }

    func mark(_ marker: String) {
        lock.withLock {
            markers.append(marker)
            current = lines.keys.first { marker.hasSuffix(" \($0) begins") } ?? ""
        }
    }

    func linesSinceMark() -> [String] {
        lock.withLock { lines[current] ?? [] }
    }
}

/// Collects emitted KTAP lines.
final class Lines: @unchecked Sendable {
    private let lock = NSLock()
    private var storage: [String] = []
    func append(_ line: String) { lock.withLock { storage.append(line) } }
    var all: [String] { lock.withLock { storage } }
    /// The output with durations blanked, for golden comparison.
    var normalized: String {
        all.map { $0.hasPrefix("# duration_ms: ") ? "# duration_ms: N" : $0 }.joined(separator: "\n") + "\n"
    }
}

func fakeContext(module: Bool = false, reference: KernelEffects = SeriesVersion.v2.effects) -> CheckContext {
    CheckContext(
        sysfs: Sysfs(root: URL(fileURLWithPath: "/nonexistent")), provider: nil,
        providerProblem: "no p2pmem provider published", rdma: RDMADeviceInfo(name: "rxe0", kind: .virtualDMA, pciAddress: nil, reason: "test"),
        rdmaProblem: nil, module: nil, moduleProblem: "test module not loaded: pass --module PATH", reference: reference)
}

/// Checks with known behaviour, standing in for the real ones.
let sampleChecks: [CheckDefinition] = [
    CheckDefinition(CheckInfo("sample.pass", "passes", operations: [.registerMR(.anonymous, writable: true)])) { _, rec in
        rec.expect(.registerMR(.anonymous, writable: true), observed: .succeeded)
    },
    CheckDefinition(CheckInfo("sample.errno", "sees the baseline errno", operations: [.registerMR(.p2pmem, writable: true)])) { _, rec in
        rec.expect(.registerMR(.p2pmem, writable: true), observed: .refused(.EFAULT))
    },
    CheckDefinition(CheckInfo("sample.needs_provider", "skips", requires: [.provider])) { _, _ in
        Issue.record("a check whose requirement is missing must not run")
    },
    CheckDefinition(CheckInfo("sample.splat", "passes in userspace, but the kernel warned")) { _, rec in
        rec.note("all fine up here")
    },
    CheckDefinition(CheckInfo("sample.thrown", "throws")) { _, _ in
        throw CheckFailure("mmap of p2pmem failed: ENOMEM")
    },
    CheckDefinition(CheckInfo("sample.runtime_skip", "skips from inside")) { _, _ in
        throw CheckSkip("enable CONFIG_GUP_TEST")
    },
]

@Suite("KTAP output of the runner")
struct RunnerTests {
    @Test("golden output: diagnostics before results, structured keys, splats, skips")
    func golden() throws {
        let lines = Lines()
        let log = FakeKernelLog([
            "sample.splat": [
                "p2plab: check 4 sample.splat begins",
                "WARNING: CPU: 0 PID: 93 at mm/gup.c:2633 is_valid_gup_args+0x62/0x90",
                "Modules linked in: p2plab_test",
            ]
        ])
        let runner = SuiteRunner(checks: sampleChecks, context: fakeContext(), kernelLog: log, timeout: 30) { lines.append($0) }
        let exit = runner.run(preamble: ["kernel: test"])
        #expect(exit == .failed)
        let url = try #require(Bundle.module.url(forResource: "runner_golden", withExtension: "ktap", subdirectory: "Fixtures"))
        let golden = try String(contentsOf: url, encoding: .utf8)
        #expect(lines.normalized == golden)
        // One marker per check that ran (not for the one skipped by its requirement).
        #expect(log.markers.count == 5)
    }

    @Test("the output parses with the project's KTAP parser into the same verdicts")
    func parsesBack() throws {
        let lines = Lines()
        let runner = SuiteRunner(checks: sampleChecks, context: fakeContext(), kernelLog: FakeKernelLog(), timeout: 30) { lines.append($0) }
        _ = runner.run()
        let parsed = KTAPParser.parse(lines.all.joined(separator: "\n"))
        #expect(parsed.tests.map(\.status) == [.pass, .fail, .skip, .pass, .fail, .skip])
        #expect(parsed.tests[1].errno == "EFAULT")
        #expect(parsed.tests[1].expected == "ibv_reg_mr p2pmem writable: EREMOTEIO")
    }

    @Test("a check that asks the suite to go on (a hung-task report still to come) holds the end of the suite, says so, once, for the latest ask")
    func settleHoldsTheEnd() {
        let asks = CheckDefinition(CheckInfo("sample.asks", "sets something going")) { _, rec in
            rec.settle(seconds: 0.3, because: "the report comes later")
            rec.settle(seconds: 0.1, because: "an earlier deadline does not shorten it")
        }
        let quick = CheckDefinition(CheckInfo("sample.quick", "returns at once")) { _, _ in }
        func run(_ checks: [CheckDefinition]) -> (seconds: Double, lines: [String]) {
            let lines = Lines()
            let runner = SuiteRunner(checks: checks, context: fakeContext(), kernelLog: FakeKernelLog(), timeout: 30) { lines.append($0) }
            let start = monotonicSeconds()
            _ = runner.run()
            return (monotonicSeconds() - start, lines.all)
        }
        let held = run([asks, quick])
        #expect(held.seconds >= 0.29, "\(held.seconds)")
        let waits = held.lines.filter { $0.hasPrefix("# settle: waiting ") }
        #expect(waits.count == 1 && waits[0].hasSuffix(": the report comes later"), "\(waits)")
        // The wait comes after the last result line; a suite whose checks ask nothing does not wait.
        #expect(held.lines.lastIndex { $0.hasPrefix("ok 2 sample.quick") } ?? .max < held.lines.firstIndex { $0.hasPrefix("# settle:") } ?? -1)
        let unheld = run([quick])
        #expect(unheld.seconds < 0.2 && !unheld.lines.contains { $0.contains("settle:") })
    }

    @Test("a WARNING the kernel under test is meant to print is demanded, and is not a splat")
    func expectedWarnings() {
        let check = CheckDefinition(CheckInfo("sample.mkwrite", "refused", operations: [.mmapPageMkwriteAttribute])) { _, rec in
            rec.expect(.mmapPageMkwriteAttribute, observed: .refused(.EINVAL))
        }
        let kernfs = "WARNING: CPU: 1 PID: 201 at fs/kernfs/file.c:484 kernfs_fop_mmap+0x1a9/0x1d0"
        let gup = "WARNING: CPU: 1 PID: 201 at mm/gup.c:2633 is_valid_gup_args+0x62/0x90"
        func run(_ reference: SeriesVersion, _ log: [String]) -> (CheckVerdict, [String]) {
            let lines = Lines()
            let runner = SuiteRunner(
                checks: [check], context: fakeContext(reference: reference.effects),
                kernelLog: FakeKernelLog(["sample.mkwrite": log]), timeout: 30) { lines.append($0) }
            var settle: (until: Double, why: String)?
            return (runner.runOne(check, number: 1, writer: KTAPWriter(emit: { lines.append($0) }), settle: &settle), lines.all)
        }
        // v4 WARNs and refuses: the WARNING is the expected result.
        let (v4, v4Lines) = run(.v4, [kernfs])
        #expect(v4 == .pass)
        #expect(v4Lines.contains { $0.hasPrefix("# expected WARNING from kernfs_fop_mmap") })
        #expect(!v4Lines.contains { $0.hasPrefix("# splat:") })
        // v4 without it: the kernel did not say what v4 says.
        let (silent, silentLines) = run(.v4, [])
        #expect(silent == .fail)
        #expect(silentLines.contains { $0.contains("expected a WARNING from kernfs_fop_mmap") })
        // Another site's WARNING is still a splat.
        #expect(run(.v4, [gup]).0 == .fail)
        // v2 refuses silently: the same WARNING there is a splat.
        #expect(run(.v2, [kernfs]).0 == .fail)
        #expect(run(.v2, []).0 == .pass)
    }

    @Test("exit codes: 0 when all pass, 4 when all skip")
    func exitCodes() {
        let pass = SuiteRunner(checks: [sampleChecks[0]], context: fakeContext(), kernelLog: FakeKernelLog()) { _ in }
        #expect(pass.run() == .success)
        let skip = SuiteRunner(checks: [sampleChecks[2], sampleChecks[5]], context: fakeContext(), kernelLog: FakeKernelLog()) { _ in }
        #expect(skip.run() == .skipped)
    }

    @Test("a check that overruns the watchdog is reported not ok with TIMEOUT and stops the run")
    func watchdog() {
        let lines = Lines()
        let slow = CheckDefinition(CheckInfo("sample.hang", "hangs")) { _, _ in
            Thread.sleep(forTimeInterval: 5)
        }
        let runner = SuiteRunner(checks: [slow, sampleChecks[0]], context: fakeContext(), kernelLog: FakeKernelLog(), timeout: 0.3) {
            lines.append($0)
        }
        #expect(runner.run() == .failed)
        #expect(lines.all.contains("not ok 1 sample.hang # TIMEOUT"))
        #expect(lines.all.contains { $0.hasPrefix("# TIMEOUT: sample.hang did not finish within") })
        #expect(!lines.all.contains { $0.contains("sample.pass") && $0.hasPrefix("ok") })
    }

    @Test("--filter globs select in suite order", arguments: [
        (["pin.*"], ["pin.longterm_p2pdma.fast", "pin.longterm_p2pdma.slow", "pin.fast_path", "pin.longterm_without_p2pdma_flag"]),
        (["env.module", "lifecycle.*"], ["env.module", "lifecycle.exit_releases", "lifecycle.unbind_while_pinned"]),
        (["nothing"], []),
    ])
    func filters(_ patterns: [String], _ names: [String]) {
        #expect(SuiteRunner.select(Suite.checks, filters: patterns).map(\.name) == names)
    }

    @Test("check names are stable, dotted and unique")
    func names() {
        let names = Suite.checks.map(\.name)
        #expect(Set(names).count == names.count)
        #expect(names.allSatisfy { $0.contains(".") && !$0.contains(" ") })
        #expect(names.contains("oracle.gup_test") && names.contains("fs.longterm_real_fs_refused"))
    }

    @Test("a splat the check provoked on purpose is reported as provoked and does not fail it; any other still does")
    func provokedSplats() {
        let lines = Lines()
        let hung = CheckDefinition(CheckInfo("sample.hung", "asks for a hung-task report")) { _, rec in
            rec.expectSplat(containing: ":4242 blocked for more than", because: "the check holds the pin on purpose")
        }
        let log = FakeKernelLog(["sample.hung": ["INFO: task p2plab:4242 blocked for more than 3 seconds."]])
        let runner = SuiteRunner(checks: [hung], context: fakeContext(), kernelLog: log) { lines.append($0) }
        #expect(runner.run() == .success)
        #expect(lines.all.contains("# provoked: INFO: task p2plab:4242 blocked for more than 3 seconds. (expected: the check holds the pin on purpose)"))
        #expect(!lines.all.contains { $0.hasPrefix("# splat:") })

        let other = FakeKernelLog(["sample.hung": ["INFO: task kworker/0:1:17 blocked for more than 3 seconds."]])
        let failing = SuiteRunner(checks: [hung], context: fakeContext(), kernelLog: other) { _ in }
        #expect(failing.run() == .failed)
    }

    @Test("a /dev/kmsg record becomes its message; dictionary lines are dropped")
    func kmsgRecords() {
        let record = Array("4,812,3456789,-;WARNING: CPU: 1 PID: 7 at mm/gup.c:2633 is_valid_gup_args\n SUBSYSTEM=pci\n DEVICE=+pci:0000:03:00.0\n".utf8)
        #expect(KmsgLog.parseRecord(record[...]) == ["WARNING: CPU: 1 PID: 7 at mm/gup.c:2633 is_valid_gup_args"])
        #expect(KmsgLog.unescape("p2plab\\x20marker") == "p2plab marker")
        #expect(splats(in: ["nvme nvme0: 2/0/0 queues", "BUG: unable to handle page fault"]) == ["BUG: unable to handle page fault"])
    }

    @Test("a hung-task report naming an earlier check's task is left out of the running check's verdict, and said where it goes")
    func hungTaskOfAnEarlierCheck() {
        let checks = [
            CheckDefinition(CheckInfo("sample.starts_task", "its thread's task hangs later")) { _, _ in },
            CheckDefinition(CheckInfo("sample.running", "runs while the report fires")) { _, _ in },
            CheckDefinition(CheckInfo("sample.system_task", "a task older than every check hangs while it runs")) { _, _ in },
        ]
        // The task is check 1's own thread, as the runner logged its PID.
        let log = ClosureKernelLog { name, pids in
            switch name {
            case "sample.running": ["INFO: task p2plab-guest:\(pids["sample.starts_task"] ?? -1) blocked for more than 1 seconds."]
            case "sample.system_task": [
                "INFO: task kworker/0:1:3 blocked for more than 1 seconds.",
                // A kernel thread with a PID in check 1's range is not check 1's either.
                "INFO: task kworker/0:2:\((pids["sample.starts_task"] ?? -1) + 1) blocked for more than 1 seconds.",
                "task:kworker/0:2     state:D stack:0     pid:\((pids["sample.starts_task"] ?? -1) + 1)   tgid:1   ppid:2      flags:0x4000",
            ]
            default: []
            }
        }
        let lines = Lines()
        let exit = SuiteRunner(checks: checks, context: fakeContext(), kernelLog: log, emit: lines.append).run()
        let run = KTAPParser.parse(lines.all.joined(separator: "\n"))
        let tid = log.pids["sample.starts_task"] ?? -1
        #expect(tid > 3)
        #expect(run.tests.map(\.status) == [.pass, .pass, .fail])
        #expect(run.tests[1].splats.isEmpty)
        #expect(run.tests[1].diagnostics.contains { $0.hasPrefix("hung task of check 1 sample.starts_task (PID \(tid) is its task") && $0.hasSuffix("charged there: INFO: task p2plab-guest:\(tid) blocked for more than 1 seconds.") })
        // A task older than every check cannot be placed: the running check keeps it.
        #expect(run.tests[2].splats == ["INFO: task kworker/0:1:3 blocked for more than 1 seconds.",
                                        "INFO: task kworker/0:2:\(tid + 1) blocked for more than 1 seconds."])
        #expect(exit == .failed)
    }

    @Test("what a check provokes on purpose is written as a provokes diagnostic, for reports that come after it ended")
    func provokesDiagnostic() {
        let checks = [CheckDefinition(CheckInfo("sample.provokes", "provokes a report")) { _, rec in
            rec.expectSplat(containing: ":77 blocked for more than", because: "on purpose")
        }]
        let lines = Lines()
        _ = SuiteRunner(checks: checks, context: fakeContext(), kernelLog: FakeKernelLog(), emit: lines.append).run()
        #expect(lines.all.contains("# provokes \":77 blocked for more than\": on purpose"))
    }
}

/// A kernel log whose lines per check are computed when they are read, from the check's name and
/// the PIDs the checks' threads logged so far.
final class ClosureKernelLog: KernelLogSource, @unchecked Sendable {
    private let lock = NSLock()
    private var current = ""
    private var logged: [String: Int] = [:]
    private let lines: @Sendable (String, [String: Int]) -> [String]

    init(_ lines: @escaping @Sendable (String, [String: Int]) -> [String]) { self.lines = lines }

    var pids: [String: Int] { lock.withLock { logged } }

    func mark(_ marker: String) {
        lock.withLock { current = marker.split(separator: " ").dropLast().last.map(String.init) ?? "" }
    }

    func note(_ line: String) {
        lock.withLock { for start in CheckMarkers.starts(in: line) { logged[start.name] = start.pid } }
    }

    func linesSinceMark() -> [String] {
        let (name, pids) = lock.withLock { (current, logged) }
        return lines(name, pids)
    }
}
