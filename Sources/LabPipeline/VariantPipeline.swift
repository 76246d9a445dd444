import Foundation
import KTAP
import KernelConsole
import KernelTree
import LabSupport
import Machine

/// Where the lab's own files are and what bounds every step: the fixed inputs of a pipeline.
public struct LabSetup: Sendable {
    /// The p2plab checkout: `kernel/module`, `vm/`, the default series and config fragment.
    public var root: URL
    public var cache: CacheLayout
    public var limits: LabLimits
    /// The executable the guest runs the suite with (`p2plab-guest`, beside the host binary).
    public var guestExecutable: URL

    public init(root: URL, cache: CacheLayout, limits: LabLimits = .standard, guestExecutable: URL) {
        self.root = root
        self.cache = cache
        self.limits = limits
        self.guestExecutable = guestExecutable
    }

    public var moduleSource: URL { root.appendingPathComponent("kernel/module") }
    public var vmDirectory: URL { root.appendingPathComponent("vm") }
    /// The lab's own config fragment, merged before the user's.
    public var labFragment: URL { root.appendingPathComponent("kernel/config/p2plab.config") }
    /// The series version p2plab uses when none is named (`kernel/series/v2`).
    public var defaultSeries: URL { BundledSeries.directory(root: root).appendingPathComponent(BundledSeries.defaultVersion) }
}

/// How the suite is run on a kernel: the machine, the accelerator, the checks.
public struct SuitePlan: Sendable {
    public var machine: MachineDefinition
    public var accel: AccelChoice
    /// Globs of the checks to run (all when empty).
    public var checks: [String]
    /// Every check name the suite has, so the parser can mark the ones that never ran.
    public var expectedNames: [String]
    /// The kernel the checks assert (effect tokens, as `check --expect` takes them); nil: the default.
    public var expect: String?
    /// A shell command the guest runs before the suite (the end-to-end tests disarm kprobes with it).
    public var prelude: String?
    /// After a check crashes or hangs the kernel, stop there (the rest NOT RUN) instead of booting
    /// again for the checks left.
    public var stopOnCrash = false
    /// Boot with `panic_on_warn=1`: a WARNING panics the kernel, so a check that makes one is CRASHED.
    public var panicOnWarn = false

    /// Whether a check the plan runs needs the kernel's mm selftests: building them for a new
    /// commit takes ~10 s, which a bisect step on other checks should not wait for.
    public var needsSelftests = true

    public init(machine: MachineDefinition, accel: AccelChoice, checks: [String] = [], expectedNames: [String], expect: String? = nil) {
        self.machine = machine
        self.accel = accel
        self.checks = checks
        self.expectedNames = expectedNames
        self.expect = expect
    }
}

/// What the guest runs on a boot.
public enum GuestJob: Sendable {
    /// A typed invocation for the suite executable, written to the results share.
    case invocation(GuestInvocation)
    /// A plain shell command (the bench's `true` boot cycle).
    case shell(String)
}

/// One variant from source to verdict.
public struct VariantResult: Sendable {
    public var label: String
    public var selection: PatchSelection
    public var manifest: BuildManifest?
    public var run: TestRun?
    public var runDirectory: URL
    /// Why the variant could not be tested (build or infrastructure failure), if so.
    public var problem: String?
    /// The problem's own exit code, when p2plab knows it.
    public var problemExit: LabExit?
    /// How the boot ended, if it booted.
    public var ending: BootOutcome.Kind?
    public var seconds: Double
    /// The earlier step whose results these are: it booted the same bzImage and test module.
    public var reusedFrom: URL?
    /// Where the time went: the kernel's phases, then boot (QEMU start → the guest's init ready),
    /// suite (the rest of each boot: the guest binary's start, the module, the checks, poweroff)
    /// and decode.
    public var times = PhaseTimes()

    public init(label: String, selection: PatchSelection, manifest: BuildManifest? = nil, run: TestRun? = nil, runDirectory: URL,
                problem: String? = nil, problemExit: LabExit? = nil, ending: BootOutcome.Kind? = nil, seconds: Double = 0) {
        self.label = label
        self.selection = selection
        self.manifest = manifest
        self.run = run
        self.runDirectory = runDirectory
        self.problem = problem
        self.problemExit = problemExit
        self.ending = ending
        self.seconds = seconds
    }

    /// True when this kernel could not be tested: it did not build or boot, or the suite ran
    /// to its end (the guest exited) without saying anything.
    public var couldNotTest: Bool {
        if problem != nil { return true }
        guard let run else { return true }
        if run.verdict == .noResults, case .exited = ending { return true }
        return false
    }

    /// 0 all passed; 1 a check failed; 7 a check crashed or hung the kernel (CRASHED, TIMEOUT: that
    /// outranks a failure); the problem's own exit code when the
    /// kernel could not be tested for a reason p2plab knows (a patch that does not apply: 13, a
    /// boot timeout: 121, …); 125 when it could not be tested otherwise.
    public var exitCode: Int32 {
        if problem != nil { return (problemExit ?? .couldNotTest).rawValue }
        guard let run else { return LabExit.couldNotTest.rawValue }
        switch run.verdict {
        case .pass where nothingTested != nil: return LabExit.skipped.rawValue
        case .pass: return LabExit.success.rawValue
        case .skipped: return LabExit.skipped.rawValue
        case .noResults: return couldNotTest ? LabExit.couldNotTest.rawValue : LabExit.failed.rawValue
        case .crashed, .timeout: return LabExit.crashed.rawValue
        default: return LabExit.failed.rawValue
        }
    }

    /// Why a run without failures still tested nothing worth a PASS: every check skipped, or the
    /// test module or the p2pmem provider was missing (the checks that need them skipped). Nil when
    /// the run tested what it should.
    public var nothingTested: String? {
        guard let run else { return nil }
        if run.verdict == .skipped {
            return "every check was skipped" + (run.tests.first?.reason.map { " (the first: \($0))" } ?? "")
        }
        guard run.verdict == .pass else { return nil }
        for (key, what) in [("module", "the test module"), ("provider", "the p2pmem provider")] {
            if let value = run.metadata[key], value.hasPrefix("none") {
                return "\(what) is missing: \(value.dropFirst(4).trimmingCharacters(in: CharacterSet(charactersIn: " ()")))"
            }
        }
        return nil
    }

    /// The kernel ran with panic_on_warn=1 (`--panic-on-warn`): a check that WARNs is CRASHED.
    public var panicOnWarn: Bool { run?.metadata[RunMetadata.Keys.panicOnWarn] == "1" }

    /// The variant's patches do not apply (one of them needs a patch the selection leaves out).
    public var doesNotApply: Bool { problemExit == .patchDoesNotApply }

    /// Status of a check by name (`pass`, `fail`, `crashed`, …), or nil when it did not run.
    /// A check with nested results (the kernel's selftests) is found by its own name, not its cases'.
    public func status(of name: String) -> TestResult? {
        run?.tests.first { $0.name == name } ?? run?.leaves.first { $0.test.name == name }?.test
    }
}

/// One variant's way through the lab: prepare source → apply series → build → module → boot →
/// run checks → results. Every command that tests kernels (`test`, `--compare`, `--ablate`,
/// `bisect`, `bench`) is a client of this type; each step has a timeout from `LabLimits`, and a
/// failure becomes a result, never a hang.
public struct VariantPipeline: Sendable {
    public let setup: LabSetup
    public let runner: Runner
    public let progress: @Sendable (String) -> Void

    /// How a run's kernel reports are decoded (the tree's decode_stacktrace.sh by default).
    public var traceDecoder: @Sendable (BuiltKernel) -> any TraceDecoder

    public init(setup: LabSetup, runner: Runner = Runner(), progress: @escaping @Sendable (String) -> Void) {
        self.setup = setup
        self.runner = runner
        self.progress = progress
        let limits = setup.limits
        traceDecoder = { DecodeStacktrace(kernel: $0, runner: runner, timeout: limits.decode) }
    }

    public var kernels: Kernels { Kernels(cache: setup.cache, runner: runner, limits: setup.limits, progress: progress) }

    /// Steps 1–4: the variant's kernel (cached or built) and the test module against it.
    public func kernel(_ recipe: KernelRecipe, _ selection: PatchSelection, module: Bool = true, selftests: Bool = false) async throws -> BuiltKernel {
        try await kernels.build(recipe, selection, moduleSource: module ? setup.moduleSource : nil, selftests: selftests)
    }

    /// The guest's view of a built kernel: what its expectations are for.
    public static func guestKernel(_ manifest: BuildManifest) -> GuestInvocation.Kernel {
        GuestInvocation.Kernel(
            release: manifest.kernelRelease, variant: manifest.variant,
            patches: manifest.patches.filter { $0.state == .applied }
                .map { .init(index: $0.index, subject: $0.subject, contentHash: $0.contentHash) })
    }

    /// The shell command that runs `setup.guestExecutable` on the invocation in the results share.
    public func guestCommand(prelude: String? = nil) -> String {
        (prelude.map { "\($0); " } ?? "")
            + shellQuote([setup.guestExecutable.path, "check", "--invocation"]) + " \"$P2PLAB_RESULTS/\(GuestInvocation.fileName)\""
    }

    /// Step 5: boots `kernel` on `machine` and runs `job`; `timeout` bounds the guest command.
    public func boot(
        _ kernel: BuiltKernel, machine: MachineDefinition, accel: AccelChoice, job: GuestJob, directory: URL,
        timeout: Double, prelude: String? = nil, kernelArguments: [String] = [],
        onConsoleLine: @escaping @Sendable (ConsoleLine) -> Void = { _ in }
    ) async throws -> BootOutcome {
        try FileManager.default.ensureDirectory(directory)
        let command: String
        switch job {
        case .invocation(var invocation):
            invocation.host = machine.hostAccess
            try invocation.write(into: RunDirectory(directory).guest)
            command = guestCommand(prelude: prelude)
        case .shell(let line):
            command = line
        }
        var shared = [setup.guestExecutable.path, setup.root.path]
        // The module lives in the cache (under /root by default), which the guest covers with tmpfs.
        if let module = kernel.module { shared.append(module.deletingLastPathComponent().path) }
        if case .success(let dir)? = kernel.selftests { shared.append(dir.path) }
        let request = BootRequest(
            kernel: URL(fileURLWithPath: kernel.manifest.bzImage), definition: machine, accel: accel,
            command: command, timeout: timeout, bootTimeout: setup.limits.boot, runDirectory: directory,
            environment: ["P2PLAB_ROOT": setup.root.path], sharedPaths: shared, extraKernelArguments: kernelArguments,
            vmDirectory: setup.vmDirectory, cache: setup.cache)
        return try await LabMachine.boot(request, runner: runner, onConsoleLine: onConsoleLine)
    }

    /// The whole way for one variant, results written into `directory`. With `memory`, a kernel
    /// and module identical to an earlier step's are not booted again: that step's results are
    /// taken, and the result says whose they are.
    public func run(_ recipe: KernelRecipe, _ selection: PatchSelection, suite: SuitePlan, directory: URL,
                    memory: StepMemory? = nil) async -> VariantResult {
        let start = Date()
        let label = selection.label
        var result = VariantResult(label: label, selection: selection, runDirectory: directory)
        do {
            progress("[\(label)] build")
            let kernel = try await self.kernel(recipe, selection, selftests: suite.needsSelftests)
            let manifest = kernel.manifest
            result.manifest = manifest
            result.times = kernel.times
            var stepKey: String?
            if let memory, let module = kernel.module {
                let key = try await memory.key(bzImage: URL(fileURLWithPath: manifest.bzImage), module: module, suite: suite,
                                               limits: setup.limits, runner: runner)
                if let earlier = memory.lookup(key), let run = try? RunLoader.load(runDirectory: URL(fileURLWithPath: earlier.directory)) {
                    let from = URL(fileURLWithPath: earlier.directory)
                    progress("[\(label)] same bzImage and test module as \(from.lastPathComponent) (sha256 \(key.prefix(12))): its results stand, not booted again")
                    try FileManager.default.ensureDirectory(directory)
                    try "\(from.path)\n".write(to: directory.appendingPathComponent("reused-from"), atomically: true, encoding: .utf8)
                    result.run = run
                    result.ending = earlier.bootOutcome.flatMap { BootOutcome.Kind(name: $0) }
                    result.reusedFrom = from
                    result.seconds = Date().timeIntervalSince(start)
                    return result
                }
                stepKey = key
            }
            var invocation = GuestInvocation(
                job: .suite(checks: suite.checks), expect: suite.expect, limits: setup.limits, module: kernel.module?.path,
                kernel: Self.guestKernel(manifest))
            switch kernel.selftests {
            case .success(let dir)?: invocation.selftests = dir.path
            case .failure(let problem)?: invocation.selftestsProblem = problem.description
            case nil: break
            }
            // A crash costs one check: after one, boot again and go on with the checks left.
            var isolation = CrashIsolation(names: suite.expectedNames, stopOnCrash: suite.stopOnCrash, maxReboots: setup.limits.reboots)
            var bootDirectory = directory
            var lastOutcome: BootOutcome?
            var bootNumber = 1
            bootLoop: while true {
                progress("[\(label)] boot \(manifest.kernelRelease) on \(suite.machine.name) (\(suite.accel.rawValue)), run the suite"
                    + (bootNumber > 1 ? " (boot \(bootNumber): \(invocation.job.checkCount) check(s) left)" : ""))
                let outcome = try await boot(
                    kernel, machine: suite.machine, accel: suite.accel, job: .invocation(invocation), directory: bootDirectory,
                    timeout: setup.limits.suite, prelude: suite.prelude, kernelArguments: suite.panicOnWarn ? ["panic_on_warn=1"] : []
                ) { [progress] line in
                    let text = line.text.trimmingCharacters(in: .whitespacesAndNewlines)
                    if text.hasPrefix("ok ") || text.hasPrefix("not ok ") { progress("[\(label)] \(text)") }
                }
                if let lastOutcome, let up = outcome.bootSeconds {
                    progress(String(format: "[%@] boot %d: the suite went on %.1f s after boot %d ended (%.1f s of boot)", label, bootNumber,
                                    outcome.started.timeIntervalSince(lastOutcome.ended) + up, bootNumber - 1, up))
                }
                lastOutcome = outcome
                result.times.add("boot", outcome.bootSeconds ?? outcome.seconds)
                if let up = outcome.bootSeconds { result.times.add("suite", max(0, outcome.seconds - up)) }
                result.ending = outcome.kind
                if outcome.kind == .qemuFailed || outcome.kind == .bootTimeout, bootNumber == 1 {
                    let limits = ConsoleMonitor.Limits(boot: setup.limits.boot, command: setup.limits.suite)
                    result.problem = "\(outcome.kind.name): \(outcome.problem(limits: limits) ?? "the guest did not come up") (console: \(outcome.console.path))"
                    result.problemExit = LabExit(rawValue: outcome.exitCode)
                }
                let checks = bootNumber == 1 ? suite.expectedNames : invocation.job.checks
                var bootMetadata = metadata(manifest: manifest, outcome: outcome, machine: suite.machine)
                if suite.panicOnWarn { bootMetadata[RunMetadata.Keys.panicOnWarn] = "1" }
                let parsed = Self.results(of: outcome, expectedNames: checks, metadata: bootMetadata)
                let console = (try? String(contentsOf: outcome.console, encoding: .utf8)) ?? ""
                let next = isolation.take(CrashIsolation.Boot(
                    checks: checks, run: parsed, console: console, kind: outcome.kind,
                    directory: bootNumber == 1 ? "" : bootDirectory.lastPathComponent, suiteStarted: outcome.bootSeconds != nil))
                switch next {
                case .done:
                    break bootLoop
                case .stop(let reason):
                    if result.problem == nil { progress("[\(label)] \(reason): the checks left are NOT RUN") }
                    break bootLoop
                case .reboot(let left):
                    progress("[\(label)] \(isolation.casualties.last.map { "\($0) took the kernel down; " } ?? "")booting again for the \(left.count) check(s) left")
                    invocation.job = .suite(checks: left)
                    bootNumber += 1
                    bootDirectory = directory.appendingPathComponent("boot-\(bootNumber)")
                }
            }
            let decodeStart = Date()
            await Self.decodeReports(&isolation, decoder: traceDecoder(kernel))
            result.times.add("decode", Date().timeIntervalSince(decodeStart))
            let parsed = isolation.merged()
            try RunLoader.write(parsed, into: directory)
            result.run = parsed
            if let memory, let stepKey, result.problem == nil {
                memory.remember(StepMemory.Entry(key: stepKey, directory: directory.path, bootOutcome: lastOutcome?.kind.name ?? "exited"))
            }
        } catch {
            couldNotTest(error, result: &result, label: label)
        }
        result.seconds = Date().timeIntervalSince(start)
        if !result.times.phases.isEmpty { progress("[\(label)] time: \(result.times.summary)") }
        return result
    }

    /// A variant that could not be tested: the error's own exit code where it has one, and one line
    /// of it on the progress stream.
    func couldNotTest(_ error: any Error, result: inout VariantResult, label: String) {
        if let error = error as? any LabError {
            result.problem = error.description
            result.problemExit = error.exitCode
            progress("[\(label)] could not test: \(error.description.split(separator: "\n").first ?? "")")
        } else {
            result.problem = "\(error)"
            progress("[\(label)] could not test: \(error)")
        }
    }

    /// Decodes the reports of the run's crashes and splats (at most `limit`, each bounded by
    /// `LabLimits.decode`) and attaches them to their checks; says once when the kernel has no
    /// line info.
    public static func decodeReports(_ isolation: inout CrashIsolation, decoder: any TraceDecoder, limit: Int = 8) async {
        var noLineInfo = false
        var problems: [String] = []
        for report in isolation.reports.prefix(limit) where !report.lines.isEmpty {
            let decoded = await decoder.decode(report.lines)
            if let problem = decoded.problem { problems.append(problem) }
            if decoded.problem == nil, !decoded.hasLineInfo, !StackTrace.frames(decoded.lines).isEmpty { noLineInfo = true }
            isolation.attach(decoded.lines, to: report.check)
        }
        if noLineInfo { isolation.note(Self.noLineInfo) }
        if let first = problems.first { isolation.note("traces: \(first)") }
    }

    /// Said once per run whose kernel has no DEBUG_INFO.
    public static let noLineInfo = "no line info: this kernel has no DEBUG_INFO, so traces name functions and offsets only; build with --sanitize (DEBUG_INFO_REDUCED) for file:line"

    /// Step 7: the guest's KTAP from the results share, else what the console shows of it.
    public static func results(of outcome: BootOutcome, expectedNames: [String], metadata: RunMetadata) -> TestRun {
        let console = (try? String(contentsOf: outcome.console, encoding: .utf8)) ?? ""
        let options = KTAPParser.Options(
            timedOut: outcome.kind == .commandTimeout, consoleLog: console, expectedNames: expectedNames, metadata: metadata)
        let guestKTAP = outcome.run.guest.appendingPathComponent("results.ktap")
        if let text = try? String(contentsOf: guestKTAP, encoding: .utf8), !text.isEmpty {
            return KTAPParser.parse(text, options: options)
        }
        return KTAPParser.parse(console, options: options)
    }

    func metadata(manifest: BuildManifest, outcome: BootOutcome, machine: MachineDefinition) -> RunMetadata {
        var m: RunMetadata = [:]
        m[RunMetadata.Keys.kernel] = "\(manifest.kernelRelease) \(manifest.source) \(manifest.variant) (\(manifest.head.prefix(12)))"
        m[RunMetadata.Keys.seriesCommits] = manifest.patches.map { "\($0.commit?.prefix(12) ?? "present") \($0.subject)" }.joined(separator: "; ")
        m[RunMetadata.Keys.configHash] = manifest.configHash
        m[RunMetadata.Keys.machine] = machine.name
        m[RunMetadata.Keys.accel] = "\(outcome.accel) (\(outcome.accelNote))"
        m[RunMetadata.Keys.qemuCommandLine] = (try? String(contentsOf: outcome.run.qemuCommandLine, encoding: .utf8))?
            .split(separator: "\n").last.map(String.init) ?? ""
        m[RunMetadata.Keys.p2plabVersion] = ProjectPaths.version
        m["boot_outcome"] = outcome.kind.name
        m["bzImage"] = manifest.bzImage
        m["branch"] = manifest.branch
        m["head"] = manifest.head
        return m
    }
}
