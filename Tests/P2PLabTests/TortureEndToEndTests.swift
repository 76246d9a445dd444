import Foundation
import KTAP
import LabSupport
import Testing

/// `p2plab torture` on real kernels in QEMU: it passes on the series and the baseline with every
/// invariant checked and operations counted, and fails, with its seed, on a kernel carrying a
/// planted pin leak; the same seed fails again.
@Suite("End to end: p2plab torture (real kernel, real QEMU)", .serialized,
       .enabled(if: endToEnd, "set P2PLAB_INTEGRATION=1 (scripts/test does) to build kernels and boot them"))
struct TortureEndToEndTests {
    /// Runs a torture into a fresh directory and returns the invocation, the KTAP results and the summary.
    func torture(_ name: String, _ arguments: [String]) throws -> (Invocation, TestRun, TortureSummary) {
        let out = try tempDirectory("torture-\(name)")
        let result = try p2plab(["torture", "--accel", "tcg", "--output", out.path] + arguments)
        let run = try loadRun(out)
        let summary = try TortureSummary.read(from: out.appendingPathComponent("guest"))
        return (result, run, summary)
    }

    /// Every worker and invariant ran and passed, and every operation was done.
    func expectPassed(_ run: TestRun, _ summary: TortureSummary, workers: Int) {
        #expect(run.tests.map(\.name) == summary.plan.testNames)
        for test in run.tests { #expect(test.status == .pass, "\(test.name): \(test.status) \(test.diagnostics)") }
        #expect(summary.operationsPerWorker.count == workers && summary.operationsPerWorker.allSatisfy { $0 > 0 })
        for operation in TortureOperation.allCases {
            #expect((summary.counts[operation.rawValue]?.values.reduce(0, +) ?? 0) > 0, "\(operation.rawValue) never ran")
        }
        #expect(summary.providerCycles > 0)
        #expect(summary.failures.isEmpty)
    }

    @Test("the series: 20 s of 3 workers pass every invariant; p2pmem MRs on rxe are refused with EREMOTEIO, pins and umems succeed",
          .timeLimit(.minutes(20)))
    func series() throws {
        let (result, run, summary) = try torture("series", ["--seed", "11", "--workers", "3", "--duration", "20"])
        #expect(result.status == 0, "p2plab torture exited \(result.status)")
        #expect(result.output.contains("verdict: PASS") && result.output.contains("seed 11"))
        expectPassed(run, summary, workers: 3)
        #expect(summary.counts["regmr.p2pmem"]?["EREMOTEIO"] ?? 0 > 0)
        #expect(summary.counts["umem.hold"]?["succeeds"] ?? 0 > 0)
        #expect(summary.counts["pin.fast"]?["succeeds"] ?? 0 > 0)
    }

    @Test("the baseline: the same run passes; the long-term P2PDMA pins and umems are refused as the table says",
          .timeLimit(.minutes(20)))
    func baseline() throws {
        let (result, run, summary) = try torture("baseline", ["--baseline", "--seed", "11", "--workers", "3", "--duration", "20"])
        #expect(result.status == 0, "p2plab torture --baseline exited \(result.status)")
        expectPassed(run, summary, workers: 3)
        #expect(summary.counts["regmr.p2pmem"]?["EFAULT"] ?? 0 > 0)
        #expect(summary.counts["pin.slow"]?["EINVAL"] ?? 0 > 0)
        #expect(summary.counts["umem.hold"]?["EFAULT"] ?? 0 > 0)
    }

    @Test("a planted pin leak in ib_umem_release: the torture fails with its seed and replays the failure",
          .timeLimit(.minutes(30)))
    func plantedLeak() throws {
        // The bundled v2 plus the planted patch, as a series directory.
        let series = try v2Planted(with: "planted-umem-pin-leak.patch", directory: "planted-series")

        let arguments = ["--series", series.path, "--seed", "5", "--workers", "2", "--duration", "15"]
        let (first, run, summary) = try torture("planted", arguments)
        #expect(first.status == LabExit.failed.rawValue, "p2plab torture on the planted leak exited \(first.status)")
        #expect(first.output.contains("seed 5"))
        #expect(first.output.contains("reproduce: ./p2plab torture --seed 5 --workers 2 --duration 15"))
        #expect(run.tests.first { $0.name == TortureInvariant.noLeakedPins.testName }?.status == .fail)
        #expect(summary.invariantProblems[TortureInvariant.noLeakedPins.rawValue]?.contains("never released") == true)
        // The positive control of the same run: the workers did their work.
        #expect(summary.counts["regmr.anon"]?["succeeds"] ?? 0 > 0)

        let (again, rerun, _) = try torture("planted-again", arguments)
        #expect(again.status == LabExit.failed.rawValue, "the replay exited \(again.status)")
        #expect(rerun.tests.first { $0.name == TortureInvariant.noLeakedPins.testName }?.status == .fail)
    }
    // The sanitizer kernels' torture runs in EndToEndTests.sanitizedTeardown, through test --sanitize.
}
