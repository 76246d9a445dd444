import Catalog
import Checks
import Foundation
import LabSupport
import Testing
@testable import P2PLab

@Suite("Bench statistics")
struct BenchStatisticsTests {
    @Test("min, median and max of an odd and an even number of samples")
    func summary() throws {
        let odd = try #require(BenchSummary([5, 1, 3]))
        #expect(odd == BenchSummary(count: 3, min: 1, median: 3, max: 5))
        let even = try #require(BenchSummary([4, 1, 3, 2]))
        #expect(even == BenchSummary(count: 4, min: 1, median: 2.5, max: 4))
        #expect(BenchSummary([7]) == BenchSummary(count: 1, min: 7, median: 7, max: 7))
    }

    @Test("no samples, or a broken one, is no summary")
    func noSummary() {
        #expect(BenchSummary([]) == nil)
        #expect(BenchSummary([1, .nan, 3]) == nil)
        #expect(BenchSummary([1, .infinity]) == nil)
    }

    @Test("three significant figures, thousands grouped, no exponent",
          arguments: [
            (4.2713, "4.27"), (0.0812345, "0.0812"), (12_213.7, "12\u{2009}200"), (1_234_567, "1\u{2009}230\u{2009}000"),
            (1090.4, "1090"), (0, "0"), (60, "60.0"), (-0.5, "-0.500"),
          ])
    func significant(value: Double, text: String) {
        #expect(BenchStatistics.significant(value) == text)
    }

    @Test("units print themselves")
    func units() {
        #expect(BenchUnit.microseconds.format(81.94) == "81.9 µs")
    }

    @Test("a later boot's samples join the earlier ones; a refusal in either wins")
    func merging() {
        let first = GuestBenchReport(kernelRelease: "6.12", repetitions: 1, measurements: [
            GuestMeasurement(key: "a", what: "a", unit: .seconds, samples: [1], note: "old"),
            GuestMeasurement(key: "b", what: "b", unit: .seconds, samples: [2]),
        ])
        let second = GuestBenchReport(kernelRelease: "6.12", repetitions: 1, measurements: [
            GuestMeasurement(key: "a", what: "a", unit: .seconds, samples: [3], note: "new"),
            GuestMeasurement(key: "b", what: "b", unit: .seconds, refused: "EINVAL"),
            GuestMeasurement(key: "c", what: "c", unit: .seconds, samples: [4]),
        ])
        let merged = first.merging(second)
        #expect(merged.repetitions == 2)
        #expect(merged.measurement("a")?.samples == [1, 3])
        #expect(merged.measurement("a")?.note == "new")
        #expect(merged.measurement("b")?.refused == "EINVAL")
        #expect(merged.measurement("b")?.samples == [])
        #expect(merged.measurement("c")?.samples == [4])
    }
}

@Suite("Bench figures")
struct BenchFigureTests {
    @Test("a figure with a measured baseline carries the ratio of the medians")
    func ratio() throws {
        let figure = try BenchFigure.make(.coldBuild, "lean", unit: .seconds, samples: [300, 310, 320],
                                          comparedWith: "defconfig", baselineSamples: [600, 620, 640],
                                          goal: BenchGoal(limit: 0.6, onRatio: true)).get()
        #expect(figure.ratio == 0.5)
        #expect(figure.meetsGoal == true)
        #expect(BenchRenderer.goalText(figure) == "ratio ≤ 0.6: met")
    }

    @Test("a goal on the value is a baseline; missing it is said")
    func goal() throws {
        let figure = try LabFigures.seriesSwitch("switch", samples: [70, 65, 80], problem: nil, note: nil).get()
        #expect(figure.ratio == nil)
        #expect(figure.meetsGoal == false)
        #expect(BenchRenderer.goalText(figure) == "≤ 60 s: **missed**")
    }

    @Test("no baseline, no figure: the reason is kept instead")
    func notReported() {
        let alone = BenchFigure.make(.pinThroughput, "alone", unit: .pagesPerSecond, samples: [1], comparedWith: "nothing")
        #expect(throws: BenchNotReported.self) { try alone.get() }
        if case .failure(let missing) = alone { #expect(missing.reason == "nothing to compare it with") }

        let ratioGoalOnly = BenchFigure.make(.coldBuild, "lean", unit: .seconds, samples: [1], comparedWith: "defconfig",
                                             goal: BenchGoal(limit: 0.6, onRatio: true))
        #expect(throws: BenchNotReported.self) { try ratioGoalOnly.get() }

        let brokenBaseline = LabFigures.coldBuild(lean: [300], defconfig: [], problem: nil, defconfigProblem: "make failed", note: nil)
        guard case .failure(let why) = brokenBaseline else {
            Issue.record("a figure without its baseline was reported")
            return
        }
        #expect(why.reason.contains("make failed"))

        let noSamples = LabFigures.warmCycle(.warmCycleTrue, accel: "TCG", samples: [], problem: nil, note: nil)
        #expect(throws: BenchNotReported.self) { try noSamples.get() }
    }

    static func report(_ pairs: [(String, [Double])], refused: [String: String] = [:], note: String? = nil) -> GuestBenchReport {
        GuestBenchReport(kernelRelease: "6.12.117+", repetitions: 3, measurements: pairs.map {
            GuestMeasurement(key: $0.0, what: $0.0, unit: .pagesPerSecond, samples: refused[$0.0] == nil ? $0.1 : [],
                             refused: refused[$0.0], note: note)
        })
    }

    @Test("pins: the baseline's refusal of LONGTERM|P2PDMA is stated, what exists is compared")
    func pins() throws {
        var keys: [(String, [Double])] = []
        for n in BenchGuest.pinSizes {
            for c in BenchGuest.pinCases { keys.append((BenchGuest.pinKey(memory: c.memory, flags: c.flags, pages: n), [1, 2, 3])) }
        }
        let longterm = keys.map(\.0).filter { $0.hasPrefix("pin.p2pmem.LONGTERM|P2PDMA") }
        let baseline = Self.report(keys, refused: Dictionary(uniqueKeysWithValues: longterm.map { ($0, "EINVAL") }))
        let series = Self.report(keys, note: "slow-GUP entries per call: 0.00")
        let results = KernelFigures.pins(baseline: .init(label: "baseline", report: baseline), series: .init(label: "series", report: series))
        let figures = results.compactMap { try? $0.get() }
        let missing = results.compactMap { result -> BenchNotReported? in
            if case .failure(let m) = result { return m }
            return nil
        }
        #expect(figures.count == 4 * BenchGuest.pinSizes.count)
        #expect(missing.count == BenchGuest.pinSizes.count)
        #expect(missing.allSatisfy { $0.reason.contains("baseline refuses long-term P2PDMA pins (fast path EINVAL, slow path EINVAL)") })
        let fastVsSlow = try #require(figures.first { $0.comparedWith.contains("slow path") })
        #expect(fastVsSlow.ratio == 1)
        #expect(fastVsSlow.note == "slow-GUP entries per call: 0.00")
        #expect(figures.allSatisfy { $0.measurement == "kernel.pin_throughput" })
    }

    @Test("a kernel that could not be measured takes every figure that needs it out, with its reason")
    func missingKernel() {
        let series = Self.report([(BenchGuest.writeKey, [0.1, 0.2])])
        let results = KernelFigures.writeBandwidth(
            baseline: .init(label: "baseline", problem: "the baseline kernel could not be measured: boot timeout"),
            series: .init(label: "series", report: series))
        guard case .failure(let missing) = results[0] else {
            Issue.record("reported without a baseline")
            return
        }
        #expect(missing.reason.contains("boot timeout"))
    }
}

@Suite("Bench selection")
struct BenchSelectionTests {
    @Test("--only and --skip globs choose measurements")
    func select() {
        #expect(BenchMeasurement.select(only: ["kernel.*"], skip: [], matches: globMatches) == [.pinThroughput, .regMRLatency, .rdmaWriteBandwidth])
        #expect(BenchMeasurement.select(only: [], skip: ["lab.cold_build"], matches: globMatches).count == BenchMeasurement.allCases.count - 1)
        #expect(BenchMeasurement.select(only: ["lab.bisect_step"], skip: [], matches: globMatches) == [.bisectStep])
        #expect(BenchMeasurement.select(only: ["nothing"], skip: [], matches: globMatches).isEmpty)
    }
}

@Suite("perftest output")
struct PerftestOutputTests {
    @Test("the result line of a Gb/s table")
    func gigabits() throws {
        let text = """
             Mtu             : 1024[B]
             Link type       : Ethernet
            ---------------------------------------------------------------------------------------
             #bytes     #iterations    BW peak[Gb/sec]    BW average[Gb/sec]   MsgRate[Mpps]
             65536      348           0.000000            0.090768            0.000173
            ---------------------------------------------------------------------------------------
            """
        let parsed = try #require(PerftestOutput.parse(text))
        #expect(parsed == PerftestOutput(messageBytes: 65536, iterations: 348, averageGigabitsPerSecond: 0.090768, mtu: 1024))
    }

    @Test("a MiB/s table is converted to Gb/s")
    func mebibytes() throws {
        let text = """
             #bytes     #iterations    BW peak[MiB/sec]    BW average[MiB/sec]   MsgRate[Mpps]
             65536      1000           0.00               119.21               0.001907
            """
        let parsed = try #require(PerftestOutput.parse(text))
        #expect(abs(parsed.averageGigabitsPerSecond - 1.0) < 0.001)
        #expect(parsed.mtu == nil)
    }

    @Test("no table, no result")
    func none() {
        #expect(PerftestOutput.parse("Couldn't connect to 127.0.0.1:18515") == nil)
        #expect(PerftestOutput.parse(" #bytes     #iterations    BW peak[Gb/sec]    BW average[Gb/sec]   MsgRate[Mpps]\n") == nil)
    }
}

@Suite("BENCHMARKS.md")
struct BenchRendererTests {
    static func run(date: String, measured: [BenchMeasurement], figures: [BenchFigure], notReported: [BenchNotReported] = [], p2plab: String) -> BenchRun {
        BenchRun(
            date: date, command: "p2plab bench", repetitions: 5,
            machine: BenchMachine(host: "vm", cores: 2, cpu: "Test CPU", memoryMiB: 24 * 1024, accel: "tcg",
                                  accelNote: "KVM probe: no /dev/kvm; using tcg", hostKernel: "6.1.0", loadAtStart: "0.1 0.2 0.3", loadAtEnd: "1.0 1.0 1.0"),
            versions: BenchVersions(kernel: "6.12.117+", qemu: "QEMU emulator version 7.2.15", p2plab: p2plab, compiler: "gcc 12.2.0", perftest: "perftest 4.5"),
            measured: measured.map(\.rawValue), figures: figures, notReported: notReported, raw: [])
    }

    static func figure(_ m: BenchMeasurement, _ title: String, _ median: Double) -> BenchFigure {
        BenchFigure(measurement: m.rawValue, title: title, unit: .seconds, value: BenchSummary([median - 1, median, median + 1])!,
                    comparedWith: "the goal (issue 6)", goal: BenchGoal(limit: 10, onRatio: false))
    }

    @Test("each measurement from its newest run, tagged; runs listed with machine and versions; gaps said")
    func markdown() {
        let old = Self.run(date: "2026-11-20T10:00:00Z", measured: [.warmCycleTrue, .warmCycleSuite],
                           figures: [Self.figure(.warmCycleTrue, "old true", 4), Self.figure(.warmCycleSuite, "old suite", 9)],
                           p2plab: "aaaaaaaaaaaa")
        let new = Self.run(date: "2026-11-21T10:00:00Z", measured: [.warmCycleSuite],
                           figures: [Self.figure(.warmCycleSuite, "new suite", 12)],
                           notReported: [BenchNotReported(measurement: "lab.warm_cycle_suite", title: "the same under KVM", reason: "KVM does not work here")],
                           p2plab: "bbbbbbbbbbbb")
        let text = BenchRenderer.markdown(runs: [("old.json", old), ("new.json", new)])
        #expect(text.contains("| old true | 4.00 s (3.00–5.00, n=3) | the goal (issue 6) | — |  | ≤ 10 s: met |"))
        #expect(text.contains("| new suite | 12.0 s (11.0–13.0, n=3) |"))
        #expect(text.contains("≤ 10 s: **missed**"))
        #expect(!text.contains("old suite"))
        #expect(text.contains("### `lab.warm_cycle_true` [1]"))
        #expect(text.contains("### `lab.warm_cycle_suite` [2]"))
        #expect(text.contains("| [1] `old.json` | 2026-11-20T10:00:00Z | vm: 2 cores (Test CPU), 24 GiB"))
        #expect(text.contains("| [2] `new.json` |"))
        #expect(text.contains("aaaaaaaaaaaa") && text.contains("bbbbbbbbbbbb"))
        #expect(text.contains("- `lab.warm_cycle_suite` [2] the same under KVM: KVM does not work here"))
        #expect(text.contains("- `lab.cold_build`: not measured in any recorded run; the command is `p2plab bench --only lab.cold_build`."))
    }

    @Test("table cells escape pipes, notes go under the title")
    func escaping() {
        var f = Self.figure(.pinThroughput, "LONGTERM|P2PDMA", 5)
        f.note = "slow-GUP entries per call: 0.00"
        let table = BenchRenderer.figureTable([f])
        #expect(table.contains("LONGTERM\\|P2PDMA<br>_slow-GUP entries per call: 0.00_"))
    }

    @Test("result files are named by UTC date and host")
    func fileName() {
        let date = ISO8601DateFormatter().date(from: "2026-11-21T20:31:05Z")!
        #expect(BenchRun.fileName(date: date, host: "lab host.example") == "2026-11-21-2031-lab_host_example.json")
    }

    @Test("two runs started in the same minute keep a file each")
    func sameMinute() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-bench-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let store = BenchResultsStore(root: root)
        let first = try store.write(Self.run(date: "2026-11-21T20:31:05Z", measured: [.warmCycleTrue], figures: [], p2plab: "a"))
        let second = try store.write(Self.run(date: "2026-11-21T20:31:58Z", measured: [.warmCycleSuite], figures: [], p2plab: "b"))
        #expect(first.lastPathComponent.hasPrefix("2026-11-21-2031-"))
        #expect(second.lastPathComponent.hasSuffix("-2.json"))
        #expect(try JSONDecoder().decode(BenchRun.self, from: Data(contentsOf: first)).measured == ["lab.warm_cycle_true"])
    }

    @Test("a results file round-trips through JSON")
    func roundTrip() throws {
        let original = Self.run(date: "2026-11-21T10:00:00Z", measured: [.warmCycleTrue], figures: [Self.figure(.warmCycleTrue, "t", 4)], p2plab: "c")
        let decoded = try JSONDecoder().decode(BenchRun.self, from: original.encoded())
        #expect(decoded == original)
    }
}

@Suite("Bench comparisons: a ratio with its interval, noise reported as no difference")
struct BenchComparisonTests {
    let low = (1...10).map(Double.init)
    let high = (11...20).map(Double.init)

    @Test("Mann–Whitney: fully separated samples, interleaved ones, and all ties")
    func mannWhitney() {
        // U = 0, mean 50, variance 10·10·21/12 = 175: z = 49.5/√175.
        #expect(abs(BenchStatistics.mannWhitneyP(low, high) - 1.8258e-4) < 1e-6)
        #expect(abs(BenchStatistics.mannWhitneyP(high, low) - 1.8258e-4) < 1e-6)
        // Odd against even numbers: U = 45, |45 − 50| − ½ = 4.5.
        let odd = stride(from: 1.0, through: 19, by: 2).map { $0 }, even = stride(from: 2.0, through: 20, by: 2).map { $0 }
        #expect(abs(BenchStatistics.mannWhitneyP(odd, even) - 0.73380) < 1e-4)
        #expect(BenchStatistics.mannWhitneyP([3, 3, 3], [3, 3, 3]) == 1)
    }

    @Test("the bootstrap interval holds the ratio of the medians and is the same on every run")
    func bootstrap() throws {
        let c = try #require(BenchComparison.of(high, low))
        #expect(c.ratio == 15.5 / 5.5)
        #expect(c.low <= c.ratio && c.ratio <= c.high)
        #expect(c.low > 1 && c.measurable)
        #expect(BenchComparison.of(high, low) == c)
    }

    @Test("the same distribution on both sides, shuffled, is no measurable difference")
    func noise() throws {
        var rng = SplitMix64(seed: 7)
        let a = (0..<12).map { _ in 100 + Double(rng.next() % 40) }
        let b = (0..<12).map { _ in 100 + Double(rng.next() % 40) }
        let c = try #require(BenchComparison.of(a, b))
        #expect(c.low < 1 && c.high > 1)
        #expect(!c.measurable)
        #expect(c.pValue > 0.05)
    }

    @Test("pairs: a 10 % gain under a machine whose speed drifts 2× over the run is measurable paired, not unpaired")
    func pairedDrift() throws {
        // Cycle i: the machine's slowness s_i runs from 1 to 2 and back with jitter; each cycle boots
        // the baseline and then the candidate, which does 0.9 of the baseline's work.
        var rng = SplitMix64(seed: 11)
        var baseline: [Double] = [], candidate: [Double] = []
        for i in 0..<10 {
            let slowness = 1 + Double(i < 5 ? i : 9 - i) / 4 + Double(rng.next() % 100) / 1000
            baseline.append(10 * slowness * (1 + Double(rng.next() % 30) / 1000))
            candidate.append(9 * slowness * (1 + Double(rng.next() % 30) / 1000))
        }
        // The control: compared as two independent sets, the drift hides the gain.
        let unpaired = try #require(BenchComparison.of(candidate, baseline))
        #expect(!unpaired.measurable, "\(unpaired)")
        #expect(unpaired.paired == nil)
        let paired = try #require(BenchComparison.pairs(candidate, baseline))
        #expect(paired.paired == true)
        #expect(paired.measurable && paired.high < 1, "\(paired)")
        #expect(abs(paired.ratio - 0.9) < 0.03)
        #expect(paired.pValue < 0.01)
        #expect(BenchComparison.pairs(candidate, baseline) == paired)
        // Rendered with its kind, through a figure that asks for pairs.
        let figure = try BenchFigure.make(.warmCycleSuite, "suite", unit: .seconds, samples: candidate,
                                          comparedWith: "before", baselineSamples: baseline, paired: true).get()
        #expect(BenchRenderer.ratioText(figure).contains("(paired, "), "\(BenchRenderer.ratioText(figure))")
    }

    @Test("pairs of one distribution are no measurable difference; unequal counts or a zero give none")
    func pairedNoise() throws {
        var rng = SplitMix64(seed: 5)
        let a = (0..<12).map { _ in 100 + Double(rng.next() % 40) }
        let b = (0..<12).map { _ in 100 + Double(rng.next() % 40) }
        let c = try #require(BenchComparison.pairs(a, b))
        #expect(!c.measurable && c.pValue > 0.05, "\(c)")
        #expect(BenchComparison.pairs([1, 2, 3], [1, 2]) == nil)
        #expect(BenchComparison.pairs([1, 2], [1, 0]) == nil)
        #expect(BenchComparison.pairs([1], [1]) == nil)
    }

    @Test("Wilcoxon signed-rank: all of one sign, a symmetric set, and zeros")
    func wilcoxon() {
        // n = 10, W+ = 55, mean 27.5, variance 96.25: z = 27/√96.25.
        let p = BenchStatistics.wilcoxonSignedRankP((1...10).map(Double.init))
        #expect(abs(p - 0.005934) < 1e-4, "\(p)")
        #expect(BenchStatistics.wilcoxonSignedRankP([-3, -2, -1, 1, 2, 3]) == 1)
        #expect(BenchStatistics.wilcoxonSignedRankP([0, 0]) == 1)
    }

    @Test("too few samples, or a zero baseline, give no interval")
    func tooFew() {
        #expect(BenchComparison.of([1], [1, 2]) == nil)
        #expect(BenchComparison.of([1, 2], [0, 0, 0]) == nil)
    }

    @Test("a figure whose interval contains 1 says so instead of printing its ratio alone")
    func rendering() throws {
        let noisy = try BenchFigure.make(.pinThroughput, "pin", unit: .pagesPerSecond, samples: [90, 130, 100, 120, 95],
                                         comparedWith: "baseline", baselineSamples: [110, 100, 125, 92, 140]).get()
        #expect(BenchRenderer.ratioText(noisy).hasPrefix("no measurable difference ("))
        let clear = try BenchFigure.make(.pinThroughput, "pin", unit: .pagesPerSecond, samples: high,
                                         comparedWith: "baseline", baselineSamples: low).get()
        let text = BenchRenderer.ratioText(clear)
        #expect(text.hasPrefix("2.82× ("), "got \(text)")
        #expect(BenchRenderer.figureTable([clear]).contains(text))
    }
}

@Suite("Bench group names")
struct BenchGroupTests {
    @Test("every guest group is a measurement of p2plab bench, and every key finds its group")
    func groups() {
        for group in BenchGroup.allCases { #expect(BenchMeasurement(rawValue: group.rawValue)?.isGuest == true) }
        #expect(BenchMeasurement.allCases.filter(\.isGuest).count == BenchGroup.allCases.count)
        #expect(BenchGroup.of(key: "pin.p2pmem.LONGTERM|P2PDMA|WRITE|FAST.64") == .pinThroughput)
        #expect(BenchGroup.of(key: "regmr.dereg.4096") == .regMRLatency)
        #expect(BenchGroup.of(key: "rdma_write_bw.65536") == .rdmaWriteBandwidth)
    }

    @Test("--against boots through the other checkout's p2plab boot and takes QEMU's seconds from its run manifest")
    func againstCheckout() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-against-\(getpid())")
        defer { try? FileManager.default.removeItem(at: root) }
        let bin = root.appendingPathComponent(".build/debug")
        try FileManager.default.createDirectory(at: bin, withIntermediateDirectories: true)
        // A stand-in for the other checkout's p2plab: records its arguments, writes the manifest a boot writes.
        let script = """
            #!/bin/sh
            out=; prev=
            for a in "$@"; do [ "$prev" = --output ] && out=$a; prev=$a; done
            printf '%s\\n' "$@" > "$out/args"
            status=${FAKE_STATUS:-0}
            printf '{"accel":"tcg","accelNote":"","command":"true","ended":"2026-12-01T00:00:03Z","exitCode":0,"findings":[],"guestExitStatus":%s,"kernel":"k","machine":"lab","outcome":"exited","qemuStatus":"exit 0","seconds":2.75,"started":"2026-12-01T00:00:00Z"}' "$status" > "$out/manifest.json"
            """
        for name in ["p2plab", "p2plab-guest"] {
            try script.write(to: bin.appendingPathComponent(name), atomically: true, encoding: .utf8)
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: bin.appendingPathComponent(name).path)
        }
        let other = AgainstCheckout(root.path)
        let run = root.appendingPathComponent("run")
        let invocation = GuestInvocation(job: .suite(checks: []))
        let seconds = try await other.boot(.warmCycleSuite, bzImage: "/k/bzImage", module: URL(fileURLWithPath: "/m/p2plab_test.ko"), selftests: nil,
                                           invocation: invocation, finished: [0, 1], directory: run, limits: .standard, runner: Runner())
        #expect(seconds == 2.75)
        let args = try String(contentsOf: run.appendingPathComponent("args"), encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(args.starts(with: ["boot", "--accel", "tcg", "--kernel", "/k/bzImage"]))
        #expect(args.contains("/m") && args.contains(other.binary("p2plab-guest")))
        #expect(args.last?.hasPrefix(shellQuote([other.binary("p2plab-guest"), "check", "--invocation"])) == true)
        #expect(FileManager.default.fileExists(atPath: run.appendingPathComponent("guest/\(GuestInvocation.fileName)").path))
        // A guest that did not finish is no sample.
        await #expect(throws: BenchAgainstError.self) {
            _ = try await other.boot(.warmCycleTrue, bzImage: "/k/bzImage", module: nil, selftests: nil, invocation: invocation,
                                     finished: [0], directory: run, limits: .standard, runner: Runner(), environment: ["FAKE_STATUS": "1"])
        }
    }

    @Test("vng's ending: 0 ran; 255 with its init's console saying code 0 ran, and says why; anything else failed")
    func vngEnding() {
        #expect(BenchSession.vngEnding(status: 0, console: "") == .ran(nil))
        let console = """
            [   47.2] virtme-ng-init: virtme-init: cannot find script I/O ports; make sure virtio-serial is available
            [   47.3] virtme-ng-init: starting script (console fallback)
            [   48.5] virtme-ng-init: script exited with code 0
            """
        guard case .ran(let note?) = BenchSession.vngEnding(status: 255, console: console) else {
            Issue.record("a script that exited 0 on the console is a run")
            return
        }
        #expect(note.contains("CONFIG_INOTIFY_USER"))
        guard case .failed(let why) = BenchSession.vngEnding(status: 255, console: console.replacingOccurrences(of: "code 0", with: "code 1")) else {
            Issue.record("a script that exited 1 is no run")
            return
        }
        #expect(why.contains("exited with code 1"))
        #expect(BenchSession.vngEnding(status: 255, console: "") == .failed("vng --run exited 255 and printed nothing"))
    }
}
