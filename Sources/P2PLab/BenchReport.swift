import Foundation
import KTAP
import LabSupport

/// The measurements `p2plab bench` knows, in the order it runs and reports them.
enum BenchMeasurement: String, CaseIterable, Sendable {
    case pinThroughput = "kernel.pin_throughput"
    case regMRLatency = "kernel.regmr_latency"
    case rdmaWriteBandwidth = "kernel.rdma_write_bw"
    case warmCycleTrue = "lab.warm_cycle_true"
    case warmCycleSuite = "lab.warm_cycle_suite"
    case vngAnchor = "lab.vng_anchor"
    case seriesSwitch = "lab.series_switch"
    case bisectStep = "lab.bisect_step"
    case coldBuild = "lab.cold_build"

    /// One line for `--list`.
    var summary: String {
        switch self {
        case .pinThroughput: "long-term pin throughput of p2pmem (fast vs slow path) and anonymous memory, 1/64/16384 pages, series vs baseline (guest)"
        case .regMRLatency: "ibv_reg_mr/ibv_dereg_mr latency on rxe, anonymous memory 4 KiB…64 MiB, series vs baseline (guest)"
        case .rdmaWriteBandwidth: "rxe RDMA WRITE bandwidth with perftest ib_write_bw over loopback, series vs baseline (guest)"
        case .warmCycleTrue: "boot → true → poweroff on the cached series kernel (goal ≤ 2.5 s under TCG; KVM too where it works)"
        case .vngAnchor: "boot → true → poweroff of the same series bzImage with virtme-ng (vng --run) and with p2plab, alternating"
        case .warmCycleSuite: "boot → full suite → poweroff on the cached series kernel (goal ≤ 6 s under TCG; KVM too where it works)"
        case .seriesSwitch: "baseline ↔ series incremental rebuild in the bench's own checkout and object directory (goal ≤ 60 s)"
        case .bisectStep: "one in-series bisect step as `bisect --check 'pin.*'` takes it: rebuild + module + boot + the chosen checks (goal ≤ 15 s)"
        case .coldBuild: "cold build of the lean config vs defconfig + kvm_guest.config on the same source, wall clock and CPU seconds (ratio; goal ≤ 0.25)"
        }
    }

    /// The checks the bisect step runs: what README's in-series bisect chooses.
    static let bisectChecks = ["pin.*"]

    var isGuest: Bool { BenchGroup(rawValue: rawValue) != nil }

    /// The measurement of a guest group (the guest names the groups; the cases spell them the same).
    init(_ group: BenchGroup) { self.init(rawValue: group.rawValue)! }

    /// The chosen measurements: those matching `only` (all when empty), minus those matching `skip`.
    static func select(only: [String], skip: [String], matches: (String, String) -> Bool) -> [BenchMeasurement] {
        allCases.filter { m in
            (only.isEmpty || only.contains { matches($0, m.rawValue) }) && !skip.contains { matches($0, m.rawValue) }
        }
    }
}

/// A goal from the issue: the figure's median (or its ratio to the baseline) at most `limit`.
struct BenchGoal: Codable, Sendable, Equatable {
    var limit: Double
    /// The goal bounds the ratio figure ÷ baseline rather than the figure itself.
    var onRatio: Bool

    /// `ratio ≤ 0.6`, `≤ 60`: goals are round numbers, shown as the issue states them.
    var text: String {
        let bound = String(format: "%g", limit)
        return onRatio ? "ratio ≤ \(bound)" : "≤ \(bound)"
    }
}

/// One reported number: a measured value and what it is compared with.
struct BenchFigure: Codable, Sendable, Equatable {
    var measurement: String
    var title: String
    var unit: BenchUnit
    var value: BenchSummary
    /// What the value is compared with, in words (always present: no baseline, no figure).
    var comparedWith: String
    /// The compared value, when it is a measured one.
    var baseline: BenchSummary?
    var goal: BenchGoal?
    var note: String?
    /// The ratio's confidence interval and rank test, when both sides have two samples or more.
    var comparison: BenchComparison?

    /// Median of the figure ÷ median of its baseline.
    var ratio: Double? {
        guard let baseline, baseline.median != 0 else { return nil }
        return value.median / baseline.median
    }

    /// Whether the median meets the goal; nil without a goal (or a ratio goal without a baseline).
    var meetsGoal: Bool? {
        guard let goal else { return nil }
        if goal.onRatio { return ratio.map { $0 <= goal.limit } }
        return value.median <= goal.limit
    }

    /// A figure, or why there is none: its value or its baseline is missing. A figure needs a
    /// measured baseline or a goal on its own value; a ratio goal alone compares with nothing.
    static func make(
        _ measurement: BenchMeasurement, _ title: String, unit: BenchUnit, samples: [Double], problem: String? = nil,
        comparedWith: String, baselineSamples: [Double]? = nil, baselineProblem: String? = nil,
        goal: BenchGoal? = nil, note: String? = nil, paired: Bool = false
    ) -> Result<BenchFigure, BenchNotReported> {
        func missing(_ why: String) -> Result<BenchFigure, BenchNotReported> {
            .failure(BenchNotReported(measurement: measurement.rawValue, title: title, reason: why))
        }
        if let problem { return missing(problem) }
        guard let value = BenchSummary(samples) else { return missing("no valid samples") }
        var baseline: BenchSummary?
        if let baselineSamples {
            if let baselineProblem { return missing("its baseline (\(comparedWith)) was not measured: \(baselineProblem)") }
            guard let summary = BenchSummary(baselineSamples) else {
                return missing("its baseline (\(comparedWith)) has no valid samples")
            }
            baseline = summary
        } else if let baselineProblem {
            return missing("its baseline (\(comparedWith)) was not measured: \(baselineProblem)")
        }
        if baseline == nil && (goal == nil || goal!.onRatio) {
            return missing("nothing to compare it with")
        }
        return .success(BenchFigure(
            measurement: measurement.rawValue, title: title, unit: unit, value: value, comparedWith: comparedWith,
            baseline: baseline, goal: goal, note: note,
            comparison: baselineSamples.flatMap { paired ? BenchComparison.pairs(samples, $0) ?? BenchComparison.of(samples, $0) : BenchComparison.of(samples, $0) }))
    }
}

/// A figure that is not reported, and why (no baseline, refused by a kernel, not measurable here).
struct BenchNotReported: Error, Codable, Sendable, Equatable {
    var measurement: String
    var title: String
    var reason: String
}

/// The machine a run was made on.
struct BenchMachine: Codable, Sendable, Equatable {
    var host: String
    var cores: Int
    var cpu: String
    var memoryMiB: Int
    /// The accelerator the lab measurements used, and how it was chosen.
    var accel: String
    var accelNote: String
    var hostKernel: String
    /// /proc/loadavg at the start and the end: a busy machine makes slower, noisier figures.
    var loadAtStart: String
    var loadAtEnd: String
}

/// What was measured with what.
struct BenchVersions: Codable, Sendable, Equatable {
    /// The guest kernel: release, source, series head.
    var kernel: String
    var qemu: String
    var p2plab: String
    var compiler: String
    var perftest: String
}

/// One sample set as measured, kept in the results file next to the figures made from it.
struct BenchRaw: Codable, Sendable, Equatable {
    var measurement: String
    /// The kernel variant or configuration the samples belong to (`baseline`, `series`, `lean`, …).
    var variant: String
    var sample: GuestMeasurement
}

/// One `p2plab bench` run: what `bench/results/<date>-<host>.json` holds.
struct BenchRun: Codable, Sendable, Equatable {
    var schema = 1
    var date: String
    var command: String
    var repetitions: Int
    var machine: BenchMachine
    var versions: BenchVersions
    /// The measurements this run made (what `--only`/`--skip` chose).
    var measured: [String]
    var figures: [BenchFigure]
    var notReported: [BenchNotReported]
    var raw: [BenchRaw]

    /// `2026-11-21-2031-host.json`: sorts by date, one file per run.
    static func fileName(date: Date, host: String) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd-HHmm"
        let safeHost = String(host.map { $0.isLetter || $0.isNumber || $0 == "-" ? $0 : "_" })
        return "\(formatter.string(from: date))-\(safeHost).json"
    }

    func encoded() throws -> Data {
        try LabJSON.encode(self)
    }
}

/// Renders figures as tables and `BENCHMARKS.md` from every recorded run.
enum BenchRenderer {
    /// `4.27 s (4.1–4.5, n=5)`.
    static func summaryText(_ summary: BenchSummary, _ unit: BenchUnit) -> String {
        let spread = summary.count > 1
            ? " (\(BenchStatistics.significant(summary.min))–\(BenchStatistics.significant(summary.max)), n=\(summary.count))"
            : " (n=1)"
        return unit.format(summary.median) + spread
    }

    /// `0.52×`.
    static func ratioText(_ ratio: Double?) -> String {
        ratio.map { BenchStatistics.significant($0) + "×" } ?? ""
    }

    /// The ratio with its interval: `0.52× (0.41–0.60)`, or `no measurable difference (0.48×,
    /// 0.21–1.3)` when the interval contains 1; `paired, ` before the interval when it is the
    /// median of pair ratios.
    static func ratioText(_ figure: BenchFigure) -> String {
        guard let c = figure.comparison else { return ratioText(figure.ratio) }
        let interval = (c.paired == true ? "paired, " : "") + "\(BenchStatistics.significant(c.low))–\(BenchStatistics.significant(c.high))"
        if !c.measurable { return "no measurable difference (\(ratioText(c.ratio)), \(interval))" }
        return "\(ratioText(c.ratio)) (\(interval))"
    }

    static func goalText(_ figure: BenchFigure) -> String {
        guard let goal = figure.goal else { return "" }
        let bound = goal.onRatio ? goal.text : "\(goal.text) \(figure.unit.rawValue)"
        switch figure.meetsGoal {
        case true?: return "\(bound): met"
        case false?: return "\(bound): **missed**"
        case nil: return bound
        }
    }

    /// A Markdown table of figures: value, what it is compared with, ratio, goal.
    static func figureTable(_ figures: [BenchFigure], runLabel: (BenchFigure) -> String? = { _ in nil }) -> String {
        var lines = [
            "| figure | median (min–max, n) | compared with | its median (min–max, n) | ratio | goal |",
            "|---|---|---|---|---|---|",
        ]
        for figure in figures {
            var title = escape(figure.title)
            if let label = runLabel(figure) { title += " \(escape(label))" }
            if let note = figure.note { title += "<br>_\(escape(note))_" }
            let baseline = figure.baseline.map { summaryText($0, figure.unit) } ?? "—"
            lines.append("| \(title) | \(summaryText(figure.value, figure.unit)) | \(escape(figure.comparedWith)) | \(baseline) | \(ratioText(figure)) | \(goalText(figure)) |")
        }
        return lines.joined(separator: "\n")
    }

    static func escape(_ text: String) -> String { MarkdownRenderer.cell(text) }

    /// The newest run that made `measurement`, if any.
    static func newest(_ measurement: String, in runs: [(name: String, run: BenchRun)]) -> (name: String, run: BenchRun)? {
        runs.filter { $0.run.measured.contains(measurement) }.max { $0.run.date < $1.run.date }
    }

    /// `BENCHMARKS.md`: for every measurement, the figures of the newest run that made it, each
    /// tagged with that run; the runs with their machines and versions; what is not reported and why.
    static func markdown(runs: [(name: String, run: BenchRun)]) -> String {
        var used: [String] = []
        var sections: [String: [BenchFigure]] = [:]
        var missing: [BenchNotReported] = []
        var neverRun: [BenchMeasurement] = []
        for m in BenchMeasurement.allCases {
            guard let (name, run) = newest(m.rawValue, in: runs) else {
                neverRun.append(m)
                continue
            }
            if !used.contains(name) { used.append(name) }
            sections[m.rawValue] = run.figures.filter { $0.measurement == m.rawValue }
            missing += run.notReported.filter { $0.measurement == m.rawValue }
        }
        let runByName = Dictionary(runs.map { ($0.name, $0.run) }, uniquingKeysWith: { a, _ in a })
        func tag(_ measurement: String) -> String {
            guard let (name, _) = newest(measurement, in: runs), let index = used.firstIndex(of: name) else { return "" }
            return "[\(index + 1)]"
        }

        var out: [String] = [
            "# Benchmarks",
            "",
            "Generated by `p2plab bench` from `bench/results/*.json`; do not edit by hand (`p2plab bench --render`",
            "regenerates this page, `p2plab bench --only GLOB` refreshes some measurements). Each measurement shows",
            "the newest run that made it, tagged [n] (see Runs). Every figure is the median of its samples with",
            "the smallest and largest, and names what it is compared with; a figure without a baseline is not",
            "reported but listed at the end with the reason. Ratio = figure's median ÷ compared median, with its",
            "95 % bootstrap interval (both sides resampled 2000 times) when both sides have two samples or more;",
            "an interval that contains 1 is reported as no measurable difference. Where the two sides were measured",
            "alternately, one boot of each in turn, the ratio is the median of the pairs' ratios and the bootstrap",
            "resamples pairs (\"paired\"): a machine that gets faster or slower during the run then moves both sides",
            "of a pair alike instead of widening the interval. Each side boots first in every other pair: a boot",
            "right after one of the same checkout ran up to 13 % faster than one after the other checkout's, and",
            "with one side always first that went into the ratio as a difference.",
        ]
        let groups: [(String, String, [BenchMeasurement])] = [
            ("Lab speed", "What users of the lab wait for. Lab figures come from the host's clock.",
             BenchMeasurement.allCases.filter { !$0.isGuest }),
            ("Kernel behaviour", "Measured inside the guest (QEMU, see Runs for the accelerator), on the baseline and on the series. Pin times are the test module's `elapsed_ns` around the pin call; registration times are the host-side clock around `ibv_reg_mr`/`ibv_dereg_mr` in the guest.",
             BenchMeasurement.allCases.filter(\.isGuest)),
        ]
        for (title, intro, members) in groups {
            out += ["", "## \(title)", "", intro]
            for m in members {
                out += ["", "### `\(m.rawValue)` \(tag(m.rawValue))", "", m.summary + "."]
                guard let figures = sections[m.rawValue] else {
                    out += ["", "Not measured yet: `p2plab bench --only \(m.rawValue)`."]
                    continue
                }
                if figures.isEmpty {
                    out += ["", "No figure: see Not reported."]
                } else {
                    out += ["", figureTable(figures)]
                }
            }
        }
        out += ["", "## Runs", ""]
        out += ["| | date (UTC) | machine | accel | kernel | QEMU | p2plab | compiler | perftest | repeat | load at start → end |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for (index, name) in used.enumerated() {
            guard let run = runByName[name] else { continue }
            let m = run.machine, v = run.versions
            let machine = "\(m.host): \(m.cores) cores (\(m.cpu)), \(m.memoryMiB / 1024) GiB, host kernel \(m.hostKernel)"
            out.append("| [\(index + 1)] `\(name)` | \(run.date) | \(escape(machine)) | \(escape("\(m.accel): \(m.accelNote)")) | \(escape(v.kernel)) | \(escape(v.qemu)) | \(v.p2plab) | \(escape(v.compiler)) | \(escape(v.perftest)) | \(run.repetitions) | \(m.loadAtStart) → \(m.loadAtEnd) |")
        }
        if !missing.isEmpty || !neverRun.isEmpty {
            out += ["", "## Not reported", ""]
            for item in missing {
                out.append("- `\(item.measurement)` \(tag(item.measurement)) \(escape(item.title)): \(escape(item.reason))")
            }
            for m in neverRun {
                out.append("- `\(m.rawValue)`: not measured in any recorded run; the command is `p2plab bench --only \(m.rawValue)`.")
            }
        }
        return out.joined(separator: "\n") + "\n"
    }
}
