import ArgumentParser
import Catalog
import Foundation
import KTAP
import KernelTree
import LabPipeline
import LabSupport

extension P2PLabCommand {
    /// One command from nothing to a verdict.
    struct Test: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "test",
            abstract: "Build (cached), boot, load the module, run the suite, and print a verdict.",
            discussion: """
                Exit status: 0 every check passed, 1 a check failed, 7 a check crashed or hung the kernel \
                (the lab boots again and goes on with the next check; --stop-on-crash stops there), 2 a usage \
                error; when the kernel could not be tested, the cause's own code (3 a missing tool, 12 a \
                bad series, 13 a patch that does not apply, 15 a failed build, 121 a boot timeout, …) or \
                125 (an infrastructure failure: what git bisect run calls skip). --compare runs the baseline and the series side by side; --ablate adds \
                each leave-one-out variant and checks the patch × check matrix against the expectations.

                With --sanitize (or --torture SECONDS), the suite is followed by a torture of the same kernel: \
                one more boot, 4 workers for 30 s by default (--torture sets it, at most 600 s; the guest's \
                torture command is stopped after SECONDS + 240 s), its results in the run directory's torture/. \
                One verdict covers both, and the exit status is the worse of the two (a kernel that could not \
                be tested, then 7, then 1, then 4). --torture 0 runs the suite only.
                """)

        @OptionGroup var build: BuildOptions
        @OptionGroup var lab: LabOptions

        @Flag(help: "Run the baseline and the full series side by side.")
        var compare = false

        @Flag(help: "Also run the series without each patch in turn: a patch × check matrix.")
        var ablate = false

        @Option(help: ArgumentHelp(
            "Run several bundled versions of the series, one after the other in the same object directory: v2,v3,v4,v5 or all.",
            valueName: "VERSIONS"))
        var versions: String?

        @Option(help: ArgumentHelp("Results format on stdout.", valueName: "FORMAT"))
        var format: String = "table"

        @Option(help: ArgumentHelp("Run the suite N times, each on a fresh boot; a check whose verdict changes between runs is FLAKY and fails the run.", valueName: "N"))
        var `repeat`: Int = 1

        @Option(help: ArgumentHelp(
            "After the suite, boot the same kernel again for a torture of \(SuiteAndTorture.workers) workers for SECONDS (default \(Int(SuiteAndTorture.sanitizeDefault)) with --sanitize, else 0: none; at most \(Int(SuiteAndTorture.longest))); one verdict covers both.",
            valueName: "SECONDS"))
        var torture: Double?

        @Option(help: ArgumentHelp("The torture's seed (default: a new one, printed and kept in reproduce.sh).", valueName: "N"))
        var tortureSeed: UInt64?

        /// Seconds of torture after the suite (0: none).
        var tortureSeconds: Double { torture ?? (build.sanitize.isEmpty ? 0 : SuiteAndTorture.sanitizeDefault) }

        /// Whether this invocation runs one variant once (the only mode that adds the torture).
        var singleVariant: Bool { !compare && !ablate && versions == nil && `repeat` == 1 }

        func validate() throws {
            if (compare || ablate) && (build.upto != nil || build.baseline || !build.without.isEmpty) {
                throw ValidationError("--compare and --ablate choose the variants themselves; drop --upto/--baseline/--without")
            }
            if versions != nil {
                if compare || ablate {
                    throw ValidationError("--versions runs each version whole; for --compare or --ablate of one version use --series v5")
                }
                if build.series != nil || build.upto != nil || build.baseline || !build.without.isEmpty {
                    throw ValidationError("--versions chooses the series itself; drop --series/--upto/--baseline/--without")
                }
                if let versions, versions.split(separator: ",").isEmpty {
                    throw ValidationError("--versions takes a list like v2,v5, or all")
                }
            }
            if `repeat` < 1 { throw ValidationError("--repeat must be at least 1, got \(`repeat`)") }
            if `repeat` > 1 && (compare || ablate || versions != nil) {
                throw ValidationError("--repeat runs one variant; drop --compare/--ablate/--versions")
            }
            if ReportFormat(rawValue: format) == nil {
                throw ValidationError("--format is one of \(ReportFormat.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            if let torture {
                if !(0...SuiteAndTorture.longest).contains(torture) {
                    throw ValidationError("--torture is 0–\(Int(SuiteAndTorture.longest)) seconds, not \(TorturePlan.number(torture)); p2plab torture runs longer ones")
                }
                if torture > 0 && !singleVariant {
                    throw ValidationError("--torture follows a single-variant test; drop --compare/--ablate/--versions/--repeat, or run p2plab torture for each variant")
                }
            }
            if tortureSeed != nil && tortureSeconds == 0 {
                throw ValidationError("--torture-seed goes with --torture SECONDS (or --sanitize, which runs a \(Int(SuiteAndTorture.sanitizeDefault)) s torture)")
            }
        }

        func run() async throws {
            let arguments = Array(CommandLine.arguments.dropFirst())
            let session = try Lab(build: build, lab: lab)
            if !build.sanitize.isEmpty && torture == nil && !singleVariant {
                progressLine("note: the torture that --sanitize adds follows a single-variant test only; p2plab torture --sanitize … tortures one variant")
            }
            if let versions {
                try await runVersions(versions, arguments: arguments)
            }
            if `repeat` > 1 {
                let directory = try session.sessionDirectory(kind: "repeat")
                var results: [VariantResult] = []
                for index in 1...`repeat` {
                    let result = await session.runVariant(
                        build.selection, directory: directory.appendingPathComponent("run-\(index)"), reproduce: arguments)
                    progressLine("[run \(index)/\(`repeat`)] \(result.run?.verdictLine ?? "could not test: \(result.problem ?? "?")") (\(Int(result.seconds)) s)")
                    results.append(result)
                }
                let stability = Stability(results: results)
                let text = stability.table()
                print(text)
                try? text.write(to: directory.appendingPathComponent("repeat.txt"), atomically: true, encoding: .utf8)
                let verdict = stability.verdict()
                print(verdict.line)
                print("runs: \(directory.path)")
                throw ExitCode(verdict.exit)
            }
            if !compare && !ablate {
                let directory = try session.sessionDirectory(kind: "test")
                let result = await session.runVariant(build.selection, directory: directory, reproduce: arguments)
                if tortureSeconds > 0 {
                    try await runWithTorture(result, session: session, directory: directory, arguments: arguments)
                }
                if let run = result.run, let rendered = ReportFormat(rawValue: format)?.render(run) {
                    print(rendered, terminator: rendered.hasSuffix("\n") ? "" : "\n")
                }
                printFooter(result)
                if let root = ProjectPaths.root(), let series = try? PatchSeries.load(from: build.seriesURL(root: root)) {
                    for line in Self.unknownNotes(IdentifiedSeries(series), selection: build.selection) { print(line) }
                }
                throw ExitCode(result.exitCode)
            }
            let directory = try session.sessionDirectory(kind: ablate ? "ablate" : "compare")
            var variants: [PatchSelection] = [.baseline, .full]
            let root = try ProjectPaths.requireRoot()
            let identity = IdentifiedSeries(try PatchSeries.load(from: build.seriesURL(root: root)))
            for line in identity.lines { progressLine("patch \(line)") }
            if ablate {
                variants = [.baseline] + (1...max(1, identity.patches.count)).map { PatchSelection(without: [$0]) } + [.full]
            }
            var results: [VariantResult] = []
            for selection in variants {
                let result = await session.runVariant(
                    selection, directory: session.runDirectory(label: selection.label, session: directory),
                    reproduce: arguments.filter { $0 != "--compare" && $0 != "--ablate" } + selectionArguments(selection))
                results.append(result)
                progressLine("[\(selection.label)] \(result.run?.verdictLine ?? "could not test: \(result.problem ?? "?")") (\(Int(result.seconds)) s)")
            }
            let matrix = Matrix(results: results, identity: identity)
            let text = ablate ? matrix.ablationTable() : matrix.comparisonTable()
            print(text)
            try? text.write(to: directory.appendingPathComponent(ablate ? "ablation.txt" : "compare.txt"), atomically: true, encoding: .utf8)
            try? matrix.json().write(to: directory.appendingPathComponent(ablate ? "ablation.json" : "compare.json"))
            let verdict = ablate ? matrix.ablationVerdict() : matrix.comparisonVerdict()
            print(verdict.line)
            print("runs: \(directory.path)")
            throw ExitCode(verdict.exit)
        }

        /// The suite's results (`result`), then a torture of the same kernel in `directory/torture/`,
        /// and one verdict for both (also in `verdict.txt`).
        func runWithTorture(_ result: VariantResult, session: Lab, directory: URL, arguments: [String]) async throws -> Never {
            let plan = TorturePlan(seed: tortureSeed ?? UInt64.random(in: 1...UInt64(Int64.max)), workers: SuiteAndTorture.workers,
                                   duration: tortureSeconds)
            try? session.writeReproduce(SuiteAndTorture.reproduceArguments(arguments, seed: plan.seed), into: directory)
            let table = ReportFormat(rawValue: format) == .table
            if let run = result.run, let rendered = ReportFormat(rawValue: format)?.render(run) {
                let text = table ? SuiteAndTorture.renamingVerdicts(rendered, as: "suite") : rendered
                print(text, terminator: text.hasSuffix("\n") ? "" : "\n")
            }
            var combined = SuiteAndTorture(suite: result, torture: nil, summary: nil, plan: plan)
            if result.couldNotTest {
                combined.skipped = "the kernel could not be tested"
            } else if lab.stopOnCrash && result.exitCode == LabExit.crashed.rawValue {
                combined.skipped = "--stop-on-crash: a check took the kernel down"
            } else {
                let (torture, summary, report) = await session.runTorture(
                    plan, directory: directory.appendingPathComponent("torture"),
                    variant: SuiteAndTorture.tortureVariantArguments(arguments))
                if table, let run = torture.run {
                    let text = SuiteAndTorture.renamingVerdicts(TableRenderer.render(run), as: "torture")
                    print(text, terminator: text.hasSuffix("\n") ? "" : "\n")
                }
                for line in report.lines() { print(SuiteAndTorture.renamingVerdicts(line, as: "torture")) }
                combined = SuiteAndTorture(suite: result, torture: torture, summary: summary, plan: plan)
            }
            print(combined.verdictLine)
            try? (combined.verdictLine + "\n").write(to: directory.appendingPathComponent("verdict.txt"), atomically: true, encoding: .utf8)
            printFooter(result)
            for line in Self.unknownNotes(IdentifiedSeries(session.series), selection: build.selection) { print(line) }
            throw ExitCode(combined.exitCode)
        }

        /// `--versions`: each version built (incrementally: they share the object directory), booted
        /// and checked against its own effects; one checks × versions table.
        func runVersions(_ list: String, arguments: [String]) async throws -> Never {
            let root = try ProjectPaths.requireRoot()
            let bundled = BundledSeries.versions(root: root)
            let names = list == "all" ? bundled : list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            if let unknown = names.first(where: { !bundled.contains($0) }) {
                FileHandle.standardError.write(Data("p2plab: --versions: \(unknown) is not a bundled version (bundled: \(bundled.joined(separator: ", ")))\n".utf8))
                throw ExitCode(LabExit.usage.rawValue)
            }
            let directory = try Lab(build: build, lab: lab).sessionDirectory(kind: "versions")
            let start = Date()
            var runs: [VersionRun] = []
            for name in names {
                var options = build
                options.series = name
                let identity = IdentifiedSeries(try PatchSeries.load(from: try options.seriesURL(root: root)))
                for line in identity.lines { progressLine("[\(name)] patch \(line)") }
                let result = await (try Lab(build: options, lab: lab)).runVariant(
                    .full, directory: directory.appendingPathComponent(name),
                    reproduce: dropping(["--versions"], from: arguments) + ["--series", name])
                progressLine("[\(name)] \(result.run?.verdictLine ?? "could not test: \(result.problem ?? "?")") (\(Int(result.seconds)) s)")
                runs.append(VersionRun(name: name, identity: identity, result: result))
            }
            let matrix = VersionMatrix(runs: runs)
            let text = matrix.table()
            print(text)
            let timings = matrix.timings() + [String(format: "all versions: %.0f s", Date().timeIntervalSince(start))]
            for line in timings { print(line) }
            try? (text + "\n" + timings.joined(separator: "\n") + "\n").write(
                to: directory.appendingPathComponent("versions.txt"), atomically: true, encoding: .utf8)
            try? matrix.json().write(to: directory.appendingPathComponent("versions.json"))
            let verdict = matrix.verdict()
            print(verdict.line)
            print("runs: \(directory.path)")
            throw ExitCode(verdict.exit)
        }

        /// A note per applied patch with no known effect, naming the checks whose verdict it could change.
        static func unknownNotes(_ identity: IdentifiedSeries, selection: PatchSelection) -> [String] {
            identity.kernel(selection).unknown.map { change in
                let checks = SuiteCatalog.checks.filter { !$0.affected(by: [change]).isEmpty }.map(\.name)
                return "note: \(change.patch) has no known effect (it changes \(change.files.joined(separator: ", "))); "
                    + (checks.isEmpty ? "no check depends on that code" : "not predicted: \(checks.joined(separator: ", "))")
            }
        }

        func selectionArguments(_ selection: PatchSelection) -> [String] {
            if selection.upto == 0 { return ["--baseline"] }
            if !selection.without.isEmpty { return ["--without", selection.without.map(String.init).joined(separator: ",")] }
            return []
        }

        func printFooter(_ result: VariantResult) {
            if let problem = result.problem {
                print("could not test: \(problem)")
            }
            if let nothing = result.nothingTested {
                print("not a pass: \(nothing); fix that and run again (exit 4)")
            }
            print("runs: \(result.runDirectory.path)")
        }
    }
}

/// Checks × variants: the comparison and ablation views of several runs.
struct Matrix {
    let results: [VariantResult]
    /// The series the variants are made of, each patch by its effect (nil: unknown, no predictions).
    let identity: IdentifiedSeries?

    /// Check names in suite order, then any others the runs reported.
    var names: [String] {
        var seen = SuiteCatalog.names
        for result in results {
            // Top-level tests only: a selftest's own cases are shown under their check in each run.
            for leaf in result.run?.leaves ?? [] where leaf.path.isEmpty && !seen.contains(leaf.test.name) { seen.append(leaf.test.name) }
        }
        return seen
    }

    /// `pass`, `FAIL EFAULT`, `skip`, `CRASHED`, or `-` (not run / could not test).
    func cell(_ result: VariantResult, _ name: String) -> String {
        if result.doesNotApply { return "does not apply" }
        guard result.problem == nil, let test = result.status(of: name) else { return result.problem != nil ? "n/a" : "-" }
        switch test.status {
        case .pass: return "pass"
        case .skip: return "skip"
        case .fail:
            let splat = test.splats.isEmpty ? "" : "+WARN"
            return "FAIL" + (test.errno.map { " \($0)" } ?? "") + splat
        default: return test.status.label
        }
    }

    func passed(_ result: VariantResult, _ name: String) -> Bool? {
        guard result.problem == nil, let test = result.status(of: name) else { return nil }
        if test.status == .skip { return nil }
        return test.status == .pass
    }

    func table(_ headers: [String], _ rows: [[String]]) -> String {
        ColumnTable(headers: headers, rows: rows).text
    }

    func comparisonTable() -> String {
        guard let base = results.first, let series = results.last else { return "" }
        let rows = names.map { name -> [String] in
            let b = cell(base, name), s = cell(series, name)
            let change = b == s ? "" : "\(b) → \(s)"
            return [name, b, s, change]
        }
        return table(["check", base.label, series.label, "the series changes"], rows)
    }

    func comparisonVerdict() -> (line: String, exit: Int32) {
        guard let base = results.first, let series = results.last else { return ("verdict: NO RESULTS", LabExit.couldNotTest.rawValue) }
        if let broken = [base, series].first(where: \.couldNotTest) {
            return ("verdict: COULD NOT TEST (\(broken.label): \(broken.problem ?? "no results"))", broken.exitCode)
        }
        let changed = names.filter { cell(base, $0) != cell(series, $0) }
        // "FAIL: 3 failed, 27 passed", not a whole "verdict: …" line inside this one.
        let seriesVerdict = series.run.map { "\($0.verdict.rawValue): \($0.counts.phrase)" } ?? "no results"
        // With panic_on_warn=1 a check whose operations make the series WARN is CRASHED by design:
        // the series passes when every other check passes and each crash is one the table predicts.
        let predictedCrashes = names.filter { series.status(of: $0)?.status == .crashed && agreement($0, series)?.agrees == true }
        if series.panicOnWarn, series.exitCode == LabExit.crashed.rawValue, !predictedCrashes.isEmpty,
           names.allSatisfy({ name in
               guard let test = series.status(of: name) else { return true }
               return test.status == .pass || test.status == .skip || predictedCrashes.contains(name)
           })
        {
            return ("verdict: PASS: the series passes every other check (\(series.run?.counts.phrase ?? "no results")) and crashes only where panic_on_warn predicts (\(predictedCrashes.joined(separator: ", "))); it changes \(changed.count): \(changed.joined(separator: ", "))", LabExit.success.rawValue)
        }
        if series.exitCode != 0 {
            return ("verdict: FAIL: the series does not pass (\(seriesVerdict)); the series changes \(changed.count) checks", LabExit.failed.rawValue)
        }
        if changed.isEmpty {
            return ("verdict: FAIL: the series passes but changes nothing against the baseline: the lab cannot tell them apart", LabExit.failed.rawValue)
        }
        return ("verdict: PASS: the series passes every check (\(series.run?.counts.phrase ?? "no results")); it changes \(changed.count): \(changed.joined(separator: ", "))", LabExit.success.rawValue)
    }

    /// What the expectation table predicts for `name` on `result`'s variant: nil when there is
    /// nothing to predict (a check the catalog does not know), `.notPredicted` when a patch of no
    /// known effect touches code the check depends on, `.crash` for a check that WARNs on a kernel
    /// booted with panic_on_warn=1.
    func prediction(_ name: String, _ result: VariantResult) -> Prediction? {
        guard let identity, let check = SuiteCatalog.check(named: name) else { return nil }
        return check.prediction(on: identity.kernel(result.selection), reference: identity.reference, panicOnWarn: result.panicOnWarn)
    }

    /// The prediction and whether the cell agrees with it (nil: skipped, not run, not predicted,
    /// or could not test).
    func agreement(_ name: String, _ result: VariantResult) -> (want: Prediction, agrees: Bool)? {
        guard result.problem == nil, let test = result.status(of: name), test.status != .skip, test.status != .notRun,
              let want = prediction(name, result), let agrees = want.agrees(withStatus: test.status.rawValue) else { return nil }
        return (want, agrees)
    }

    /// Cells no prediction covers because of a patch with no known effect, as `check on variant`.
    func unpredicted() -> [String] {
        names.flatMap { name in
            results.compactMap { result -> String? in
                guard result.status(of: name) != nil, case .notPredicted(let changes)? = prediction(name, result) else { return nil }
                return "\(name) on \(result.label): not predicted (\(changes.map(\.patch).joined(separator: "; ")))"
            }
        }
    }

    func ablationTable() -> String {
        let rows = names.map { name -> [String] in
            [name] + results.map { result in
                let c = cell(result, name)
                if result.problem == nil, case .notPredicted? = prediction(name, result) { return c + " (not predicted)" }
                guard let (want, agrees) = agreement(name, result), !agrees else { return c }
                return c + " (expected \(want))"
            }
        }
        return table(["check"] + results.map(\.label), rows)
    }

    /// Cells where what ran disagrees with what the expectation table predicts.
    func mismatches() -> [String] {
        names.flatMap { name in
            results.compactMap { result -> String? in
                guard let (want, agrees) = agreement(name, result), !agrees else { return nil }
                return "\(name) on \(result.label): expected \(want), got \(cell(result, name))"
            }
        }
    }

    func ablationVerdict() -> (line: String, exit: Int32) {
        // A leave-one-out whose other patches need the one left out (v5's kernfs patch is written on
        // top of its ->close patch) cannot be built: that says something about the series, not the lab.
        if let broken = results.first(where: { $0.couldNotTest && !($0.doesNotApply && $0.selection != .full) }) {
            return ("verdict: COULD NOT TEST (\(broken.label): \(broken.problem ?? "no results"))", broken.exitCode)
        }
        let wrong = mismatches()
        let unknown = unpredicted()
        let unapplied = results.filter(\.doesNotApply).map(\.label)
        let note = unapplied.isEmpty ? "" : "; \(unapplied.joined(separator: ", ")) \(unapplied.count == 1 ? "does" : "do") not apply (a later patch needs the one left out)"
        if wrong.isEmpty && unknown.isEmpty {
            return ("verdict: PASS: every variant behaves as the expectation table predicts (\(results.count - unapplied.count) variants × \(names.count) checks\(note))", LabExit.success.rawValue)
        }
        if wrong.isEmpty {
            let patches = Set((identity?.patches ?? []).filter { $0.unknown != nil }.map(\.subject)).sorted()
            return ("verdict: NOT PREDICTED: \(unknown.count) cell(s) depend on a patch with no known effect (\(patches.joined(separator: "; "))); the other cells match:\n  " + unknown.joined(separator: "\n  "), LabExit.failed.rawValue)
        }
        return ("verdict: FAIL: \(wrong.count) cell(s) disagree with the expectations:\n  " + wrong.joined(separator: "\n  "), LabExit.failed.rawValue)
    }

    func json() throws -> Data {
        struct Row: Encodable { var check: String; var cells: [String: String] }
        struct Doc: Encodable { var variants: [String]; var directories: [String]; var rows: [Row]; var mismatches: [String] }
        let doc = Doc(
            variants: results.map(\.label), directories: results.map(\.runDirectory.path),
            rows: names.map { name in Row(check: name, cells: Dictionary(uniqueKeysWithValues: results.map { ($0.label, cell($0, name)) })) },
            mismatches: mismatches())
        return try LabJSON.encode(doc)
    }
}

/// The same variant run several times: which checks kept their verdict.
struct Stability {
    let results: [VariantResult]

    var matrix: Matrix { Matrix(results: results, identity: nil) }

    /// Checks whose cell (pass, FAIL EFAULT, skip, …) differs between runs that produced results.
    func flaky() -> [String] {
        matrix.names.filter { name in
            Set(results.filter { $0.run != nil }.map { matrix.cell($0, name) }).count > 1
        }
    }

    func table() -> String {
        let flaky = Set(flaky())
        let rows = matrix.names.map { name -> [String] in
            let cells = results.map { matrix.cell($0, name) }
            return [name] + cells + [flaky.contains(name) ? "FLAKY" : (cells.first ?? "-")]
        }
        return matrix.table(["check"] + results.indices.map { "run \($0 + 1)" } + ["verdict"], rows)
    }

    func verdict() -> (line: String, exit: Int32) {
        if let broken = results.first(where: { $0.exitCode == LabExit.couldNotTest.rawValue }) {
            return ("verdict: COULD NOT TEST (\(broken.problem ?? "no results"))", LabExit.couldNotTest.rawValue)
        }
        let flaky = flaky()
        if !flaky.isEmpty {
            return ("verdict: FLAKY: \(flaky.count) check(s) changed their verdict between \(results.count) runs: \(flaky.joined(separator: ", "))", LabExit.failed.rawValue)
        }
        let worst = results.map(\.exitCode).max() ?? LabExit.success.rawValue
        let last = results.last?.run?.verdictLine ?? "no results"
        return ("\(last); the same in all \(results.count) runs", worst)
    }
}
