import Foundation

/// What a benchmark figure counts.
public enum BenchUnit: String, Codable, Sendable, CaseIterable {
    case seconds = "s"
    case microseconds = "µs"
    case pagesPerSecond = "pages/s"
    case gigabitsPerSecond = "Gb/s"

    /// A value with this unit to three significant figures, large counts grouped in thousands
    /// (`4.27 s`, `1 230 000 pages/s`), never in exponent notation.
    public func format(_ value: Double) -> String {
        "\(BenchStatistics.significant(value)) \(rawValue)"
    }
}

/// The smallest, middle and largest of a set of samples: what every figure reports.
public struct BenchSummary: Codable, Sendable, Equatable {
    public var count: Int
    public var min: Double
    public var median: Double
    public var max: Double

    public init(count: Int, min: Double, median: Double, max: Double) {
        self.count = count
        self.min = min
        self.median = median
        self.max = max
    }

    /// Summarises `samples`; nil for no samples (or any that is not finite: a broken sample must
    /// not hide inside a median).
    public init?(_ samples: [Double]) {
        guard !samples.isEmpty, samples.allSatisfy(\.isFinite) else { return nil }
        let sorted = samples.sorted()
        count = sorted.count
        min = sorted[0]
        max = sorted[sorted.count - 1]
        median = BenchStatistics.median(sorted: sorted)
    }
}

/// Pure statistics for the benchmarks.
public enum BenchStatistics {
    /// The median of already sorted values: the middle one, or the mean of the two middle ones.
    public static func median(sorted: [Double]) -> Double {
        precondition(!sorted.isEmpty, "the median of nothing")
        let mid = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
    }

    /// The median of `values` in any order.
    public static func median(_ values: [Double]) -> Double { median(sorted: values.sorted()) }

    /// `value` to three significant figures, without exponent notation; thousands are grouped
    /// with a thin space so a column of throughputs stays readable.
    public static func significant(_ value: Double, digits: Int = 3) -> String {
        guard value.isFinite else { return "\(value)" }
        if value == 0 { return "0" }
        let magnitude = Int(floor(log10(abs(value))))
        let decimals = Swift.max(0, digits - 1 - magnitude)
        let scale = pow(10, Double(digits - 1 - magnitude))
        let rounded = (value * scale).rounded() / scale
        let text = String(format: "%.\(decimals)f", rounded)
        return groupThousands(text)
    }

    /// Inserts a thin space every three digits of the integer part (`1234567.8` → `1 234 567.8`).
    static func groupThousands(_ text: String) -> String {
        let negative = text.hasPrefix("-")
        let body = negative ? String(text.dropFirst()) : text
        let parts = body.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        let integer = Array(parts[0])
        guard integer.count > 4 else { return text }
        var grouped = ""
        for (index, digit) in integer.enumerated() {
            if index > 0 && (integer.count - index) % 3 == 0 { grouped.append("\u{2009}") }
            grouped.append(digit)
        }
        let fraction = parts.count > 1 ? "." + parts[1] : ""
        return (negative ? "-" : "") + grouped + fraction
    }
}

/// How two sample sets compare beyond their medians: a confidence interval for the ratio of the
/// medians and a rank test, so a difference inside the noise is reported as none.
public struct BenchComparison: Codable, Sendable, Equatable {
    /// The ratio of the medians (value ÷ baseline).
    public var ratio: Double
    /// The bootstrap percentile interval of that ratio.
    public var low: Double
    public var high: Double
    /// The interval's confidence level (0.95).
    public var confidence: Double
    /// The two-sided Mann–Whitney U p-value (normal approximation, tie-corrected); for paired
    /// samples, the Wilcoxon signed-rank test's on the pairs' log ratios.
    public var pValue: Double
    /// The samples were taken in pairs (one of each side, alternately) and compared pair by pair:
    /// the ratio is the median of the pairs' ratios and the bootstrap resamples pairs. A drift of
    /// the machine's speed over the run then burdens both sides of a pair alike instead of
    /// widening the interval. nil (older records) and false: two independent sample sets.
    public var paired: Bool?

    public init(ratio: Double, low: Double, high: Double, confidence: Double, pValue: Double, paired: Bool? = nil) {
        self.ratio = ratio
        self.low = low
        self.high = high
        self.confidence = confidence
        self.pValue = pValue
        self.paired = paired
    }

    /// Whether the interval leaves out 1.0: only then is there a difference to report.
    public var measurable: Bool { low > 1 || high < 1 }

    /// Compares `values` with `baseline`; nil with fewer than two samples on either side or a
    /// baseline whose median is 0 (no interval can be made of that).
    public static func of(_ values: [Double], _ baseline: [Double], confidence: Double = 0.95, resamples: Int = 2000,
                          seed: UInt64 = 0x9E37_79B9_7F4A_7C15) -> BenchComparison? {
        guard values.count >= 2, baseline.count >= 2, values.allSatisfy(\.isFinite), baseline.allSatisfy(\.isFinite),
              BenchStatistics.median(baseline) != 0 else { return nil }
        let (low, high) = BenchStatistics.bootstrapRatioInterval(values, baseline, confidence: confidence, resamples: resamples, seed: seed)
        return BenchComparison(
            ratio: BenchStatistics.median(values) / BenchStatistics.median(baseline), low: low, high: high,
            confidence: confidence, pValue: BenchStatistics.mannWhitneyP(values, baseline))
    }

    /// Compares samples taken in pairs: `values[i]` beside `baseline[i]`, measured one right after
    /// the other. nil without two complete pairs, with unequal counts, or with a baseline sample of 0.
    public static func pairs(_ values: [Double], _ baseline: [Double], confidence: Double = 0.95, resamples: Int = 2000,
                             seed: UInt64 = 0x9E37_79B9_7F4A_7C15) -> BenchComparison? {
        guard values.count >= 2, values.count == baseline.count, values.allSatisfy(\.isFinite), baseline.allSatisfy(\.isFinite),
              baseline.allSatisfy({ $0 != 0 }) else { return nil }
        let ratios = zip(values, baseline).map { $0 / $1 }
        var rng = SplitMix64(seed: seed)
        var medians: [Double] = []
        medians.reserveCapacity(resamples)
        for _ in 0..<resamples {
            var pick = [Double](repeating: 0, count: ratios.count)
            for i in pick.indices { pick[i] = ratios[Int(rng.next() % UInt64(ratios.count))] }
            medians.append(BenchStatistics.median(pick))
        }
        let (low, high) = BenchStatistics.percentileInterval(medians, confidence: confidence)
        return BenchComparison(ratio: BenchStatistics.median(ratios), low: low, high: high, confidence: confidence,
                               pValue: BenchStatistics.wilcoxonSignedRankP(ratios.map { log($0) }), paired: true)
    }
}

extension BenchStatistics {
    /// The percentile bootstrap interval of median(values) ÷ median(baseline): each side is
    /// resampled with replacement on its own (the two are independent boots), `resamples` times.
    public static func bootstrapRatioInterval(_ values: [Double], _ baseline: [Double], confidence: Double = 0.95,
                                              resamples: Int = 2000, seed: UInt64 = 1) -> (low: Double, high: Double) {
        precondition(!values.isEmpty && !baseline.isEmpty, "a bootstrap of nothing")
        var rng = SplitMix64(seed: seed)
        func resampledMedian(_ xs: [Double]) -> Double {
            var pick = [Double](repeating: 0, count: xs.count)
            for i in pick.indices { pick[i] = xs[Int(rng.next() % UInt64(xs.count))] }
            return median(pick)
        }
        var ratios: [Double] = []
        ratios.reserveCapacity(resamples)
        for _ in 0..<resamples {
            let b = resampledMedian(baseline)
            let v = resampledMedian(values)
            if b != 0 { ratios.append(v / b) }
        }
        return percentileInterval(ratios, confidence: confidence)
    }

    /// The central `confidence` interval of `estimates` (linear interpolation between order statistics).
    public static func percentileInterval(_ estimates: [Double], confidence: Double) -> (low: Double, high: Double) {
        let sorted = estimates.sorted()
        guard !sorted.isEmpty else { return (.nan, .nan) }
        let tail = (1 - confidence) / 2
        func quantile(_ q: Double) -> Double {
            let position = q * Double(sorted.count - 1)
            let lower = Int(position.rounded(.down)), upper = Int(position.rounded(.up))
            return sorted[lower] + (sorted[upper] - sorted[lower]) * (position - Double(lower))
        }
        return (quantile(tail), quantile(1 - tail))
    }

    /// The two-sided p-value of the Wilcoxon signed-rank test that `differences` are centred on 0:
    /// zeros dropped, ties given their mean rank, the normal approximation with the tie and
    /// continuity corrections (indicative below about 8 pairs).
    public static func wilcoxonSignedRankP(_ differences: [Double]) -> Double {
        let nonzero = differences.filter { $0 != 0 && $0.isFinite }
        let n = Double(nonzero.count)
        guard n > 0 else { return 1 }
        let ordered = nonzero.sorted { abs($0) < abs($1) }
        var ranks = [Double](repeating: 0, count: ordered.count)
        var tieTerm = 0.0
        var i = 0
        while i < ordered.count {
            var j = i
            while j + 1 < ordered.count && abs(ordered[j + 1]) == abs(ordered[i]) { j += 1 }
            let rank = Double(i + j) / 2 + 1
            for k in i...j { ranks[k] = rank }
            let t = Double(j - i + 1)
            tieTerm += t * t * t - t
            i = j + 1
        }
        let positive = zip(ordered, ranks).filter { $0.0 > 0 }.map(\.1).reduce(0, +)
        let mean = n * (n + 1) / 4
        let variance = n * (n + 1) * (2 * n + 1) / 24 - tieTerm / 48
        guard variance > 0 else { return 1 }
        let z = max(0, abs(positive - mean) - 0.5) / variance.squareRoot()
        return min(1, erfc(z / 2.0.squareRoot()))
    }

    /// The two-sided p-value of the Mann–Whitney U test of `a` against `b`: the normal
    /// approximation with the tie correction and a continuity correction (good from about 8
    /// samples a side; with fewer it is only indicative).
    public static func mannWhitneyP(_ a: [Double], _ b: [Double]) -> Double {
        let n1 = Double(a.count), n2 = Double(b.count)
        guard n1 > 0, n2 > 0 else { return 1 }
        let pooled = (a.map { ($0, 0) } + b.map { ($0, 1) }).sorted { $0.0 < $1.0 }
        var ranks = [Double](repeating: 0, count: pooled.count)
        var tieTerm = 0.0
        var i = 0
        while i < pooled.count {
            var j = i
            while j + 1 < pooled.count && pooled[j + 1].0 == pooled[i].0 { j += 1 }
            let rank = Double(i + j) / 2 + 1
            for k in i...j { ranks[k] = rank }
            let t = Double(j - i + 1)
            tieTerm += t * t * t - t
            i = j + 1
        }
        let rankSumA = zip(pooled, ranks).filter { $0.0.1 == 0 }.reduce(0.0) { $0 + $1.1 }
        let u = rankSumA - n1 * (n1 + 1) / 2
        let mean = n1 * n2 / 2
        let n = n1 + n2
        let variance = n1 * n2 / 12 * ((n + 1) - tieTerm / (n * (n - 1)))
        guard variance > 0 else { return 1 }
        let z = max(0, abs(u - mean) - 0.5) / variance.squareRoot()
        return min(1, erfc(z / 2.0.squareRoot()))
    }
}

/// One measurement the guest made (`p2plab bench-guest`), as it writes it to `bench.json`.
public struct GuestMeasurement: Codable, Sendable, Equatable {
    /// Stable key the host pairs across kernels, e.g. `pin.p2pmem.LONGTERM|P2PDMA|WRITE|FAST.64`.
    public var key: String
    /// What was measured, in words.
    public var what: String
    public var unit: BenchUnit
    /// One value per repetition.
    public var samples: [Double]
    /// Why the kernel refused the operation (an errno), when it did: a result, not a failure.
    public var refused: String?
    /// Why the measurement could not be made (no provider, a tool missing, …).
    public var problem: String?
    /// What the samples do not show, e.g. slow-GUP entries per call.
    public var note: String?

    public init(key: String, what: String, unit: BenchUnit, samples: [Double] = [], refused: String? = nil,
                problem: String? = nil, note: String? = nil) {
        self.key = key
        self.what = what
        self.unit = unit
        self.samples = samples
        self.refused = refused
        self.problem = problem
        self.note = note
    }

    public var summary: BenchSummary? { BenchSummary(samples) }
}

/// Everything one guest run measured, written to `$P2PLAB_RESULTS/bench.json`.
public struct GuestBenchReport: Codable, Sendable, Equatable {
    /// `uname -r` in the guest.
    public var kernelRelease: String
    public var repetitions: Int
    public var measurements: [GuestMeasurement]

    public init(kernelRelease: String, repetitions: Int, measurements: [GuestMeasurement]) {
        self.kernelRelease = kernelRelease
        self.repetitions = repetitions
        self.measurements = measurements
    }

    /// The measurement with `key`, if the guest made it.
    public func measurement(_ key: String) -> GuestMeasurement? {
        measurements.first { $0.key == key }
    }

    /// This report with `other`'s samples appended to the measurements of the same key (a later
    /// boot of the same kernel); a refusal or problem in either one stays, as does the later note.
    public func merging(_ other: GuestBenchReport) -> GuestBenchReport {
        var merged = self
        merged.repetitions += other.repetitions
        for m in other.measurements {
            guard let index = merged.measurements.firstIndex(where: { $0.key == m.key }) else {
                merged.measurements.append(m)
                continue
            }
            var into = merged.measurements[index]
            into.samples += m.samples
            into.refused = into.refused ?? m.refused
            into.problem = into.problem ?? m.problem
            into.note = m.note ?? into.note
            if into.refused != nil || into.problem != nil { into.samples = [] }
            merged.measurements[index] = into
        }
        return merged
    }

    /// The file name the guest writes into its results directory.
    public static let fileName = "bench.json"
}

/// The groups of kernel measurements the guest takes, as `p2plab bench --only` names them, and the
/// prefix of each group's measurement keys (`pin.p2pmem.LONGTERM|P2PDMA|WRITE|FAST.64` is a pin).
public enum BenchGroup: String, Sendable, CaseIterable {
    case pinThroughput = "kernel.pin_throughput"
    case regMRLatency = "kernel.regmr_latency"
    case rdmaWriteBandwidth = "kernel.rdma_write_bw"

    public var keyPrefix: String {
        switch self {
        case .pinThroughput: "pin."
        case .regMRLatency: "regmr."
        case .rdmaWriteBandwidth: "rdma_write_bw."
        }
    }

    /// The group a measurement key belongs to.
    public static func of(key: String) -> BenchGroup? {
        allCases.first { key.hasPrefix($0.keyPrefix) }
    }
}

/// What the guest's kernel benchmarks measure and the keys their figures are filed under, shared by
/// the guest that measures (`p2plab-guest bench-guest`) and the host that pairs the reports, so the
/// host needs none of the guest's libraries to read them.
public enum BenchPlan {
    /// Pages per pin: one page (the per-call cost), a typical MR chunk, and 64 MiB (the whole CMB).
    public static let pinSizes = [1, 64, 16384]
    /// Memory region sizes, 4 KiB to 64 MiB in steps of four.
    public static let regionSizes = (0..<8).map { 4096 << (2 * $0) }
    /// The message size `ib_write_bw` sends (its default).
    public static let writeMessageBytes = 65536
    /// Seconds each `ib_write_bw` sample runs (`-D`).
    public static let writeSeconds = 2

    /// The key of one pin measurement, e.g. `pin.p2pmem.LONGTERM|P2PDMA|WRITE|FAST.64`; `flags` is
    /// the pin flags as `PinFlags` prints them.
    public static func pinKey(memory: String, flags: String, pages: Int) -> String {
        "\(BenchGroup.pinThroughput.keyPrefix)\(memory).\(flags).\(pages)"
    }

    /// The keys of the registration latencies of `bytes`.
    public static func regKey(_ bytes: Int) -> String { "\(BenchGroup.regMRLatency.keyPrefix)reg.\(bytes)" }
    public static func deregKey(_ bytes: Int) -> String { "\(BenchGroup.regMRLatency.keyPrefix)dereg.\(bytes)" }
    public static let writeKey = "\(BenchGroup.rdmaWriteBandwidth.keyPrefix)\(writeMessageBytes)"
}
