import CP2PLabUAPI
import Catalog
import KernelConsole
import Foundation
import KTAP
import LabSupport

/// How one check ended, as the runner reports it.
public enum CheckVerdict: Sendable, Equatable {
    case pass
    case fail
    case skip(String)
    /// The watchdog gave up on it; the run cannot go on (the check's thread may be stuck in the kernel).
    case timeout(seconds: Double)
}

/// Runs checks one at a time, each between a kernel-log marker and a scan of what the kernel said,
/// each under a watchdog, and writes KTAP version 1 with this project's diagnostic keys
/// (`# duration_ms:`, `# errno:`, `# expected:`, `# observed:`, `# splat:`), diagnostics before the
/// result line.
public final class SuiteRunner: Sendable {
    public let checks: [CheckDefinition]
    public let context: CheckContext
    public let kernelLog: any KernelLogSource
    /// Per-check watchdog, seconds.
    public let timeout: Double
    private let emit: @Sendable (String) -> Void
    /// Every check's start so far: its number, name and thread PID, as it logged them.
    private let starts = CheckStartLog()

    public init(
        checks: [CheckDefinition], context: CheckContext, kernelLog: any KernelLogSource, timeout: Double = LabLimits.standard.check,
        emit: @escaping @Sendable (String) -> Void
    ) {
        self.checks = checks
        self.context = context
        self.kernelLog = kernelLog
        self.timeout = timeout
        self.emit = emit
    }

    /// The checks whose names match any of `filters` (all checks when there are none), in the
    /// order the suite runs them (``SuiteCatalog/runOrder(_:info:)``: a check that runs beside
    /// another right after it); an opt-in check (a control) only when a filter is its exact name.
    public static func select(_ checks: [CheckDefinition], filters: [String]) -> [CheckDefinition] {
        SuiteCatalog.runOrder(checks.filter { $0.info.selected(by: filters) }, info: \.info)
    }

    /// Runs every check and returns the kselftest exit code: 0 all passed (skips allowed),
    /// 1 a failure or a timeout, 4 everything skipped.
    public func run(preamble: [String] = []) -> LabExit {
        let writer = KTAPWriter(emit: emit)
        writer.header()
        for line in preamble { writer.diagnostic(line) }
        writer.plan(checks.count)
        var passed = 0
        var failed = 0
        var settle: (until: Double, why: String)?
        var index = 0
        while index < checks.count {
            let check = checks[index]
            // The checks that run beside this one follow it (`select`'s order).
            var companions: [(CheckDefinition, Int)] = []
            while index + 1 + companions.count < checks.count, checks[index + 1 + companions.count].info.beside == check.name {
                companions.append((checks[index + 1 + companions.count], index + 2 + companions.count))
            }
            let verdicts = companions.isEmpty
                ? [runOne(check, number: index + 1, writer: writer, settle: &settle)]
                : runBeside(check, number: index + 1, companions: companions, writer: writer, settle: &settle)
            index += 1 + companions.count
            var timedOut = false
            for verdict in verdicts {
                switch verdict {
                case .pass: passed += 1
                case .fail: failed += 1
                case .skip: break
                case .timeout: timedOut = true
                }
            }
            // A check's thread may be blocked in the kernel for good: stop here, exit 1.
            if timedOut { return .failed }
        }
        // What a check set going may still have to show (a report the kernel prints a little
        // later): the suite does not end before it could have.
        if let settle {
            let left = settle.until - monotonicSeconds()
            if left > 0 {
                writer.diagnostic(String(format: "settle: waiting %.1f s before the suite ends: %@", left, settle.why))
                kernelLog.note(CheckMarkers.settleLine)
                pause(seconds: left)
            }
        }
        if failed > 0 { return .failed }
        return passed == 0 && !checks.isEmpty ? .skipped : .success
    }

    /// One check's run: what its body did, before the runner judges it by the kernel log.
    struct Execution {
        var check: CheckDefinition
        var number: Int
        var recorder: CheckRecorder
        /// Nil: the watchdog gave up on it.
        var outcome: Result<Void, any Error>?
        var duration: Double
    }

    /// Why `check` cannot run here (a requirement missing), written as its SKIP result; nil when it can.
    private func unmet(_ check: CheckDefinition, number: Int, writer: KTAPWriter) -> String? {
        for requirement in check.requirements {
            if let problem = context.problem(requirement) {
                writer.result(number, check.name, .skip, reason: problem)
                return problem
            }
        }
        return nil
    }

    /// Runs the body under the watchdog, from its own thread; `prepare` sees the recorder first.
    private func execute(_ check: CheckDefinition, number: Int, prepare: (CheckRecorder) -> Void = { _ in }) -> Execution {
        let recorder = CheckRecorder(device: context.rdma?.kind, reference: context.reference)
        prepare(recorder)
        let start = monotonicSeconds()
        let outcome = Watchdog.run(seconds: timeout) { () -> Result<Void, any Error> in
            // From the check's own thread: every task it starts gets a PID from here on, which is
            // how the host tells whose task a hung-task report names.
            let pid = Int(p2plab_gettid())
            self.starts.append(CheckMarkers.Start(number: number, name: check.name, pid: pid))
            self.kernelLog.note(CheckMarkers.pidLine(number: number, name: check.name, pid: pid))
            return Result { try check.body(self.context, recorder) }
        }
        return Execution(check: check, number: number, recorder: recorder, outcome: outcome, duration: monotonicSeconds() - start)
    }

    /// Runs one check and writes its diagnostics and result line; moves `settle` later when the
    /// check asks the suite to go on for what it set going (``CheckRecorder/settle``).
    func runOne(_ check: CheckDefinition, number: Int, writer: KTAPWriter, settle: inout (until: Double, why: String)?) -> CheckVerdict {
        if let problem = unmet(check, number: number, writer: writer) { return .skip(problem) }
        kernelLog.mark(CheckMarkers.beginLine(number: number, name: check.name))
        let run = execute(check, number: number)
        return judge(run, kernelLines: kernelLog.linesSinceMark(), writer: writer, settle: &settle)
    }

    /// Runs `check` and, once it says it only waits (``CheckRecorder/waitsFromHere()``), its
    /// companions one after another on a thread of their own; those it never lets run go after it.
    /// Each companion's kernel log is what came between its markers; the host check's is everything
    /// from its own marker to the last companion's end, so a report while both ran fails both.
    /// Writes the host check's result, then the companions', in their numbers' order.
    func runBeside(_ check: CheckDefinition, number: Int, companions: [(CheckDefinition, Int)], writer: KTAPWriter,
                   settle: inout (until: Double, why: String)?) -> [CheckVerdict] {
        if let problem = unmet(check, number: number, writer: writer) {
            var verdicts: [CheckVerdict] = [.skip(problem)]
            for (companion, companionNumber) in companions {
                verdicts.append(runOne(companion, number: companionNumber, writer: writer, settle: &settle))
            }
            return verdicts
        }
        kernelLog.mark(CheckMarkers.beginLine(number: number, name: check.name))
        let beside = BesideRuns()
        let done = DispatchSemaphore(value: 0)
        // Companions whose requirements are missing skip without running; their lines wait for the host's.
        let runnable = companions.filter { companion in
            !companion.0.requirements.contains { context.problem($0) != nil }
        }
        let launch: @Sendable () -> Void = {
            guard beside.start() else { return }
            let thread = Thread {
                for (companion, companionNumber) in runnable {
                    self.kernelLog.note(CheckMarkers.beginLine(number: companionNumber, name: companion.name))
                    let run = self.execute(companion, number: companionNumber)
                    self.kernelLog.note(CheckMarkers.endLine(number: companionNumber, name: companion.name))
                    beside.append(run)
                    // Its thread may be stuck in the kernel: the rest do not start.
                    if run.outcome == nil { break }
                }
                done.signal()
            }
            thread.stackSize = 8 << 20
            thread.start()
        }
        let run = execute(check, number: number) { $0.onWait = launch }
        // From here a late call (from a thread the watchdog gave up on) starts nothing.
        guard beside.close() else {
            // It never said it only waits: its companions run after it, each on its own.
            var verdicts = [judge(run, kernelLines: kernelLog.linesSinceMark(), writer: writer, settle: &settle)]
            if case .timeout = verdicts[0] { return verdicts }
            for (companion, companionNumber) in companions {
                verdicts.append(runOne(companion, number: companionNumber, writer: writer, settle: &settle))
            }
            return verdicts
        }
        // Each companion is bounded by its own watchdog.
        done.wait()
        let lines = kernelLog.linesSinceMark()
        let runs = beside.runs
        run.recorder.note("ran beside it: " + runs.map { "\($0.number) \($0.check.name)" }.joined(separator: ", "))
        var verdicts = [judge(run, kernelLines: lines, writer: writer, settle: &settle)]
        for (companion, companionNumber) in companions {
            guard let companionRun = runs.first(where: { $0.number == companionNumber }) else {
                if let problem = unmet(companion, number: companionNumber, writer: writer) {
                    verdicts.append(.skip(problem))
                } else {
                    // An earlier companion timed out: this one never began.
                    writer.result(companionNumber, companion.name, .skip, reason: "not run: a check before it timed out")
                    verdicts.append(.skip("not run"))
                }
                continue
            }
            companionRun.recorder.note("ran beside \(number) \(check.name) while it waited")
            let own = Self.window(of: companionRun, in: lines)
            verdicts.append(judge(companionRun, kernelLines: own, writer: writer, settle: &settle))
        }
        return verdicts
    }

    /// A companion's kernel log within the host check's: the lines after its begin marker up to
    /// its end marker (to the end when there is none: it timed out).
    static func window(of run: Execution, in lines: [String]) -> [String] {
        let begin = CheckMarkers.beginLine(number: run.number, name: run.check.name)
        let end = CheckMarkers.endLine(number: run.number, name: run.check.name)
        guard let first = lines.firstIndex(where: { $0.hasSuffix(begin) }) else { return lines }
        let rest = lines[(first + 1)...]
        return Array(rest.prefix { !$0.hasSuffix(end) })
    }

    /// Judges a check's run by what it recorded and what the kernel said meanwhile, and writes its
    /// diagnostics and result line.
    func judge(_ run: Execution, kernelLines: [String], writer: KTAPWriter, settle: inout (until: Double, why: String)?) -> CheckVerdict {
        let (check, number, recorder, outcome, duration) = (run.check, run.number, run.recorder, run.outcome, run.duration)
        var found = splats(in: kernelLines)
        // A hung-task report that names a task an earlier check started is that check's, not this
        // one's: the host charges it there (by the same PID markers); this check keeps its verdict.
        // A kernel thread is no check's, whatever its PID: the running check keeps its report.
        var elsewhere: [String] = []
        var foreign = Set<String>()
        let known = starts.all
        for (index, line) in kernelLines.enumerated() {
            guard let task = CheckMarkers.hungTask(line), let owner = CheckMarkers.owner(of: task.pid, starts: known),
                  owner.name != check.name, !CheckMarkers.isKernelThread(after: kernelLines[(index + 1)...]) else { continue }
            foreign.insert(line)
            elsewhere.append("hung task of check \(owner.number) \(owner.name) (PID \(task.pid) is its task; its thread was PID \(owner.pid)), charged there: \(line)")
        }
        found.removeAll { foreign.contains($0) }
        // A splat the check provoked on purpose (and said so) is reported, not counted.
        var provoked: [String] = []
        found.removeAll { splat in
            guard let why = recorder.provokedReason(for: splat) else { return false }
            provoked.append("\(splat) (expected: \(why))")
            return true
        }
        // A WARNING the kernel under test is meant to print is the expected result, not a splat; one
        // it is meant to print and did not is a failure.
        var expectedSeen: [String] = []
        for site in recorder.expectedWarnings {
            if let index = found.firstIndex(where: site.matches) {
                expectedSeen.append("expected WARNING from \(site): \(found.remove(at: index))")
            } else if outcome != nil {
                recorder.fail("expected a WARNING from \(site), the kernel printed none")
            }
        }

        guard let outcome else {
            writer.diagnostic("duration_ms: \(Int(duration * 1000))")
            writer.diagnostic("TIMEOUT: \(check.name) did not finish within \(Int(timeout)) s (--timeout); stopping the suite")
            for line in recorder.notes { writer.diagnostic(line) }
            for splat in found { writer.diagnostic("splat: \(splat)") }
            emit(writer.indent + "not ok \(number) \(check.name) # TIMEOUT")
            return .timeout(seconds: timeout)
        }
        if let wants = recorder.settle, wants.until > settle?.until ?? 0 { settle = wants }

        var skipReason: String?
        var thrown: String?
        var instrumentError: String?
        if case .failure(let error) = outcome {
            if let skip = error as? CheckSkip {
                skipReason = skip.reason
            } else if let broken = error as? CheckError {
                instrumentError = broken.reason
            } else {
                thrown = "\(error)"
            }
        }
        if !recorder.subtests.isEmpty { KTAPEmitter.writeSubtests(recorder.subtests, of: check.name, with: writer) }
        writer.diagnostic("duration_ms: \(Int(duration * 1000))")
        for line in recorder.notes { writer.diagnostic(line) }
        if let thrown { writer.diagnostic("FAIL: \(thrown)") }
        if let errno = recorder.errno { writer.diagnostic("errno: \(errno.name)") }
        if let expected = recorder.expected { writer.diagnostic("expected: \(expected)") }
        if let observed = recorder.observed { writer.diagnostic("observed: \(observed)") }
        for line in expectedSeen { writer.diagnostic(line) }
        for line in provoked { writer.diagnostic("provoked: \(line)") }
        for line in elsewhere { writer.diagnostic(line) }
        // What it provokes on purpose, for the host: a report of it that comes after the check ended
        // (a hung task reported during a later check) is still provoked, not a splat.
        for (fragment, why) in recorder.expectedSplats { writer.diagnostic(CheckMarkers.provokesLine(fragment: fragment, why: why)) }
        for splat in found { writer.diagnostic("splat: \(splat)") }

        if let instrumentError {
            writer.diagnostic("ERROR: \(instrumentError)")
            writer.result(number, check.name, ok: false, directive: "ERROR", text: instrumentError)
            return .fail
        }
        // A splat fails the check even when it skipped: the kernel complained while it ran.
        if let skipReason, found.isEmpty, recorder.failures.isEmpty {
            writer.result(number, check.name, .skip, reason: skipReason)
            return .skip(skipReason)
        }
        if thrown == nil, recorder.failures.isEmpty, found.isEmpty, skipReason == nil {
            writer.result(number, check.name, .pass)
            return .pass
        }
        writer.result(number, check.name, .fail)
        return .fail
    }

    /// `--list`: one line per check, name, the effects its verdict depends on and what it asserts.
    public static func listing(_ checks: [CheckDefinition]) -> [String] {
        ColumnTable(rows: checks.map { check in
            let kinds = check.info.kinds.sorted().map(\.short)
            let beside = check.info.beside.map { " (runs beside \($0) while it waits)" } ?? ""
            return [check.name, kinds.isEmpty ? "-" : kinds.joined(separator: ","), check.summary + beside]
        }).lines
    }
}

/// The companions' runs beside a host check: whether they started, and each one's run as it ended.
final class BesideRuns: @unchecked Sendable {
    private let lock = NSLock()
    private var state: (started: Bool, closed: Bool) = (false, false)
    private var finished: [SuiteRunner.Execution] = []

    /// Whether the caller is the one to start them: the first call before ``close()``.
    func start() -> Bool {
        lock.withLock {
            guard !state.started, !state.closed else { return false }
            state.started = true
            return true
        }
    }

    /// Starting is over; whether they started.
    func close() -> Bool {
        lock.withLock {
            state.closed = true
            return state.started
        }
    }

    func append(_ run: SuiteRunner.Execution) { lock.withLock { finished.append(run) } }

    var runs: [SuiteRunner.Execution] { lock.withLock { finished } }
}

/// The checks' starts as their threads logged them (written from each check's watchdog thread).
final class CheckStartLog: @unchecked Sendable {
    private let lock = NSLock()
    private var starts: [CheckMarkers.Start] = []

    func append(_ start: CheckMarkers.Start) { lock.withLock { starts.append(start) } }

    var all: [CheckMarkers.Start] { lock.withLock { starts } }
}

/// Runs blocking work on its own thread and waits at most a given time for it.
enum Watchdog {
    /// The body's value, or nil when it did not finish in time (its thread is then abandoned: a
    /// thread stuck in a system call cannot be cancelled, and the caller is about to exit).
    static func run<T: Sendable>(seconds: Double, _ body: @escaping @Sendable () -> T) -> T? {
        let box = WatchdogBox<T>()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            box.value = body()
            done.signal()
        }
        thread.stackSize = 8 << 20
        thread.start()
        guard done.wait(timeout: .now() + seconds) == .success else { return nil }
        return box.value
    }
}

/// The watchdog's result slot: written by the worker before it signals, read after the wait.
final class WatchdogBox<T>: @unchecked Sendable {
    var value: T?
}
