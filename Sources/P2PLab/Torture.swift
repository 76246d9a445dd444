import ArgumentParser
import Foundation
import KTAP
import LabPipeline
import LabSupport

extension P2PLabCommand {
    /// Stress the series: a seeded schedule of pins, MRs, mappings and forks while the provider comes and goes.
    struct Torture: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "torture",
            abstract: "Pin, register, map and fork on p2pmem from K workers while the provider is unbound and rebound.",
            discussion: """
                Builds the kernel like `test` (every build option works), boots it, and runs K workers for \
                --duration seconds, each on its own schedule derived from --seed: ibv_reg_mr/ibv_dereg_mr of \
                p2pmem and anonymous memory, mmap/munmap of p2pmem, fast and slow long-term P2PDMA pins and \
                held umems through the test module, fork; meanwhile a loop unbinds and rebinds the provider's \
                driver. Every result must be one the expectation table allows for this kernel (and, while the \
                provider is away, ENOENT, ENODEV, EFAULT or a SIGBUS in a forked child). Then the invariants: \
                the provider was unbound and rebound, p2pmem `available` is back to its start, the module holds \
                nothing and the kernel's FOLL_PIN counters balance (both counted during the run), no splat, no \
                hung task. The same seed replays the same schedule; a failure prints the seed and the command \
                that replays it. Exit status: 0 every invariant held, 1 one failed (as a failing check), 4 the \
                torture could not run (no module, provider or RDMA device), otherwise as `test`.
                """)

        @OptionGroup var build: BuildOptions
        @OptionGroup var lab: LabOptions

        @Option(help: ArgumentHelp("Seconds the workers run.", valueName: "SECONDS"))
        var duration: Double = 30

        @Option(help: ArgumentHelp("Seed of the schedules (default: a new one, printed).", valueName: "N"))
        var seed: UInt64?

        @Option(help: ArgumentHelp("Worker threads in the guest.", valueName: "K"))
        var workers: Int = 4

        @Option(name: .customLong("ops"), help: ArgumentHelp(
            "Each worker stops after its first N operations: replays a prefix of the schedule.", valueName: "N"))
        var operations: Int?

        @Flag(help: "Keep the provider bound (no unbind/rebind loop).")
        var noUnbind = false

        @Option(help: ArgumentHelp(
            "After a failure, try up to N smaller runs (the failing worker's prefix alone, fewer workers, shorter) and print the smallest that still fails.",
            valueName: "N"))
        var shrink: Int = 0

        @Option(help: ArgumentHelp("Results format on stdout.", valueName: "FORMAT"))
        var format: String = "table"

        func validate() throws {
            if duration <= 0 || duration > 3600 { throw ValidationError("--duration is 1–3600 seconds, not \(duration)") }
            if workers < 1 || workers > 32 { throw ValidationError("--workers is 1–32, not \(workers)") }
            if let operations, operations < 1 { throw ValidationError("--ops must be at least 1, not \(operations)") }
            if shrink < 0 || shrink > 10 { throw ValidationError("--shrink is 0–10 runs, not \(shrink)") }
            if !lab.filters.isEmpty { throw ValidationError("--check chooses checks of the suite; the torture runs no checks") }
            if ReportFormat(rawValue: format) == nil {
                throw ValidationError("--format is one of \(ReportFormat.allCases.map(\.rawValue).joined(separator: ", "))")
            }
        }

        func run() async throws {
            let plan = TorturePlan(seed: seed ?? UInt64.random(in: 1...UInt64(Int64.max)), workers: workers, duration: duration,
                                   operations: operations, unbind: !noUnbind)
            let session = try Lab(build: build, lab: lab)
            let directory = try session.sessionDirectory(kind: "torture")
            let variant = TortureReproducer.variantArguments(Array(CommandLine.arguments.dropFirst()))
            let (result, summary, report) = await session.runTorture(plan, directory: directory, variant: variant)
            if let run = result.run, let rendered = ReportFormat(rawValue: format)?.render(run) {
                print(rendered, terminator: rendered.hasSuffix("\n") ? "" : "\n")
            }
            for line in report.lines() { print(line) }
            if shrink > 0, result.exitCode == LabExit.failed.rawValue {
                await shrinkRuns(from: plan, summary: summary, session: session, directory: directory, variant: variant)
            }
            print("runs: \(directory.path)")
            throw ExitCode(result.exitCode)
        }

        /// `--shrink`: smaller plans one after the other; each that still fails becomes the one to shrink further.
        func shrinkRuns(from plan: TorturePlan, summary: TortureSummary?, session: Lab, directory: URL, variant: [String]) async {
            var smallest = plan
            var failure = summary.flatMap { $0.failures.min { ($0.index, $0.worker) < ($1.index, $1.worker) } }
            var tried = 0
            while tried < shrink, let candidate = TortureShrink.next(after: smallest, failure: failure) {
                tried += 1
                let command = TortureReproducer.commands(plan: candidate, failure: nil, variantArguments: variant)[0]
                progressLine("shrink \(tried)/\(shrink): \(command)")
                let (result, summary) = await session.pipeline.torture(
                    session.recipe, build.selection, plan: candidate, machine: session.suite.machine, accel: session.suite.accel,
                    expect: IdentifiedSeries(session.series).kernel(build.selection).tokens, prelude: session.suite.prelude,
                    directory: directory.appendingPathComponent("shrink-\(tried)"), panicOnWarn: session.suite.panicOnWarn)
                let failed = result.exitCode == LabExit.failed.rawValue
                print("shrink \(tried): \(failed ? "still fails" : "does not fail (\(result.run?.verdictLine ?? result.problem ?? "no results"))"): \(command)")
                if failed {
                    smallest = candidate
                    failure = summary.flatMap { $0.failures.min { ($0.index, $0.worker) < ($1.index, $1.worker) } }
                } else {
                    // A smaller run that passes ends the search: what it left out mattered.
                    break
                }
            }
            if smallest != plan {
                print("shortest reproducer: \(TortureReproducer.commands(plan: smallest, failure: nil, variantArguments: variant)[0])")
            } else {
                print("shortest reproducer: the run itself (no smaller run failed)")
            }
        }
    }
}

extension Lab {
    /// One torture run of the selected variant into `directory`: the guest's KTAP and console there,
    /// with `reproduce.sh` (the `p2plab torture` command that replays it, `variant` being the build
    /// options), `variant.json` and `torture.txt` (the summary `TortureReport` prints).
    func runTorture(_ plan: TorturePlan, directory: URL, variant: [String]) async -> (VariantResult, TortureSummary?, TortureReport) {
        progressLine("torture: seed \(plan.seed), \(plan.workers) workers, \(TorturePlan.number(plan.duration)) s")
        // Unlike the suite, which asserts the whole series, every step is judged against the kernel
        // under test: the baseline's refusals are its right results here.
        let effects = IdentifiedSeries(series).kernel(build.selection)
        progressLine("torture: judged against \(effects)")
        let (result, summary) = await pipeline.torture(
            recipe, build.selection, plan: plan, machine: suite.machine, accel: suite.accel,
            expect: effects.tokens, prelude: suite.prelude, directory: directory, panicOnWarn: suite.panicOnWarn)
        try? writeReproduce(["torture"] + plan.arguments + variant, into: directory)
        writeRecord(result, into: directory)
        let report = TortureReport(plan: plan, result: result, summary: summary, variantArguments: variant)
        try? (report.lines().joined(separator: "\n") + "\n").write(
            to: directory.appendingPathComponent("torture.txt"), atomically: true, encoding: .utf8)
        return (result, summary, report)
    }
}

/// The host's summary of a torture run: counts per operation and result, operations per second,
/// the verdict with the seed, and on a failure the commands that replay it.
struct TortureReport {
    let plan: TorturePlan
    let result: VariantResult
    let summary: TortureSummary?
    let variantArguments: [String]

    func lines() -> [String] {
        var lines: [String] = []
        if let summary {
            lines.append(ColumnTable(headers: ["operation", "result", "count"], rows: summary.countRows).text)
            lines.append(String(format: "operations: %d in %.1f s, %.1f/s (%@); provider: %d unbind/rebind cycles",
                                summary.operations, summary.elapsed, summary.operationsPerSecond,
                                summary.operationsPerWorker.enumerated().map { "worker \($0.offset + 1): \($0.element)" }.joined(separator: ", "),
                                summary.providerCycles))
        }
        let seed = "seed \(plan.seed)"
        if let problem = result.problem {
            lines.append("verdict: COULD NOT TEST (\(problem)); \(seed)")
            return lines
        }
        guard let run = result.run else {
            lines.append("verdict: COULD NOT TEST (no results); \(seed)")
            return lines
        }
        if result.exitCode == LabExit.success.rawValue {
            lines.append("\(run.verdictLine); \(seed)")
            return lines
        }
        lines.append("\(run.verdictLine); \(seed)")
        let failure = summary?.failures.min { ($0.index, $0.worker) < ($1.index, $1.worker) }
        if let failure { lines.append("first failure: \(failure.line)") }
        for (name, problem) in (summary?.invariantProblems ?? [:]).sorted(by: { $0.key < $1.key }) {
            lines.append("invariant \(name): \(problem)")
        }
        let commands = TortureReproducer.commands(plan: plan, failure: failure, variantArguments: variantArguments)
        lines.append("reproduce: \(commands[0])")
        for other in commands.dropFirst() { lines.append("       or: \(other)") }
        return lines
    }
}
