import Foundation
import KTAP
import KernelConsole
import Machine

/// A crash costs one check, not the suite: what each boot of a variant's suite finished, which
/// check took the kernel down (or hung it), and which checks the next boot runs. Pure bookkeeping
/// over parsed results and console text, so it is unit-tested with recorded logs.
///
/// The check that crashed is CRASHED (a hang the guest's watchdog caught, TIMEOUT); a hung-task
/// report is charged to the check that started the blocked task (``CheckMarkers``), and the check
/// that happened to be running then is run again on the next boot. Results already finished stay:
/// the guest writes each result line to the results share as it finishes.
public struct CrashIsolation: Sendable {
    /// One boot as it ended.
    public struct Boot: Sendable {
        public var checks: [String]
        public var run: TestRun
        public var console: String
        public var kind: BootOutcome.Kind
        /// The boot's run directory, relative to the variant's (`""` for the first boot).
        public var directory: String
        /// Whether init came up and started the suite (a kernel that dies while booting never does).
        public var suiteStarted: Bool

        public init(checks: [String], run: TestRun, console: String, kind: BootOutcome.Kind, directory: String, suiteStarted: Bool = true) {
            self.checks = checks
            self.suiteStarted = suiteStarted
            self.run = run
            self.console = console
            self.kind = kind
            self.directory = directory
        }
    }

    /// What to do after a boot.
    public enum Next: Sendable, Equatable {
        /// Every check has its result.
        case done
        /// Boot again and run these checks.
        case reboot([String])
        /// Stop; the checks left are NOT RUN, for this reason.
        case stop(String)
    }

    /// A report to decode and attach to a check's result.
    public struct Report: Sendable, Equatable {
        public var check: String
        public var lines: [String]
    }

    /// Every selected check, in suite order.
    public let names: [String]
    public let stopOnCrash: Bool
    public let maxReboots: Int
    public private(set) var results: [String: TestResult] = [:]
    public private(set) var boots: [Boot] = []
    /// One line per boot after a crash, for the run's diagnostics and the progress output.
    public private(set) var notes: [String] = []
    /// Reports of the crashes and splats of this run's checks, in order.
    public private(set) var reports: [Report] = []
    /// The checks that crashed or hung, in order.
    public private(set) var casualties: [String] = []
    private var stopReason: String?

    public init(names: [String], stopOnCrash: Bool, maxReboots: Int) {
        self.names = names
        self.stopOnCrash = stopOnCrash
        self.maxReboots = maxReboots
    }

    /// A result line the guest wrote, as opposed to one the parser made up for a cut-off log.
    static func isReal(_ test: TestResult) -> Bool {
        switch test.status {
        case .crashed, .notRun: false
        case .timeout: test.directive == "TIMEOUT"
        default: true
        }
    }

    /// Takes the boot's results and says what comes next.
    public mutating func take(_ boot: Boot) -> Next {
        boots.append(boot)
        let number = boots.count
        let real = boot.run.tests.filter(Self.isReal)
        for test in real where boot.checks.contains(test.name) { results[test.name] = test }
        for test in real where test.splats.contains(where: { !$0.isEmpty }) {
            if let report = splatReport(for: test, in: boot) { reports.append(report) }
        }
        let finished = Set(real.map(\.name))
        var left = boot.checks.filter { !finished.contains($0) }
        let panicked = boot.kind == .kernelPanic || boot.run.ending == .panic
        let starts = CheckMarkers.starts(in: boot.console)
        var culprit: String?

        // A hung-task report names its task: the check that started it is the one that hung.
        let hungTasks = checkHungTasks(boot, starts: starts)
        let panicking = panicked ? hungTasks.first.map { ($0.finding, $0.owner) } : nil
        chargeHungTasks(hungTasks, in: boot, except: panicking?.0.line)
        if let (finding, start) = panicking {
            let running = left.first
            var test = results[start.name] ?? boot.run.tests.first { $0.name == start.name }
                ?? TestResult(number: 0, name: start.name, status: .crashed)
            test.status = .crashed
            test.directive = nil
            test.reason = ConsoleScanner.stripPrefix(finding.text)
            if let running, running != start.name {
                test.diagnostics.append("the hung-task report came while \(running) ran; PID \(CheckMarkers.hungTask(finding.text)?.pid ?? 0) was started by this check (its thread was PID \(start.pid)): \(running) runs again")
            }
            results[start.name] = test
            reports.append(Report(check: start.name, lines: StackTrace.report(in: boot.console, at: finding.line)))
            casualties.append(start.name)
            left.removeAll { $0 == start.name }
            culprit = start.name
        } else if let next = left.first {
            culprit = cutOff(next, in: boot, panicked: panicked, real: real)
            if let culprit { left.removeAll { $0 == culprit } }
        }
        if let reason = stopReason { return .stop(reason) }
        if left.isEmpty { return .done }
        let why = culprit.map { "\($0) \(results[$0]?.status.label ?? "CRASHED")" } ?? "the suite stopped"
        if stopOnCrash {
            return stop("--stop-on-crash: \(why) ended the run")
        }
        if number > maxReboots {
            return stop("the kernel went down \(number) times (\(casualties.joined(separator: ", "))); p2plab stops after \(maxReboots) reboots")
        }
        notes.append("boot \(number + 1) (boot-\(number + 1)/console.log): \(left.count) check(s) left after \(why)")
        return .reboot(left)
    }

    private mutating func stop(_ reason: String) -> Next {
        stopReason = reason
        return .stop(reason)
    }

    /// The boot's hung-task reports whose task one of its checks started, in console order, each
    /// with the task's PID and that check (a kernel thread is no check's, whatever its PID).
    func checkHungTasks(_ boot: Boot, starts: [CheckMarkers.Start]) -> [(finding: ConsoleFinding, pid: Int, owner: CheckMarkers.Start)] {
        let lines = ConsoleLines.split(boot.console)
        return boot.run.consoleFindings.compactMap { finding in
            guard finding.kind == .hungTask, let task = CheckMarkers.hungTask(finding.text),
                  let owner = CheckMarkers.owner(of: task.pid, starts: starts), boot.checks.contains(owner.name),
                  !CheckMarkers.isKernelThread(after: lines.dropFirst(finding.line)) else { return nil }
            return (finding, task.pid, owner)
        }
    }

    /// Hung-task reports (of `hungTasks`) that did not panic and came after the check whose task hung had ended
    /// (while a later check ran): each is charged to that check, found by the task's PID, once per
    /// task. A report of what the check provokes on purpose (its `provokes` diagnostics) is noted as
    /// provoked; any other fails it, with the report as its splat. The check that was running keeps
    /// its own verdict (the guest left the report out of it). A report inside its own check's run
    /// was judged by the guest already.
    mutating func chargeHungTasks(_ hungTasks: [(finding: ConsoleFinding, pid: Int, owner: CheckMarkers.Start)], in boot: Boot,
                                  except panicLine: Int?) {
        var charged: Set<Int> = []
        let markers = Self.runnerMarkers(in: boot.console)
        for (finding, pid, owner) in hungTasks where finding.line != panicLine {
            guard var test = results[owner.name] else { continue }
            // The marker before the report: a check's begin, or the runner's settle (no check ran).
            let marker = markers.last { $0.line <= finding.line }
            let running = marker?.name
            guard running != owner.name, charged.insert(pid).inserted else { continue }
            let line = ConsoleScanner.stripPrefix(finding.text)
            let when = running.map { "reported while \($0) ran" }
                ?? (marker == nil ? "reported while no check ran" : "reported after the last check, while the suite waited for it")
            let attribution = "\(when); PID \(pid) was started by this check (its thread was PID \(owner.pid))"
            if let why = CheckMarkers.provoked(in: test.diagnostics).first(where: { line.contains($0.fragment) })?.why {
                test.diagnostics.append("provoked: \(line) (\(attribution); expected: \(why))")
            } else {
                if test.status == .pass || test.status == .skip {
                    test.status = .fail
                    test.directive = nil
                    test.reason = "its task hung: \(line)"
                }
                test.splats.append(line)
                test.diagnostics.append("the hung-task report came after this check ended: \(attribution)")
                reports.append(Report(check: owner.name, lines: StackTrace.report(in: boot.console, at: finding.line)))
            }
            results[owner.name] = test
        }
    }

    /// The runner's markers in the console: each `p2plab: check N NAME begins` with its line
    /// (1-based) and check, and its settle marker (its checks done) as a line with no check.
    static func runnerMarkers(in console: String) -> [(line: Int, name: String?)] {
        ConsoleLines.split(console).enumerated().compactMap { index, text in
            if text.hasSuffix(CheckMarkers.settleLine) { return (index + 1, nil) }
            guard let range = text.firstRange(of: "p2plab: check "), text.hasSuffix(" begins") else { return nil }
            let words = text[range.upperBound...].split(separator: " ")
            return words.count == 3 && Int(words[0]) != nil ? (index + 1, String(words[1])) : nil
        }
    }

    /// The check `next` was cut off: CRASHED or TIMEOUT, with what the console said. Nil when it
    /// never began (the guest's watchdog stopped the suite after the check before it).
    mutating func cutOff(_ next: String, in boot: Boot, panicked: Bool, real: [TestResult]) -> String? {
        let synthesized = boot.run.tests.first { $0.name == next && !Self.isReal($0) }
        let begun = CheckMarkers.begun(in: boot.console)
        let began = begun.contains(next)
        var test = synthesized ?? TestResult(number: 0, name: next, status: .crashed)
        switch boot.kind {
        case .kernelPanic:
            test.status = .crashed
        case .commandTimeout:
            test.status = .timeout
            test.reason = test.reason ?? "the suite outlived --timeout while this check ran"
        case .qemuDied:
            test.status = .crashed
            test.reason = "QEMU ended while this check ran"
        case .exited(let status):
            if panicked {
                test.status = .crashed
            } else if real.last?.status == .timeout {
                // The guest's watchdog gave up on the check before and stopped the suite.
                return nil
            } else if began {
                test.status = .crashed
                test.reason = "the suite process ended while this check ran (exit status \(status))"
            } else {
                _ = stop("the suite stopped before \(next) (exit status \(status)); see \(boot.directory.isEmpty ? "" : boot.directory + "/")console.log")
                return nil
            }
        case .bootTimeout, .qemuFailed:
            _ = stop("boot \(boots.count) did not come up (\(boot.kind.name)); see \(boot.directory)/console.log")
            return nil
        }
        test.directive = nil
        if !began { test.diagnostics.append("the kernel went down before this check began") }
        // Checks that began after it without a result ran beside it (the runner starts a check's
        // companions while it waits, and writes their results after its own): either may have
        // taken the kernel down; they run again on the next boot, on their own.
        if began, let position = begun.lastIndex(of: next) {
            let beside = begun[(position + 1)...].filter { $0 != next && boot.checks.contains($0) && results[$0] == nil }
            if !beside.isEmpty {
                test.diagnostics.append("\(beside.joined(separator: ", ")) ran beside it when the kernel went down, so either may have done it; \(beside.count == 1 ? "it runs" : "they run") again on the next boot, on its own")
            }
        }
        if !boot.suiteStarted {
            // Booting again would only crash again: the kernel does not reach its suite.
            _ = stop("the kernel went down while booting, before the suite started (boot \(boots.count)); see \(boot.directory.isEmpty ? "" : boot.directory + "/")console.log")
        }
        if let finding = firstFinding(after: next, in: boot) {
            if test.splats.isEmpty { test.splats.append(ConsoleScanner.stripPrefix(finding.text)) }
            reports.append(Report(check: next, lines: StackTrace.report(in: boot.console, at: finding.line)))
        }
        results[next] = test
        casualties.append(next)
        return next
    }

    /// The console line where `check`'s begin marker is (1-based), and where the next check's is.
    func region(of check: String, in console: String) -> (start: Int, end: Int)? {
        let lines = ConsoleLines.split(console)
        var start: Int?
        for (index, line) in lines.enumerated() {
            guard line.contains("p2plab: check "), line.contains(" begins") else { continue }
            if start != nil { return (start!, index + 1) }
            if line.hasSuffix(" \(check) begins") { start = index + 1 }
        }
        return start.map { ($0, lines.count + 1) }
    }

    /// The first alarming console line at or after `check` began (the panic itself only if nothing else).
    func firstFinding(after check: String, in boot: Boot) -> ConsoleFinding? {
        let start = region(of: check, in: boot.console)?.start ?? 0
        let after = boot.run.consoleFindings.filter { $0.line >= start }
        return after.first { $0.kind != .panic } ?? after.first
    }

    /// The report behind a finished check's first splat.
    func splatReport(for test: TestResult, in boot: Boot) -> Report? {
        guard let splat = test.splats.first, let region = region(of: test.name, in: boot.console) else { return nil }
        let finding = boot.run.consoleFindings.first { finding in
            finding.line > region.start && finding.line < region.end && splat.contains(ConsoleScanner.stripPrefix(finding.text).prefix(60))
        }
        return finding.map { Report(check: test.name, lines: StackTrace.report(in: boot.console, at: $0.line)) }
    }

    /// Adds a line to the run's diagnostics.
    public mutating func note(_ line: String) {
        notes.append(line)
    }

    /// Attaches a decoded report to its check.
    public mutating func attach(_ trace: [String], to check: String) {
        guard var test = results[check], test.trace.isEmpty else { return }
        test.trace = trace
        results[check] = test
    }

    /// Why a hang control's report was missing: the suite waits for it (it comes 1-2 s after the
    /// child blocks), so the detector did not run or did not see the child.
    static let hangNotReported = "the hung-task detector never reported the blocked child, though the suite went on \(Int(CheckMarkers.hungTaskReportWithin)) s after it blocked: is khungtaskd running (CONFIG_DETECT_HUNG_TASK) in the kernel under test?"

    /// Controls that pass only by taking the kernel down: one that finished as a PASS proves nothing.
    public static let mustCrash: [String: String] = ["control.hang": hangNotReported]

    /// Controls that pass only when the report they provoke was seen and charged to them.
    public static let mustBeReported: [String: String] = ["control.hang_brief": hangNotReported]

    /// The variant's results: every selected check once, in suite order, numbered afresh.
    public func merged() -> TestRun {
        guard var run = boots.first?.run else { return TestRun() }
        var results = self.results
        for (name, why) in Self.mustCrash {
            guard var test = results[name], test.status == .pass else { continue }
            test.status = .fail
            test.reason = "the control did not take the kernel down: \(why)"
            results[name] = test
        }
        for (name, why) in Self.mustBeReported {
            guard var test = results[name], test.status == .pass, !test.diagnostics.contains(where: { $0.hasPrefix("provoked: ") }) else { continue }
            test.status = .fail
            test.reason = "the control's report was not seen: \(why)"
            results[name] = test
        }
        if boots.count == 1, casualties.isEmpty, stopReason == nil {
            // One boot that ran to its end: its results as they are (with any traces attached).
            run.tests = run.tests.map { test in
                guard var merged = results[test.name] else { return test }
                merged.number = test.number
                return merged
            }
            run.diagnostics += notes
            return run
        }
        run.tests = names.enumerated().map { index, name in
            var test = results[name] ?? TestResult(
                number: 0, name: name, status: .notRun, reason: stopReason ?? "not reached")
            test.number = index + 1
            return test
        }
        run.plan = names.count
        run.diagnostics += notes
        if let stopReason { run.diagnostics.append("stopped: \(stopReason)") }
        let last = boots[boots.count - 1].run
        run.ending = stopReason == nil ? .complete : last.ending == .complete ? .truncated : last.ending
        if boots.count > 1 {
            run.metadata["boots"] = "\(boots.count)"
            for (index, boot) in boots.enumerated().dropFirst() {
                run.parseErrors += boot.run.parseErrors.map { ParseIssue(line: $0.line, message: "boot \(index + 1): \($0.message)") }
                run.consoleFindings += boot.run.consoleFindings
            }
        }
        return run
    }
}
