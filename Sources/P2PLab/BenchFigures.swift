import Catalog
import Foundation
import LabSupport

/// Turns what the guests measured into figures, each paired with its baseline.
enum KernelFigures {
    /// One kernel's guest run: its report, or why there is none.
    struct Side: Sendable {
        var label: String
        var report: GuestBenchReport?
        var problem: String?

        func measurement(_ key: String) -> (GuestMeasurement?, String?) {
            guard let report else { return (nil, problem ?? "the \(label) kernel was not measured") }
            guard let m = report.measurement(key) else { return (nil, "the \(label) guest did not measure \(key)") }
            if let refused = m.refused { return (m, "the \(label) kernel refused it (\(refused))") }
            if let problem = m.problem { return (m, problem) }
            return (m, nil)
        }
    }

    /// `value` (of `valueSide`) compared with `base` (of `baseSide`).
    static func pair(
        _ measurement: BenchMeasurement, _ title: String, value key: String, on valueSide: Side,
        comparedWith: String, base baseKey: String, on baseSide: Side
    ) -> Result<BenchFigure, BenchNotReported> {
        let (value, valueProblem) = valueSide.measurement(key)
        let (base, baseProblem) = baseSide.measurement(baseKey)
        return BenchFigure.make(
            measurement, title, unit: value?.unit ?? base?.unit ?? .pagesPerSecond, samples: value?.samples ?? [],
            problem: valueProblem, comparedWith: comparedWith, baselineSamples: base?.samples ?? [],
            baselineProblem: baseProblem, note: notes(value, valueSide, base, baseSide))
    }

    /// The value's note, and the baseline's when it is another kernel's and says something else.
    static func notes(_ value: GuestMeasurement?, _ valueSide: Side, _ base: GuestMeasurement?, _ baseSide: Side) -> String? {
        var parts: [String] = []
        if let note = value?.note { parts.append(valueSide.label == baseSide.label ? note : "\(valueSide.label): \(note)") }
        if valueSide.label != baseSide.label, let note = base?.note, note != value?.note { parts.append("\(baseSide.label): \(note)") }
        return parts.isEmpty ? nil : parts.joined(separator: "; ")
    }

    static func pages(_ n: Int) -> String { n == 1 ? "1 page" : "\(n) pages" }

    /// Pin figures per size: fast vs slow path and p2pmem vs anonymous on the series; short-term
    /// P2PDMA and anonymous long-term pins, series vs baseline. The baseline refuses long-term
    /// P2PDMA pins: that is stated, and what exists is compared instead.
    static func pins(baseline: Side, series: Side) -> [Result<BenchFigure, BenchNotReported>] {
        let m = BenchMeasurement.pinThroughput
        let longFast: PinFlags = [.longterm, .p2pdma, .write, .fast]
        let longSlow: PinFlags = [.longterm, .p2pdma, .write]
        let shortFast: PinFlags = [.p2pdma, .write, .fast]
        let anonFast: PinFlags = [.longterm, .write, .fast]
        var out: [Result<BenchFigure, BenchNotReported>] = []
        for n in BenchPlan.pinSizes {
            let key = { (memory: String, flags: PinFlags) in BenchPlan.pinKey(memory: memory, flags: flags.description, pages: n) }
            out.append(pair(m, "p2pmem LONGTERM|P2PDMA|WRITE pin, fast path, \(pages(n)), series",
                            value: key("p2pmem", longFast), on: series,
                            comparedWith: "the same pin through the slow path (pin_user_pages), series",
                            base: key("p2pmem", longSlow), on: series))
            out.append(pair(m, "p2pmem LONGTERM|P2PDMA|WRITE pin, fast path, \(pages(n)), series",
                            value: key("p2pmem", longFast), on: series,
                            comparedWith: "anonymous memory LONGTERM|WRITE, fast path, series",
                            base: key("anonymous", anonFast), on: series))
            let (refusedFast, _) = baseline.measurement(key("p2pmem", longFast))
            let (refusedSlow, _) = baseline.measurement(key("p2pmem", longSlow))
            if let fast = refusedFast?.refused {
                out.append(.failure(BenchNotReported(
                    measurement: m.rawValue, title: "p2pmem LONGTERM|P2PDMA|WRITE pin, \(pages(n)), series vs baseline",
                    reason: "the baseline refuses long-term P2PDMA pins (fast path \(fast), slow path \(refusedSlow?.refused ?? "not refused")); compared instead: short-term P2PDMA pins")))
            } else {
                out.append(pair(m, "p2pmem LONGTERM|P2PDMA|WRITE pin, fast path, \(pages(n)), series",
                                value: key("p2pmem", longFast), on: series,
                                comparedWith: "the same pin on the baseline", base: key("p2pmem", longFast), on: baseline))
            }
            out.append(pair(m, "p2pmem short-term P2PDMA|WRITE pin, fast path, \(pages(n)), series",
                            value: key("p2pmem", shortFast), on: series,
                            comparedWith: "the same pin on the baseline", base: key("p2pmem", shortFast), on: baseline))
            out.append(pair(m, "anonymous LONGTERM|WRITE pin, fast path, \(pages(n)), series",
                            value: key("anonymous", anonFast), on: series,
                            comparedWith: "the same pin on the baseline", base: key("anonymous", anonFast), on: baseline))
        }
        return out
    }

    /// `ibv_reg_mr` and `ibv_dereg_mr` latency per size, series vs baseline.
    static func registrations(baseline: Side, series: Side) -> [Result<BenchFigure, BenchNotReported>] {
        BenchPlan.regionSizes.flatMap { bytes -> [Result<BenchFigure, BenchNotReported>] in
            let size = bytes >= 1 << 20 ? "\(bytes >> 20) MiB" : "\(bytes >> 10) KiB"
            return [
                pair(.regMRLatency, "ibv_reg_mr, \(size) anonymous, series", value: BenchPlan.regKey(bytes), on: series,
                     comparedWith: "the same on the baseline", base: BenchPlan.regKey(bytes), on: baseline),
                pair(.regMRLatency, "ibv_dereg_mr, \(size) anonymous, series", value: BenchPlan.deregKey(bytes), on: series,
                     comparedWith: "the same on the baseline", base: BenchPlan.deregKey(bytes), on: baseline),
            ]
        }
    }

    /// rxe RDMA WRITE bandwidth, series vs baseline.
    static func writeBandwidth(baseline: Side, series: Side) -> [Result<BenchFigure, BenchNotReported>] {
        [pair(.rdmaWriteBandwidth, "ib_write_bw RDMA WRITE on rxe0, 64 KiB messages, series", value: BenchPlan.writeKey, on: series,
              comparedWith: "the same on the baseline", base: BenchPlan.writeKey, on: baseline)]
    }

    /// The figures of the chosen guest measurements.
    static func all(_ chosen: [BenchMeasurement], baseline: Side, series: Side) -> [Result<BenchFigure, BenchNotReported>] {
        var out: [Result<BenchFigure, BenchNotReported>] = []
        if chosen.contains(.pinThroughput) { out += pins(baseline: baseline, series: series) }
        if chosen.contains(.regMRLatency) { out += registrations(baseline: baseline, series: series) }
        if chosen.contains(.rdmaWriteBandwidth) { out += writeBandwidth(baseline: baseline, series: series) }
        return out
    }
}

/// Figures of the lab measurements (samples in seconds from the host clock).
enum LabFigures {
    /// Lean vs defconfig cold builds: the ratio, goal ≤ 0.25. `cpu` says the samples are the
    /// CPU seconds (user + system) of the build's processes rather than the wall clock: on a shared
    /// machine that is the figure other work does not inflate.
    static func coldBuild(lean: [Double], defconfig: [Double], problem: String?, defconfigProblem: String?, note: String?, cpu: Bool = false) -> Result<BenchFigure, BenchNotReported> {
        BenchFigure.make(
            .coldBuild, "cold build (config + bzImage + modules), lean config: tinyconfig + kvm_guest.config + p2plab.config"
                + (cpu ? ", CPU seconds (user + system)" : ", wall clock"),
            unit: .seconds, samples: lean, problem: problem,
            comparedWith: "defconfig + kvm_guest.config, same source, same make -j", baselineSamples: defconfig,
            baselineProblem: defconfigProblem, goal: BenchGoal(limit: 0.25, onRatio: true), note: note)
    }

    /// One direction of the series switch, goal ≤ 60 s.
    static func seriesSwitch(_ title: String, samples: [Double], problem: String?, note: String?) -> Result<BenchFigure, BenchNotReported> {
        BenchFigure.make(.seriesSwitch, title, unit: .seconds, samples: samples, problem: problem,
                         comparedWith: "the goal", goal: BenchGoal(limit: 60, onRatio: false), note: note)
    }

    /// A warm cycle under TCG against its goal.
    static func warmCycle(_ measurement: BenchMeasurement, accel: String, samples: [Double], problem: String?, note: String?) -> Result<BenchFigure, BenchNotReported> {
        let (what, limit) = measurement == .warmCycleTrue ? ("boot → true → poweroff", 2.5) : ("boot → full suite → poweroff", 6.0)
        return BenchFigure.make(measurement, "\(what), series kernel, \(accel)", unit: .seconds, samples: samples, problem: problem,
                                comparedWith: "the goal under TCG", goal: BenchGoal(limit: limit, onRatio: false), note: note)
    }

    /// A warm cycle under KVM compared with the same under TCG.
    static func warmCycleKVM(_ measurement: BenchMeasurement, kvm: [Double], kvmProblem: String?, tcg: [Double], tcgProblem: String?) -> Result<BenchFigure, BenchNotReported> {
        let what = measurement == .warmCycleTrue ? "boot → true → poweroff" : "boot → full suite → poweroff"
        return BenchFigure.make(measurement, "\(what), series kernel, KVM", unit: .seconds, samples: kvm, problem: kvmProblem,
                                comparedWith: "the same under TCG", baselineSamples: tcg, baselineProblem: tcgProblem)
    }

    /// A bisect step against its goal.
    static func bisectStep(samples: [Double], problem: String?, note: String?) -> Result<BenchFigure, BenchNotReported> {
        BenchFigure.make(.bisectStep, "bisect step: incremental rebuild + test module + boot + chosen checks, TCG",
                         unit: .seconds, samples: samples, problem: problem,
                         comparedWith: "the goal", goal: BenchGoal(limit: 15, onRatio: false), note: note)
    }
}
