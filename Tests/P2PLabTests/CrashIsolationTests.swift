import Foundation
import KTAP
import KernelConsole
import LabPipeline
import Machine
import Testing

/// Recorded consoles and results shares of boots that crashed, and what the lab makes of them.
private func fixture(_ name: String) throws -> String {
    try String(contentsOf: repoRoot.appendingPathComponent("Tests/P2PLabTests/Fixtures/crash/\(name)"), encoding: .utf8)
}

/// A boot as the pipeline hands it over: the results share's KTAP parsed with the console beside it.
private func boot(_ ktap: String, _ console: String, checks: [String], kind: BootOutcome.Kind, directory: String = "") throws -> CrashIsolation.Boot {
    let consoleText = try fixture(console)
    let run = KTAPParser.parse(try fixture(ktap), options: .init(
        timedOut: kind == .commandTimeout, consoleLog: consoleText, expectedNames: checks))
    return CrashIsolation.Boot(checks: checks, run: run, console: consoleText, kind: kind, directory: directory)
}

/// Stands in for decode_stacktrace.sh: file:line for the module's frames, as a debug-info kernel gives.
private struct FakeDecoder: TraceDecoder {
    var lineInfo = true
    func decode(_ report: [String]) async -> DecodedReport {
        guard lineInfo else { return DecodedReport(lines: report) }
        return DecodedReport(lines: report.map { line in
            line.replacingOccurrences(of: "p2plab_control_oops+0x1a/0x20", with: "p2plab_control_oops (kernel/module/p2plab_test.c:447)")
                .replacingOccurrences(of: "p2plab_ioctl+0x1c3/0x3a0", with: "p2plab_ioctl (kernel/module/p2plab_test.c:512)")
                .replacingOccurrences(of: "__x64_sys_ioctl+0x94/0xc0", with: "__x64_sys_ioctl (fs/ioctl.c:51)")
        })
    }
}

private let three = ["env.module", "control.oops", "regmr.anon"]

@Suite("A crash costs one check: reboot and continue, hung-task attribution, decoded traces")
struct CrashIsolationTests {
    @Test("an oops in check 2 of 3: CRASHED with its trace, the lab boots again for check 3, check 1 keeps its PASS")
    func rebootAndContinue() async throws {
        var isolation = CrashIsolation(names: three, stopOnCrash: false, maxReboots: 5)
        let first = isolation.take(try boot("boot1-oops-results.ktap", "boot1-oops-console.log", checks: three, kind: .kernelPanic))
        #expect(first == .reboot(["regmr.anon"]))
        #expect(isolation.casualties == ["control.oops"])
        let second = isolation.take(try boot("boot2-results.ktap", "boot2-console.log", checks: ["regmr.anon"], kind: .exited(0), directory: "boot-2"))
        #expect(second == .done)
        await VariantPipeline.decodeReports(&isolation, decoder: FakeDecoder())
        let run = isolation.merged()
        #expect(run.tests.map(\.name) == three)
        #expect(run.tests.map(\.status) == [.pass, .crashed, .pass])
        #expect(run.tests.map(\.number) == [1, 2, 3])
        let oops = run.tests[1]
        #expect(oops.reason?.hasPrefix("Kernel panic - not syncing: Fatal exception") == true)
        #expect(oops.splats.first?.hasPrefix("kernel BUG at") == true)
        #expect(oops.traceSummary == "p2plab_control_oops (kernel/module/p2plab_test.c:447) ← p2plab_ioctl (kernel/module/p2plab_test.c:512) ← __x64_sys_ioctl (fs/ioctl.c:51) ← do_syscall_64+0x82/0x160")
        #expect(oops.summary.hasPrefix("at p2plab_control_oops (kernel/module/p2plab_test.c:447)"))
        #expect(run.verdict == .crashed)
        #expect(run.metadata["boots"] == "2")
        #expect(run.diagnostics.contains { $0.hasPrefix("boot 2 (boot-2/console.log): 1 check(s) left after control.oops CRASHED") })
        // The table shows the trace's first frames unclipped, under the rows.
        #expect(TableRenderer.render(run).contains("trace: control.oops: p2plab_control_oops (kernel/module/p2plab_test.c:447) ←"))
        // results.json and results.ktap keep the decoded trace.
        let reparsed = KTAPParser.parse(KTAPEmitter.render(run))
        #expect(reparsed.tests[1].status == .crashed)
        #expect(reparsed.tests[1].trace.contains { $0.contains("p2plab_test.c:447") })
        #expect(try JSONRenderer.decode(Data(JSONRenderer.render(run).utf8)).tests[1].trace == oops.trace)
    }

    @Test("a crash while a check ran beside the one cut off: that one is CRASHED and names the other, which runs again on its own")
    func crashBeside() throws {
        // regmr.anon began beside control.oops (as a companion does) before the kernel went down.
        let console = try fixture("boot1-oops-console.log").replacingOccurrences(
            of: "[   18.310400] p2plab: check 2 control.oops pid 243",
            with: "[   18.310400] p2plab: check 2 control.oops pid 243\n[   18.310500] p2plab: check 3 regmr.anon begins\n[   18.310600] p2plab: check 3 regmr.anon pid 250")
        let run = KTAPParser.parse(try fixture("boot1-oops-results.ktap"), options: .init(consoleLog: console, expectedNames: three))
        var isolation = CrashIsolation(names: three, stopOnCrash: false, maxReboots: 5)
        let next = isolation.take(CrashIsolation.Boot(checks: three, run: run, console: console, kind: .kernelPanic, directory: ""))
        #expect(next == .reboot(["regmr.anon"]))
        #expect(isolation.casualties == ["control.oops"])
        #expect(isolation.results["control.oops"]?.diagnostics.contains {
            $0.hasPrefix("regmr.anon ran beside it when the kernel went down, so either may have done it")
        } == true)
        // Without a companion, no such line.
        var alone = CrashIsolation(names: three, stopOnCrash: false, maxReboots: 5)
        _ = alone.take(try boot("boot1-oops-results.ktap", "boot1-oops-console.log", checks: three, kind: .kernelPanic))
        #expect(alone.results["control.oops"]?.diagnostics.contains { $0.contains("ran beside it") } == false)
    }

    @Test("--stop-on-crash: the checks after the crash are NOT RUN and no second boot is asked for")
    func stopOnCrash() throws {
        var isolation = CrashIsolation(names: three, stopOnCrash: true, maxReboots: 5)
        let next = isolation.take(try boot("boot1-oops-results.ktap", "boot1-oops-console.log", checks: three, kind: .kernelPanic))
        guard case .stop(let reason) = next else { Issue.record("expected a stop, got \(next)"); return }
        #expect(reason.contains("--stop-on-crash"))
        let run = isolation.merged()
        #expect(run.tests.map(\.status) == [.pass, .crashed, .notRun])
        #expect(run.tests[2].reason?.contains("--stop-on-crash") == true)
    }

    @Test("a kernel that crashes at every boot stops after the reboot limit, in one line")
    func rebootLimit() throws {
        var isolation = CrashIsolation(names: three, stopOnCrash: false, maxReboots: 0)
        let next = isolation.take(try boot("boot1-oops-results.ktap", "boot1-oops-console.log", checks: three, kind: .kernelPanic))
        #expect(next == .stop("the kernel went down 1 times (control.oops); p2plab stops after 0 reboots"))
        #expect(isolation.merged().tests[2].status == .notRun)
    }

    @Test("a hung-task report is charged to the check that started the task, not the one running; that one runs again")
    func hungTaskAttribution() async throws {
        let checks = ["env.module", "control.hang", "regmr.anon"]
        var isolation = CrashIsolation(names: checks, stopOnCrash: false, maxReboots: 5)
        let next = isolation.take(try boot("hang-results.ktap", "hang-console.log", checks: checks, kind: .kernelPanic))
        #expect(next == .reboot(["regmr.anon"]))
        #expect(isolation.casualties == ["control.hang"])
        _ = isolation.take(try boot("boot2-results.ktap", "boot2-console.log", checks: ["regmr.anon"], kind: .exited(0), directory: "boot-2"))
        await VariantPipeline.decodeReports(&isolation, decoder: FakeDecoder(lineInfo: false))
        let run = isolation.merged()
        #expect(run.tests.map(\.status) == [.pass, .crashed, .pass])
        let hang = run.tests[1]
        #expect(hang.reason == "INFO: task p2plab-guest:244 blocked for more than 3 seconds.")
        #expect(hang.diagnostics.contains { $0.contains("came while regmr.anon ran; PID 244 was started by this check") })
        // The scheduler frames say nothing; the module's function does.
        #expect(hang.traceSummary?.hasPrefix("p2plab_control_hang+0x2c/0x40 [p2plab_test] ← p2plab_ioctl+0x1d0/0x3a0 [p2plab_test]") == true)
        // No debug info: said once, not pretended.
        #expect(run.diagnostics.filter { $0.hasPrefix("no line info:") }.count == 1)
    }

    @Test("PIDs map to the check that started them; older tasks to none; the check's own thread exactly")
    func owners() {
        let starts = CheckMarkers.starts(in: (try? fixture("hang-console.log")) ?? "")
        #expect(starts.map(\.name) == ["env.module", "control.hang", "regmr.anon"])
        #expect(CheckMarkers.owner(of: 244, starts: starts)?.name == "control.hang")
        #expect(CheckMarkers.owner(of: 243, starts: starts)?.name == "control.hang")
        #expect(CheckMarkers.owner(of: 300, starts: starts)?.name == "regmr.anon")
        #expect(CheckMarkers.owner(of: 100, starts: starts) == nil)
        #expect(CheckMarkers.hungTask("[ 22.4] INFO: task kworker/0:1:17 blocked for more than 120 seconds.")! == ("kworker/0:1", 17))
        // After a PID wrap only the exact thread still maps.
        let wrapped = [CheckMarkers.Start(number: 1, name: "a", pid: 32000), CheckMarkers.Start(number: 2, name: "b", pid: 12)]
        #expect(CheckMarkers.owner(of: 12, starts: wrapped)?.name == "b")
        #expect(CheckMarkers.owner(of: 32010, starts: wrapped)?.name == "a")
    }

    @Test("a report is cut where it ends; frames skip the unwinder's guesses; a decoded frame keeps file:line")
    func reportAndFrames() throws {
        let console = try fixture("boot1-oops-console.log")
        let finding = try #require(ConsoleScanner.scan(console).first { $0.kind == .bug })
        let report = StackTrace.report(in: console, at: finding.line)
        #expect(report.first?.hasPrefix("kernel BUG at") == true)
        #expect(report.last == "---[ end trace 0000000000000000 ]---")
        let frames = StackTrace.frames(report)
        #expect(frames.map(\.function) == ["p2plab_control_oops", "asm_exc_invalid_op", "p2plab_ioctl", "__x64_sys_ioctl", "do_syscall_64", "entry_SYSCALL_64_after_hwframe"])
        #expect(frames[0].isIP && frames[0].module == "p2plab_test")
        let decoded = StackTrace.parseFrame("p2plab_ioctl (/root/.cache/p2plab/builds/module-1f2e/p2plab_test.c:512) [p2plab_test]", isIP: false)
        #expect(decoded?.short == "p2plab_ioctl (p2plab_test.c:512)")
        // As decode_stacktrace.sh printed it on the lab's reduced-DWARF kernel: inlined locations, the module bare.
        let inlined = StackTrace.parseFrame("? p2plab_ioctl (/c/modules/f24d/p2plab_test.c:466 /c/modules/f24d/p2plab_test.c:510) p2plab_test".dropFirst(2).description, isIP: false)
        #expect(inlined?.function == "p2plab_ioctl" && inlined?.location == "p2plab_test.c:466" && inlined?.module == "p2plab_test")
        #expect(StackTrace.parseFrame("full_proxy_unlocked_ioctl (fs/debugfs/file.c:333 (discriminator 2)) ", isIP: false)?.location == "fs/debugfs/file.c:333")
        #expect(StackTrace.parseFrame("vfs_ioctl (??:?) ", isIP: false)?.location == nil)
    }

    @Test("a recorded oops of a kernel with the guess unwinder (no frame pointers, no ORC, no DEBUG_INFO): frames are the unwinder's guesses, decode gives no lines, and the run says so once")
    func realLeanOops() async throws {
        let checks = ["env.module", "regmr.anon", "control.oops"]
        var isolation = CrashIsolation(names: checks, stopOnCrash: false, maxReboots: 5)
        #expect(isolation.take(try boot("real-oops-results.ktap", "real-oops-console.log", checks: checks, kind: .kernelPanic)) == .done)
        let decoded = try fixture("real-oops-decoded-lean.txt").split(separator: "\n").map(String.init)
        struct Replay: TraceDecoder {
            let lines: [String]
            func decode(_ report: [String]) async -> DecodedReport { DecodedReport(lines: lines) }
        }
        await VariantPipeline.decodeReports(&isolation, decoder: Replay(lines: decoded))
        let run = isolation.merged()
        #expect(run.tests.map(\.status) == [.pass, .pass, .crashed])
        let oops = run.tests[2]
        #expect(oops.splats.first?.contains("p2plab_test.c:448!") == true)
        #expect(oops.traceSummary == "p2plab_control_oops+0xc/0xe [p2plab_test] ← ? p2plab_ioctl+0x279/0x693 [p2plab_test] ← ? full_proxy_unlocked_ioctl ← ? vfs_ioctl")
        #expect(run.diagnostics == [VariantPipeline.noLineInfo])
    }

    @Test("a recorded oops of the lab's lean kernel (ORC, no DEBUG_INFO): the trace is the unwinder's frames and none of the `? ` addresses it also prints; decode gives no lines, said once")
    func realLeanOopsORC() async throws {
        let checks = ["control.oops", "env.module"]
        var isolation = CrashIsolation(names: checks, stopOnCrash: false, maxReboots: 5)
        #expect(isolation.take(try boot("real-oops-orc-results.ktap", "real-oops-orc-console.log", checks: checks, kind: .kernelPanic)) == .reboot(["env.module"]))
        let console = try fixture("real-oops-orc-console.log")
        let finding = try #require(ConsoleScanner.scan(console).first { $0.kind == .bug })
        let report = StackTrace.report(in: console, at: finding.line)
        // ORC also prints the stale return addresses it passes on the stack, marked `? `: not frames.
        #expect(report.contains { $0.hasSuffix("? _raw_spin_lock_irqsave+0x9/0xe") })
        #expect(StackTrace.frames(report).map(\.function) == ["p2plab_control_oops", "p2plab_ioctl", "full_proxy_unlocked_ioctl", "vfs_ioctl",
                                                             "__x64_sys_ioctl", "do_syscall_64", "entry_SYSCALL_64_after_hwframe"])
        #expect(StackTrace.frames(report).allSatisfy { !$0.guess })
        let decoded = try fixture("real-oops-orc-decoded.txt").split(separator: "\n").map(String.init)
        struct Replay: TraceDecoder {
            let lines: [String]
            func decode(_ report: [String]) async -> DecodedReport { DecodedReport(lines: lines) }
        }
        await VariantPipeline.decodeReports(&isolation, decoder: Replay(lines: decoded))
        let oops = try #require(isolation.merged().tests.first { $0.name == "control.oops" })
        #expect(oops.status == .crashed)
        #expect(oops.traceSummary == "p2plab_control_oops+0xc/0xe [p2plab_test] ← p2plab_ioctl+0x275/0x68f [p2plab_test] ← full_proxy_unlocked_ioctl ← vfs_ioctl")
        #expect(isolation.merged().diagnostics.filter { $0.hasPrefix("no line info:") } == [VariantPipeline.noLineInfo])
    }

    @Test("control.hang that finished as a PASS proves nothing: it fails, saying why")
    func silentHangControl() {
        var isolation = CrashIsolation(names: ["control.hang"], stopOnCrash: false, maxReboots: 5)
        let run = TestRun(plan: 1, tests: [TestResult(number: 1, name: "control.hang", status: .pass)])
        #expect(isolation.take(.init(checks: ["control.hang"], run: run, console: "", kind: .exited(0), directory: "")) == .done)
        let merged = isolation.merged()
        #expect(merged.tests[0].status == .fail)
        #expect(merged.tests[0].reason?.hasPrefix("the control did not take the kernel down") == true)
    }

    @Test("a recorded hung-task panic of the lab's kernel: the child control.hang forked is charged to it while perftest.tmpfs ran")
    func realHang() throws {
        let checks = ["control.hang", "env.module", "regmr.anon", "perftest.tmpfs"]
        var isolation = CrashIsolation(names: checks, stopOnCrash: false, maxReboots: 5)
        #expect(isolation.take(try boot("real-hang-results.ktap", "real-hang-console.log", checks: checks, kind: .kernelPanic)) == .reboot(["perftest.tmpfs"]))
        let hang = try #require(isolation.results["control.hang"])
        #expect(hang.status == .crashed)
        #expect(hang.reason?.hasPrefix("INFO: task ") == true)
        #expect(hang.diagnostics.contains { $0.contains("came while perftest.tmpfs ran") })
        #expect(isolation.results["regmr.anon"]?.status == .pass)
    }

    /// A console where check 1's task 241 is reported hung, without a panic, while check 2 runs.
    static func lateHungTask(first: String) -> String {
        """
        [    5.00] p2plab: check 1 \(first) begins
        [    5.01] p2plab: check 1 \(first) pid 240
        [    5.20] p2plab_test: control: pid 241 waits in D state for 8 s (allow_crash is set)
        [    5.40] p2plab: check 2 regmr.anon begins
        [    5.41] p2plab: check 2 regmr.anon pid 250
        [    7.02] INFO: task p2plab-guest:241 blocked for more than 1 seconds.
        [    7.02]       Not tainted 6.12.57 #1
        [    7.02] task:p2plab-guest    state:D stack:0     pid:241   tgid:241   ppid:239    flags:0x00004002
        [    7.02] Call Trace:
        [    7.02]  <TASK>
        [    7.02]  __schedule+0x2b5/0x6a0
        [    7.02]  schedule_timeout+0x87/0x100
        [    7.02]  p2plab_control_hang_brief+0x31/0x40 [p2plab_test]
        [    7.02]  p2plab_ioctl+0x1d0/0x3a0 [p2plab_test]
        [    7.02]  </TASK>
        [    8.03] INFO: task p2plab-guest:241 blocked for more than 2 seconds.
        [    8.03] task:p2plab-guest    state:D stack:0     pid:241   tgid:241   ppid:239    flags:0x00004002
        [    8.03] Call Trace:
        [    8.03]  <TASK>
        [    8.03]  p2plab_control_hang_brief+0x31/0x40 [p2plab_test]
        [    8.03]  </TASK>
        [    8.50] p2plab: check 3 env.module begins
        [    8.51] p2plab: check 3 env.module pid 260
        """
    }

    /// The guest's KTAP for that console: check 2 left the report out (it is check 1's task).
    static func lateHungTaskKTAP(first: String, provokes: Bool) -> String {
        """
        KTAP version 1
        1..3
        \(provokes ? "# provokes \":241 blocked for more than\": this control's child waits 8 s in D state on purpose" : "# child 241 held the umem")
        ok 1 \(first)
        # hung task of check 1 \(first) (PID 241 is its task; its thread was PID 240), charged there: INFO: task p2plab-guest:241 blocked for more than 1 seconds.
        ok 2 regmr.anon
        ok 3 env.module
        """
    }

    @Test("a hung-task report without a panic, during a later check: provoked by check 1 (by PID), check 2 keeps its PASS")
    func lateProvokedHungTask() throws {
        let checks = ["control.hang_brief", "regmr.anon", "env.module"]
        let console = Self.lateHungTask(first: "control.hang_brief")
        let run = KTAPParser.parse(Self.lateHungTaskKTAP(first: "control.hang_brief", provokes: true), options: .init(consoleLog: console, expectedNames: checks))
        var isolation = CrashIsolation(names: checks, stopOnCrash: false, maxReboots: 5)
        #expect(isolation.take(.init(checks: checks, run: run, console: console, kind: .exited(0), directory: "")) == .done)
        let merged = isolation.merged()
        #expect(merged.tests.map(\.status) == [.pass, .pass, .pass])
        let control = merged.tests[0]
        // Charged once, though the detector reported the task twice.
        #expect(control.diagnostics.filter { $0.hasPrefix("provoked: ") } == [
            "provoked: INFO: task p2plab-guest:241 blocked for more than 1 seconds. (reported while regmr.anon ran; PID 241 was started by this check (its thread was PID 240); expected: this control's child waits 8 s in D state on purpose)",
        ])
        #expect(merged.tests[1].splats.isEmpty)
        #expect(isolation.reports.isEmpty, "a provoked report is not a splat to decode")
    }

    @Test("control.hang_brief named alone: its report comes after the runner's settle marker, no check running, and is still charged to it as provoked")
    func provokedHungTaskWhileSettling() throws {
        let checks = ["control.hang_brief"]
        let console = """
            [    5.00] p2plab: check 1 control.hang_brief begins
            [    5.01] p2plab: check 1 control.hang_brief pid 240
            [    5.20] p2plab_test: control: pid 241 waits in D state for 8 s (allow_crash is set)
            [    5.30] \(CheckMarkers.settleLine)
            [    7.02] INFO: task p2plab-guest:241 blocked for more than 1 seconds.
            [    7.02] task:p2plab-guest    state:D stack:0     pid:241   tgid:241   ppid:239    flags:0x00004002
            """
        let ktap = """
            KTAP version 1
            1..1
            # provokes ":241 blocked for more than": this control's child waits 8 s in D state on purpose
            ok 1 control.hang_brief
            # settle: waiting 2.9 s before the suite ends: control.hang_brief's child is reported 1-2 s after it blocked
            """
        let run = KTAPParser.parse(ktap, options: .init(consoleLog: console, expectedNames: checks))
        var isolation = CrashIsolation(names: checks, stopOnCrash: false, maxReboots: 5)
        #expect(isolation.take(.init(checks: checks, run: run, console: console, kind: .exited(0), directory: "")) == .done)
        let control = isolation.merged().tests[0]
        #expect(control.status == .pass, "\(control.reason ?? "-")")
        #expect(control.diagnostics.filter { $0.hasPrefix("provoked: ") } == [
            "provoked: INFO: task p2plab-guest:241 blocked for more than 1 seconds. (reported after the last check, while the suite waited for it; PID 241 was started by this check (its thread was PID 240); expected: this control's child waits 8 s in D state on purpose)",
        ])
        // Without the marker the report is inside the control's own run, which the guest judged.
        let unmarked = console.replacingOccurrences(of: CheckMarkers.settleLine, with: "")
        var plain = CrashIsolation(names: checks, stopOnCrash: false, maxReboots: 5)
        _ = plain.take(.init(checks: checks, run: KTAPParser.parse(ktap, options: .init(consoleLog: unmarked, expectedNames: checks)),
                             console: unmarked, kind: .exited(0), directory: ""))
        #expect(plain.merged().tests[0].status == .fail)
    }

    @Test("a hung task nobody provoked, reported during a later check: charged to the check that started it (FAIL, its report decoded), not the running one")
    func lateUnprovokedHungTask() async throws {
        let checks = ["teardown.unbind_umem_held", "regmr.anon", "env.module"]
        let console = Self.lateHungTask(first: "teardown.unbind_umem_held")
        let run = KTAPParser.parse(Self.lateHungTaskKTAP(first: "teardown.unbind_umem_held", provokes: false), options: .init(consoleLog: console, expectedNames: checks))
        var isolation = CrashIsolation(names: checks, stopOnCrash: false, maxReboots: 5)
        #expect(isolation.take(.init(checks: checks, run: run, console: console, kind: .exited(1), directory: "")) == .done)
        await VariantPipeline.decodeReports(&isolation, decoder: FakeDecoder(lineInfo: false))
        let merged = isolation.merged()
        #expect(merged.tests.map(\.status) == [.fail, .pass, .pass])
        let owner = merged.tests[0]
        #expect(owner.reason == "its task hung: INFO: task p2plab-guest:241 blocked for more than 1 seconds.")
        #expect(owner.splats == ["INFO: task p2plab-guest:241 blocked for more than 1 seconds."])
        #expect(owner.diagnostics.contains("the hung-task report came after this check ended: reported while regmr.anon ran; PID 241 was started by this check (its thread was PID 240)"))
        #expect(owner.traceSummary?.contains("p2plab_control_hang_brief+0x31/0x40 [p2plab_test]") == true)
        #expect(merged.verdict == .fail)
    }

    @Test("a recorded run of control.hang_brief on the lab's kernel: five reports of its child (PID 64) while perftest.tmpfs ran, charged to it once as provoked; perftest.tmpfs keeps its PASS")
    func realBriefHang() throws {
        let checks = ["control.hang_brief", "perftest.tmpfs"]
        var isolation = CrashIsolation(names: checks, stopOnCrash: false, maxReboots: 5)
        let recorded = try boot("real-hang-brief-results.ktap", "real-hang-brief-console.log", checks: checks, kind: .exited(0))
        #expect(recorded.run.consoleFindings.filter { $0.kind == .hungTask }.count == 5)
        #expect(isolation.take(recorded) == .done)
        let merged = isolation.merged()
        #expect(merged.tests.map(\.status) == [.pass, .pass])
        let provoked = merged.tests[0].diagnostics.filter { $0.hasPrefix("provoked: ") }
        #expect(provoked == ["provoked: INFO: task oot.default-qos:64 blocked for more than 1 seconds. (reported while perftest.tmpfs ran; PID 64 was started by this check (its thread was PID 63); expected: this control's child waits 8 s in D state on purpose)"])
        #expect(merged.tests[1].splats.isEmpty)
        #expect(merged.tests[1].diagnostics.filter { $0.hasPrefix("hung task of check 1 control.hang_brief (PID 64 is its task") }.count == 5)
        #expect(merged.verdict == .pass)
    }

    @Test("a hung kernel thread (ppid:2) is no check's, whatever its PID: the running check keeps its report")
    func kernelThreadNotAttributed() throws {
        let checks = ["teardown.unbind_umem_held", "regmr.anon", "env.module"]
        let console = Self.lateHungTask(first: "teardown.unbind_umem_held")
            .replacingOccurrences(of: "INFO: task p2plab-guest:241", with: "INFO: task kworker/0:3:241")
            .replacingOccurrences(of: "ppid:239", with: "ppid:2  ")
        let ktap = """
            KTAP version 1
            1..3
            ok 1 teardown.unbind_umem_held
            # splat: INFO: task kworker/0:3:241 blocked for more than 1 seconds.
            not ok 2 regmr.anon
            ok 3 env.module
            """
        let run = KTAPParser.parse(ktap, options: .init(consoleLog: console, expectedNames: checks))
        var isolation = CrashIsolation(names: checks, stopOnCrash: false, maxReboots: 5)
        _ = isolation.take(.init(checks: checks, run: run, console: console, kind: .exited(1), directory: ""))
        #expect(isolation.merged().tests.map(\.status) == [.pass, .fail, .pass])
        #expect(CheckMarkers.isKernelThread(after: ["[ 7.0] task:kworker/0:3     state:D stack:0     pid:241   tgid:241   ppid:2      flags:0x4000"]))
        #expect(!CheckMarkers.isKernelThread(after: ["[ 7.0] task:p2plab-guest    state:D stack:0     pid:241   tgid:241   ppid:239    flags:0x4000"]))
        #expect(!CheckMarkers.isKernelThread(after: ["no task line here"]))
    }

    @Test("control.hang_brief passes only when its report was seen and charged to it")
    func briefControlMustBeReported() throws {
        let ktap = """
            KTAP version 1
            1..2
            # provokes ":241 blocked for more than": on purpose
            ok 1 control.hang_brief
            ok 2 env.module
            """
        let checks = ["control.hang_brief", "env.module"]
        var isolation = CrashIsolation(names: checks, stopOnCrash: false, maxReboots: 5)
        let run = KTAPParser.parse(ktap, options: .init(consoleLog: "", expectedNames: checks))
        _ = isolation.take(.init(checks: checks, run: run, console: "", kind: .exited(0), directory: ""))
        let control = isolation.merged().tests[0]
        #expect(control.status == .fail)
        #expect(control.reason?.hasPrefix("the control's report was not seen: the hung-task detector never reported") == true)
        #expect(CheckMarkers.provoked(in: ["provokes \":241 blocked for more than\": on purpose", "other"]).map(\.fragment) == [":241 blocked for more than"])
    }

    @Test("a WARNING that failed a check without crashing is decoded too, from its own check's part of the console")
    func splatDecoded() async {
        let console = """
            [    9.10] p2plab: check 1 kernfs.close_attribute begins
            [    9.11] p2plab: check 1 kernfs.close_attribute pid 70
            [    9.12] ------------[ cut here ]------------
            [    9.12] WARNING: CPU: 1 PID: 70 at fs/kernfs/file.c:478 kernfs_fop_mmap+0x1a2/0x1c0
            [    9.13] RIP: 0010:kernfs_fop_mmap+0x1a2/0x1c0
            [    9.13] Call Trace:
            [    9.13]  <TASK>
            [    9.13]  mmap_region+0x2f1/0x8c0
            [    9.13]  do_mmap+0x3d6/0x5a0
            [    9.13]  </TASK>
            [    9.14] ---[ end trace 0000000000000000 ]---
            not ok 1 kernfs.close_attribute
            """
        let ktap = """
            KTAP version 1
            1..1
            # splat: WARNING: CPU: 1 PID: 70 at fs/kernfs/file.c:478 kernfs_fop_mmap+0x1a2/0x1c0
            not ok 1 kernfs.close_attribute
            """
        var isolation = CrashIsolation(names: ["kernfs.close_attribute"], stopOnCrash: false, maxReboots: 5)
        let run = KTAPParser.parse(ktap, options: .init(consoleLog: console, expectedNames: ["kernfs.close_attribute"]))
        #expect(isolation.take(.init(checks: ["kernfs.close_attribute"], run: run, console: console, kind: .exited(1), directory: "")) == .done)
        struct Lines: TraceDecoder {
            func decode(_ report: [String]) async -> DecodedReport {
                DecodedReport(lines: report.map { $0.replacingOccurrences(of: "kernfs_fop_mmap+0x1a2/0x1c0", with: "kernfs_fop_mmap (fs/kernfs/file.c:478)") })
            }
        }
        await VariantPipeline.decodeReports(&isolation, decoder: Lines())
        let test = isolation.merged().tests[0]
        #expect(test.status == .fail)
        #expect(test.traceSummary == "kernfs_fop_mmap (fs/kernfs/file.c:478) ← mmap_region+0x2f1/0x8c0 ← do_mmap+0x3d6/0x5a0")
    }

    @Test("decode_stacktrace.sh's output on the lab kernel built with reduced DWARF: file:line for the module and the kernel")
    func realDecodedWithLines() throws {
        let lines = try fixture("real-oops-decoded-dwarf.txt").split(separator: "\n").map(String.init)
        let frames = StackTrace.frames(lines)
        #expect(StackTrace.hasLineInfo(frames))
        #expect(StackTrace.summary(frames)?.hasPrefix("p2plab_control_oops (p2plab_test.c:448) ← ? p2plab_ioctl (p2plab_test.c:466) ← ? full_proxy_unlocked_ioctl (fs/debugfs/file.c:333) ← ? vfs_ioctl (fs/ioctl.c:51)") == true,
                "\(StackTrace.summary(frames) ?? "-")")
    }
}
