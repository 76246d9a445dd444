import Catalog
import Foundation
import KTAP
import KernelTree
import LabPipeline
import LabSupport

/// One version of the series as `test --versions` ran it.
struct VersionRun: Sendable {
    /// `v3`.
    var name: String
    var identity: IdentifiedSeries
    var result: VariantResult
}

/// Checks × versions: each version's cells checked against what its own effects predict.
struct VersionMatrix {
    let runs: [VersionRun]

    /// Check names in suite order, then any others the runs reported.
    var names: [String] {
        var seen = SuiteCatalog.names
        for run in runs {
            // Top-level tests only: a selftest's own cases stay under their check in each run.
            for leaf in run.result.run?.leaves ?? [] where leaf.path.isEmpty && !seen.contains(leaf.test.name) { seen.append(leaf.test.name) }
        }
        return seen
    }

    /// What the table predicts for `name` on `run`'s kernel (nil: a check the catalog does not know).
    func prediction(_ name: String, _ run: VersionRun) -> Prediction? {
        SuiteCatalog.check(named: name)?.prediction(
            on: run.identity.reference, reference: run.identity.reference, panicOnWarn: run.result.panicOnWarn)
    }

    /// `pass EINVAL+WARN`, `pass slow path`, `FAIL EFAULT`, `skip`, `CRASHED`, `n/a` (could not test).
    func cell(_ run: VersionRun, _ name: String) -> String {
        guard run.result.problem == nil else { return "n/a" }
        guard let test = run.result.status(of: name) else { return "-" }
        var parts: [String] = []
        switch test.status {
        case .pass: parts.append("pass")
        case .skip: return "skip"
        case .fail: parts.append("FAIL")
        default: return test.status.label
        }
        if let errno = test.errno {
            parts.append(errno)
        } else if let observed = test.observed, observed.hasSuffix("pinned by the slow path") {
            parts.append("slow path")
        } else if let observed = test.observed, name == "pin.fast_path", observed.hasSuffix("succeeds") {
            parts.append("gup-fast")
        }
        let expectedWarning = test.diagnostics.contains { $0.hasPrefix("expected WARNING from") }
        if expectedWarning || !test.splats.isEmpty {
            if parts.count == 1 { parts.append("mapped") }
            parts[parts.count - 1] += "+WARN"
        }
        if case .notPredicted? = prediction(name, run) { parts.append("(not predicted)") }
        return parts.joined(separator: " ")
    }

    /// The prediction and whether the cell agrees with it (nil: nothing to compare).
    func agreement(_ name: String, _ run: VersionRun) -> (want: Prediction, agrees: Bool)? {
        guard run.result.problem == nil, let test = run.result.status(of: name), test.status != .skip, test.status != .notRun,
              let want = prediction(name, run), let agrees = want.agrees(withStatus: test.status.rawValue) else { return nil }
        return (want, agrees)
    }

    /// Whether the check passed (nil: skipped, not run, or the version could not be tested).
    func passed(_ run: VersionRun, _ name: String) -> Bool? {
        guard run.result.problem == nil, let test = run.result.status(of: name), test.status != .skip else { return nil }
        return test.status == .pass
    }

    func table() -> String {
        let rows = names.map { name -> [String] in
            [name] + runs.map { run in
                let c = cell(run, name)
                guard let (want, agrees) = agreement(name, run), !agrees else { return c }
                return c + " (expected \(want))"
            }
        }
        return ColumnTable(headers: ["check"] + runs.map(\.name), rows: rows).text
    }

    /// Cells that disagree with the prediction, as `check on version: …`.
    func mismatches() -> [String] {
        names.flatMap { name in
            runs.compactMap { run -> String? in
                guard let (want, agrees) = agreement(name, run), !agrees else { return nil }
                return "\(name) on \(run.name): expected \(want), got \(cell(run, name))"
            }
        }
    }

    /// Cells with no prediction (a patch with no known effect touches the check's code).
    func unpredicted() -> [String] {
        names.flatMap { name in
            runs.compactMap { run -> String? in
                guard run.result.status(of: name) != nil, case .notPredicted(let changes)? = prediction(name, run) else { return nil }
                return "\(name) on \(run.name): not predicted (\(changes.map(\.patch).joined(separator: "; ")))"
            }
        }
    }

    /// One line per version: its build (incremental or cached) and its run.
    func timings() -> [String] {
        runs.map { run in
            let build: String
            if let manifest = run.result.manifest {
                if manifest.cacheHit {
                    // The cached build's own manifest keeps how long its (incremental) make took.
                    let original = URL(fileURLWithPath: manifest.bzImage).deletingLastPathComponent().appendingPathComponent("manifest.json")
                    let seconds = (try? JSONDecoder().decode(BuildManifest.self, from: Data(contentsOf: original)))?.buildSeconds
                    build = seconds.map { String(format: "kernel cached (its build took %.0f s)", $0) } ?? "kernel cached"
                } else {
                    build = String(format: "built in %.0f s", manifest.buildSeconds)
                }
            } else {
                build = "not built"
            }
            return String(format: "%@: %@, %.0f s in all (%@)", run.name, build, run.result.seconds,
                          run.result.run?.verdictLine ?? "could not test: \(run.result.problem ?? "no results")")
        }
    }

    func verdict() -> (line: String, exit: Int32) {
        if let broken = runs.first(where: \.result.couldNotTest) {
            return ("verdict: COULD NOT TEST (\(broken.name): \(broken.result.problem ?? "no results"))", broken.result.exitCode)
        }
        let wrong = mismatches()
        let unknown = unpredicted()
        let skipped = names.flatMap { name in runs.filter { $0.result.status(of: name)?.status == .skip }.map { "\(name) on \($0.name)" } }
        let cells = runs.count * names.count
        if wrong.isEmpty && unknown.isEmpty {
            let skips = skipped.isEmpty ? "" : "; \(skipped.count) skipped: \(skipped.joined(separator: ", "))"
            return ("verdict: PASS: every version behaves as its patches' effects predict (\(runs.count) versions × \(names.count) checks = \(cells) cells\(skips))", LabExit.success.rawValue)
        }
        var lines: [String] = []
        if !wrong.isEmpty { lines.append("verdict: FAIL: \(wrong.count) cell(s) disagree with the prediction:") }
        else { lines.append("verdict: NOT PREDICTED: \(unknown.count) cell(s) depend on a patch with no known effect:") }
        return ((lines + (wrong + unknown).map { "  " + $0 }).joined(separator: "\n"), LabExit.failed.rawValue)
    }

    func json() throws -> Data {
        struct Version: Encodable {
            var name: String; var directory: String; var effects: String; var buildSeconds: Double?; var cacheHit: Bool?
            var seconds: Double; var problem: String?; var cells: [String: String]
        }
        struct Doc: Encodable { var checks: [String]; var versions: [Version]; var mismatches: [String]; var unpredicted: [String] }
        let doc = Doc(
            checks: names,
            versions: runs.map { run in
                Version(
                    name: run.name, directory: run.result.runDirectory.path, effects: run.identity.reference.tokens,
                    buildSeconds: run.result.manifest?.buildSeconds, cacheHit: run.result.manifest?.cacheHit,
                    seconds: run.result.seconds, problem: run.result.problem,
                    cells: Dictionary(uniqueKeysWithValues: names.map { ($0, cell(run, $0)) }))
            },
            mismatches: mismatches(), unpredicted: unpredicted())
        return try LabJSON.encode(doc)
    }
}
