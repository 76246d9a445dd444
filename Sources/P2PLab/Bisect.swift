import Catalog
import ArgumentParser
import Foundation
import KTAP
import KernelTree
import LabPipeline
import LabSupport

/// What one bisect step says about a kernel.
enum StepVerdict: String, Sendable {
    case good, bad, skip

    /// good: every chosen check passed; bad: one failed, or the kernel crashed or hung; skip: the
    /// kernel could not be built or booted, or every chosen check was skipped.
    static func of(_ result: VariantResult, checks: [String]) -> (StepVerdict, String) {
        if let problem = result.problem { return (.skip, "could not test: \(problem)") }
        guard let run = result.run else { return (.skip, "no results") }
        let chosen = run.leaves.map(\.test).filter { test in checks.isEmpty || checks.contains { globMatches($0, test.name) } }
        if let broken = chosen.first(where: { $0.status.isFailure }) {
            let why = [broken.errno, broken.observed].compactMap { $0 }.joined(separator: ", ")
            return (.bad, "\(broken.name) \(broken.status.label)" + (why.isEmpty ? "" : " (\(why))"))
        }
        if run.crashed || run.ending == .panic || run.ending == .timedOut {
            return (.bad, "the kernel \(run.ending == .timedOut ? "hung" : "crashed") (\(run.verdictLine))")
        }
        if chosen.isEmpty || chosen.allSatisfy({ $0.status == .skip }) { return (.skip, "the chosen checks did not run") }
        return (.good, "\(chosen.count) check(s) passed")
    }

    /// The exit code when an endpoint is not what it should be: the cause's own code when it
    /// could not be tested (a bad series: 12, a failed build: 15, …), else 2 (the endpoints given
    /// are wrong).
    static func endpointExit(_ verdict: StepVerdict, _ result: VariantResult) -> Int32 {
        verdict == .skip ? result.exitCode : LabExit.usage.rawValue
    }

    /// What `git bisect run` reads from a step: 0 good, 1 bad, 125 skip, and 128 (abort the
    /// bisection) when the cause is the same for every commit (a missing tool, a bad --series,
    /// a full disk): marking commits skipped or bad for it would only mislead.
    static func gitBisectRunExit(_ verdict: StepVerdict, _ result: VariantResult) -> Int32 {
        switch verdict {
        case .good: return 0
        case .bad: return 1
        case .skip:
            let everyCommit: Set<LabExit> = [.usage, .missingDependency, .notRoot, .badSeries, .noSpace, .dirtyTree]
            if let cause = result.problemExit, everyCommit.contains(cause) { return 128 }
            return LabExit.couldNotTest.rawValue
        }
    }
}

extension Lab {
    /// Runs one bisect step, retrying a variant that could not be tested up to `retries` times
    /// (a flaky boot must not decide a bisection); each attempt gets its own directory.
    /// A kernel and module identical to an earlier step's (in `memory`) take that step's verdict.
    func bisectStep(_ selection: PatchSelection, directory: URL, retries: Int, checks: [String], memory: StepMemory? = nil) async -> (StepVerdict, String, VariantResult) {
        var attempt = 0
        while true {
            let dir = attempt == 0 ? directory : directory.deletingLastPathComponent()
                .appendingPathComponent(directory.lastPathComponent + "-retry-\(attempt)")
            let result = await runVariant(selection, directory: dir, reproduce: Array(CommandLine.arguments.dropFirst()), memory: memory)
            var (verdict, why) = StepVerdict.of(result, checks: checks)
            if let from = result.reusedFrom { why += " (reused: same bzImage and test module as \(from.lastPathComponent))" }
            if verdict != .skip || attempt >= retries { return (verdict, why, result) }
            attempt += 1
        }
    }
}

extension P2PLabCommand {
    /// Find the patch (or commit) that breaks a check.
    struct Bisect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "bisect",
            abstract: "Find the first patch of a series (--series) or commit of a tree (--tree) that breaks a check.",
            discussion: """
                Each step builds (incrementally), boots and runs the chosen checks. A failed check, a \
                crash or a hang is bad; a build or infrastructure failure is skipped (exit 125 to git \
                bisect run). The endpoints are checked first: good must pass, bad must fail.
                  p2plab bisect --series --good-upto 3 --check 'pin.*'
                  p2plab bisect --tree ~/src/linux --good v6.12 --bad HEAD --check regmr.p2pmem
                """)

        @OptionGroup var build: BuildOptions
        @OptionGroup var lab: LabOptions

        @Flag(name: .customLong("in-series"), help: "Bisect over the patches of the series (prefixes of it).")
        var inSeries = false

        @Option(help: "With --in-series: a prefix length where the checks pass (default 0, the baseline).")
        var goodUpto: Int = 0

        @Option(help: "With --in-series: a prefix length where they fail (default: the whole series).")
        var badUpto: Int?

        @Option(help: "With --tree: a commit where the checks pass.")
        var good: String?

        @Option(help: "With --tree: a commit where they fail.")
        var bad: String?

        @Option(help: "Retries of a step that could not test before it is skipped.")
        var retries: Int = 1

        func validate() throws {
            if inSeries == (build.tree != nil && good != nil) {
                throw ValidationError("say what to bisect: --in-series, or --tree DIR --good REV --bad REV")
            }
            if !inSeries && (good == nil || bad == nil) { throw ValidationError("--tree bisection needs --good and --bad") }
            if lab.filters.isEmpty { throw ValidationError("name the check(s) to bisect on with --check NAME (globs allowed)") }
        }

        func run() async throws {
            if inSeries { try await bisectSeries() } else { try await bisectTree() }
        }

        func log(_ line: String, to url: URL) {
            progressLine("bisect: " + line)
            if let handle = try? FileHandle(forWritingTo: url) {
                handle.seekToEndOfFile()
                handle.write(Data((line + "\n").utf8))
                try? handle.close()
            } else {
                try? (line + "\n").write(to: url, atomically: true, encoding: .utf8)
            }
        }

        /// Runs one step, retrying what could not be tested.
        func step(_ session: Lab, _ build: BuildOptions, selection: PatchSelection, directory: URL, logFile: URL) async throws -> (StepVerdict, String, VariantResult) {
            let (verdict, why, result) = await (try Lab(build: build, lab: session.lab))
                .bisectStep(selection, directory: directory, retries: retries, checks: lab.checks,
                            memory: StepMemory(directory: directory.deletingLastPathComponent()))
            log(String(format: "%@: %@ — %@ (%.0f s)", directory.lastPathComponent, verdict.rawValue, why, result.seconds), to: logFile)
            return (verdict, why, result)
        }

        func bisectSeries() async throws {
            let root = try ProjectPaths.requireRoot()
            let series = try PatchSeries.load(from: build.seriesURL(root: root))
            let total = series.patches.count
            var goodN = goodUpto, badN = badUpto ?? total
            guard goodN >= 0, badN <= total, goodN < badN else {
                throw ValidationError("need 0 ≤ --good-upto < --bad-upto ≤ \(total)")
            }
            let session = try Lab(build: build, lab: lab)
            let dir = try session.sessionDirectory(kind: "bisect")
            let logFile = dir.appendingPathComponent("bisect.log")
            log("series \(series.origin): \(total) patches; checks \(lab.checks.joined(separator: " ")); good ≤ \(goodN), bad ≤ \(badN)", to: logFile)
            let (gv, gwhy, goodResult) = try await step(session, build, selection: PatchSelection(upto: goodN), directory: dir.appendingPathComponent("upto-\(goodN)"), logFile: logFile)
            guard gv == .good else {
                log("the good end (first \(goodN) patches) does not pass: \(gwhy); pass --good-upto with a prefix where the checks pass", to: logFile)
                throw ExitCode(StepVerdict.endpointExit(gv, goodResult))
            }
            var (bv, bwhy, badResult) = try await step(session, build, selection: PatchSelection(upto: badN), directory: dir.appendingPathComponent("upto-\(badN)"), logFile: logFile)
            guard bv == .bad else {
                log("the bad end (first \(badN) patches) does not fail: \(bwhy); nothing to bisect", to: logFile)
                throw ExitCode(StepVerdict.endpointExit(bv, badResult))
            }
            var skipped: Set<Int> = []
            var steps = 2
            while badN - goodN > 1 {
                let candidates = (goodN + 1..<badN).filter { !skipped.contains($0) }
                guard !candidates.isEmpty else { break }
                let mid = candidates.min { abs($0 - (goodN + badN) / 2) < abs($1 - (goodN + badN) / 2) }!
                let (v, why, result) = try await step(session, build, selection: PatchSelection(upto: mid), directory: dir.appendingPathComponent("upto-\(mid)"), logFile: logFile)
                steps += 1
                switch v {
                case .good: goodN = mid
                case .bad: badN = mid; bwhy = why; badResult = result
                case .skip: skipped.insert(mid)
                }
            }
            if badN - goodN > 1 {
                log("could not narrow it down: patches \(goodN + 1)…\(badN) could not be tested", to: logFile)
                throw ExitCode(LabExit.couldNotTest.rawValue)
            }
            let culprit = series.patches[badN - 1]
            log("first bad patch: \(culprit.index)/\(total) \(culprit.name) — \(culprit.subject) (\(culprit.author))", to: logFile)
            log("it breaks: \(bwhy)", to: logFile)
            if let test = badResult.run?.leaves.map(\.test).first(where: { $0.status.isFailure }) {
                for line in test.diagnostics.prefix(12) { log("  # \(line)", to: logFile) }
            }
            log("\(steps) steps; log: \(logFile.path)", to: logFile)
            print("first bad patch: \(culprit.index) \(culprit.subject)")
        }

        func bisectTree() async throws {
            guard let tree = build.tree, let good, let bad else { throw ValidationError("--tree bisection needs --tree, --good and --bad") }
            let runner = build.runner
            let session = try Lab(build: build, lab: lab)
            let dir = try session.sessionDirectory(kind: "bisect")
            let logFile = dir.appendingPathComponent("bisect.log")
            // A worktree of the user's tree that p2plab owns: git bisect moves its HEAD, never the user's.
            let top = try await runner.checked(Command(["git", "-C", tree, "rev-parse", "--show-toplevel"])).standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
            // Both ends must be kernel commits of this tree: say so now, naming the user's tree, not
            // after a worktree and an endpoint build.
            for (rev, option) in [(good, "--good"), (bad, "--bad")] {
                _ = try await verifyKernelCommit(rev, in: top, option: option, runner: runner)
            }
            let name = "bisect-" + fnv1a64Hex(top).prefix(10)
            let worktree = session.cache.worktrees.appendingPathComponent(name)
            // One bisection of a tree at a time: its worktree holds git bisect's state and HEAD, so a
            // second run would reset the first one's bisection under it. The second waits.
            let held = try await CacheLock.acquire(name, in: session.cache, timeout: session.pipeline.setup.limits.cacheLock) { _ in
                progressLine("bisect: another p2plab bisect of \(top) is running in \(worktree.path); waiting for it to finish")
            }
            defer { held.release() }
            if FileManager.default.fileExists(atPath: worktree.path),
               !(try await runner.capture(Command(["git", "-C", worktree.path, "rev-parse", "--git-dir"])).succeeded) {
                // Its repository was deleted or re-cloned: make the worktree anew.
                try? FileManager.default.removeItem(at: worktree)
                _ = try? await runner.capture(Command(["git", "-C", top, "worktree", "prune"]))
            }
            if !FileManager.default.fileExists(atPath: worktree.appendingPathComponent(".git").path) {
                try FileManager.default.ensureDirectory(session.cache.worktrees)
                try await runner.checked(Command(["git", "-C", top, "worktree", "add", "--detach", worktree.path, bad]), timeout: 900)
            }
            let git = { (args: [String]) in Command(["git", "-C", worktree.path] + args) }
            _ = try? await runner.capture(git(["bisect", "reset"]))
            log("tree \(top): good \(good), bad \(bad); checks \(lab.checks.joined(separator: " ")); worktree \(worktree.path)", to: logFile)
            // The tree is tested as it is at each commit; a series is applied on top only when asked for.
            let selection = build.series == nil ? PatchSelection.baseline : build.selection
            for (rev, want) in [(good, StepVerdict.good), (bad, StepVerdict.bad)] {
                var endpoint = build
                endpoint.tree = worktree.path
                endpoint.base = rev
                let (v, why, result) = try await step(session, endpoint, selection: selection, directory: dir.appendingPathComponent("endpoint-\(want.rawValue)"), logFile: logFile)
                guard v == want else {
                    log("\(rev) should be \(want.rawValue) but is \(v.rawValue): \(why)", to: logFile)
                    throw ExitCode(StepVerdict.endpointExit(v, result))
                }
            }
            try await runner.checked(git(["bisect", "start", bad, good]))
            let binary = ProjectPaths.executable.path
            var stepArgs = [binary, "bisect-step", "--tree", worktree.path, "--base", "HEAD", "--output", dir.appendingPathComponent("steps").path,
                            "--retries", String(retries), "--accel", lab.accel.rawValue, "--machine", lab.machine,
                            "--timeout", String(lab.timeout), "--boot-timeout", String(lab.bootTimeout), "--check-timeout", String(lab.checkTimeout)]
            for f in lab.filters { stepArgs += ["--check", f] }
            if let s = build.series { stepArgs += ["--series", s] }
            if selection == .baseline { stepArgs += ["--baseline"] }
            if let c = build.cache { stepArgs += ["--cache", c] }
            if lab.stopOnCrash { stepArgs += ["--stop-on-crash"] }
            if lab.panicOnWarn { stepArgs += ["--panic-on-warn"] }
            if let n = lab.maxReboots { stepArgs += ["--max-reboots", String(n)] }
            let result = try await runner.stream(git(["bisect", "run"] + stepArgs), logFile: logFile, timeout: session.pipeline.setup.limits.bisect) { line in
                if line.contains("is the first bad commit") || line.hasPrefix("bisect: ") { progressLine(line) }
            }
            let bisectLog = try await runner.capture(git(["bisect", "log"]))
            log(bisectLog.standardOutput, to: logFile)
            let text = (try? String(contentsOf: logFile, encoding: .utf8)) ?? ""
            _ = try? await runner.capture(git(["bisect", "reset"]))
            guard result.succeeded, let line = text.split(separator: "\n").first(where: { $0.contains("is the first bad commit") }) else {
                log("git bisect run did not name a commit; see \(logFile.path)", to: logFile)
                throw ExitCode(LabExit.couldNotTest.rawValue)
            }
            print("first bad commit: \(line.split(separator: " ").first ?? "")")
            print("log: \(logFile.path)")
        }
    }

    /// One `git bisect run` step: test the worktree's HEAD and answer 0 good, 1 bad, 125 skip.
    struct BisectStep: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "bisect-step", shouldDisplay: false)

        @OptionGroup var build: BuildOptions
        @OptionGroup var lab: LabOptions

        @Option var retries: Int = 1

        func run() async throws {
            // git bisect run exports GIT_DIR; every git p2plab runs must address its own checkout.
            clearGitRepositoryEnvironment()
            // Anything thrown here is the same for every commit (git bisect run reads 1–127 as bad).
            let session: Lab
            do {
                session = try Lab(build: build, lab: lab)
            } catch {
                FileHandle.standardError.write(Data("p2plab bisect-step: \(error); stopping the bisection\n".utf8))
                throw ExitCode(128)
            }
            let head = (try? await Runner().checked(Command(["git", "-C", build.tree ?? ".", "rev-parse", "--short=12", "HEAD"])).standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)) ?? "HEAD"
            let base = URL(fileURLWithPath: lab.output ?? session.cache.runs.path)
            let (verdict, why, result) = await session.bisectStep(build.selection, directory: base.appendingPathComponent(head), retries: retries,
                                                                  checks: lab.checks, memory: StepMemory(directory: base))
            let exit = StepVerdict.gitBisectRunExit(verdict, result)
            print("bisect: \(head) \(exit == 128 ? "abort" : verdict.rawValue): \(why)")
            if exit != 0 { throw ExitCode(exit) }
        }
    }
}
