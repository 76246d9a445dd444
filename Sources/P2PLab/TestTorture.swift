import Foundation
import KTAP
import LabPipeline
import LabSupport

/// `p2plab test --torture`: the suite, then a short torture of the same kernel, judged as one run.
struct SuiteAndTorture {
    /// Workers of the torture `test` runs after the suite.
    static let workers = 4
    /// Its default length with `--sanitize`, seconds.
    static let sanitizeDefault: Double = 30
    /// The longest torture `test --torture` takes, seconds (`p2plab torture` runs longer ones).
    static let longest: Double = 600

    let suite: VariantResult
    /// Nil when the torture did not run (the suite's kernel could not be tested, or --stop-on-crash stopped it).
    let torture: VariantResult?
    let summary: TortureSummary?
    let plan: TorturePlan
    /// Why the torture did not run, when it did not.
    var skipped: String?

    /// How bad an exit status is, for the one verdict of both: an infrastructure failure or a
    /// kernel that could not be tested outranks a crash, a crash a failure, a failure "nothing tested".
    static func rank(_ code: Int32) -> Int {
        switch code {
        case LabExit.success.rawValue: 0
        case LabExit.skipped.rawValue: 1
        case LabExit.failed.rawValue: 2
        case LabExit.crashed.rawValue: 3
        default: 4
        }
    }

    /// The run's exit status: the worse of the suite's and the torture's (the suite's on a tie).
    var exitCode: Int32 {
        guard let torture else { return suite.exitCode }
        return Self.rank(torture.exitCode) > Self.rank(suite.exitCode) ? torture.exitCode : suite.exitCode
    }

    /// `suite PASS (27 passed, 4 skipped)`, `could not test (…)`.
    static func part(_ result: VariantResult) -> String {
        if let problem = result.problem { return "could not test (\(problem.split(separator: "\n").first ?? ""))" }
        guard let run = result.run else { return "could not test (no results)" }
        return "\(run.verdict.rawValue) (\(run.counts.phrase))"
    }

    /// The one verdict line of the suite and the torture.
    var verdictLine: String {
        let word: String
        switch Self.rank(exitCode) {
        case 0: word = "PASS"
        case 1: word = "SKIPPED"
        case 2: word = "FAIL"
        case 3: word = "CRASHED"
        default: word = "COULD NOT TEST"
        }
        var line = "verdict: \(word): suite \(Self.part(suite))"
        if let torture {
            let rate = summary.map { String(format: ", %.1f ops/s", $0.operationsPerSecond) } ?? ""
            line += "; torture \(Self.part(torture)) (\(plan.workers) workers, \(TorturePlan.number(plan.duration)) s\(rate), seed \(plan.seed))"
        } else if let skipped {
            line += "; torture not run (\(skipped))"
        }
        return line
    }

    /// `text` with its `verdict: ` lines renamed to `NAME: `, so that the run prints one verdict.
    static func renamingVerdicts(_ text: String, as name: String) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            line.hasPrefix("verdict: ") ? "\(name): " + line.dropFirst("verdict: ".count) : String(line)
        }.joined(separator: "\n")
    }

    /// The build options of a `test` command line, as `p2plab torture` takes them: without the
    /// suite's own options (`--check`, `--repeat`, `--torture`, `--torture-seed`, `--format`).
    static func tortureVariantArguments(_ testArguments: [String]) -> [String] {
        TortureReproducer.variantArguments(
            dropping(["--check", "--repeat", "--torture", "--torture-seed", "--format"], words: ["test"], from: testArguments))
    }

    /// The `test` command line with the torture's seed fixed, for `reproduce.sh`.
    static func reproduceArguments(_ testArguments: [String], seed: UInt64) -> [String] {
        dropping(["--torture-seed"], from: testArguments) + ["--torture-seed", String(seed)]
    }
}
