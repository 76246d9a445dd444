import Foundation
import KTAP
import LabSupport
import Testing

/// Two `p2plab test` on one cache at once, on different variants: a user and CI, two terminals.
@Suite("End to end: two runs share a cache", .serialized,
       .enabled(if: endToEnd, "set P2PLAB_INTEGRATION=1 (scripts/test does) to build kernels and boot them"))
struct SharedCacheEndToEndTests {
    /// Starts `.build/debug/p2plab ARGS` without waiting; its stdout and stderr go to `log`.
    func start(_ arguments: [String], log: URL) throws -> Process {
        let process = Process()
        process.executableURL = repoRoot.appendingPathComponent(".build/debug/p2plab")
        process.arguments = arguments
        process.currentDirectoryURL = repoRoot
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        return process
    }

    @Test("the baseline and the series started together each boot their own kernel and get their own verdict",
          .timeLimit(.minutes(45)))
    func twoVariantsAtOnce() throws {
        let out = try tempDirectory("shared-cache")
        let check = ["--check", "regmr.p2pmem", "--check", "env.p2pmem_provider", "--accel", "tcg"]
        let baseline = try start(["test", "--baseline"] + check + ["--output", out.appendingPathComponent("baseline").path],
                                 log: out.appendingPathComponent("baseline.log"))
        let series = try start(["test"] + check + ["--output", out.appendingPathComponent("series").path],
                               log: out.appendingPathComponent("series.log"))
        baseline.waitUntilExit()
        series.waitUntilExit()
        let logs = ["baseline", "series"].map { (try? String(contentsOf: out.appendingPathComponent("\($0).log"), encoding: .utf8)) ?? "" }
        print(logs.joined(separator: "\n----\n"))
        // The baseline refuses the p2pmem MR (a failed check, 1); the series passes (0).
        #expect(baseline.terminationStatus == 1, "baseline exited \(baseline.terminationStatus)")
        #expect(series.terminationStatus == 0, "series exited \(series.terminationStatus)")
        let b = try loadRun(out.appendingPathComponent("baseline"))
        let s = try loadRun(out.appendingPathComponent("series"))
        #expect(b.leaves.first { $0.test.name == "regmr.p2pmem" }?.test.errno == "EFAULT")
        #expect(s.leaves.first { $0.test.name == "regmr.p2pmem" }?.test.status == .pass)
        // Each booted the kernel of its own variant, built from its own branch.
        let bImage = try #require(b.metadata["bzImage"]), sImage = try #require(s.metadata["bzImage"])
        #expect(bImage != sImage)
        #expect(bImage.contains("-baseline-") && sImage.contains("-series-"))
        #expect(b.metadata["branch"]?.hasPrefix("p2plab/baseline-") == true)
        #expect(s.metadata["branch"]?.hasPrefix("p2plab/series-") == true)
        #expect(b.metadata["head"] != s.metadata["head"])
        // Neither saw git trip over the other's checkout.
        for log in logs { #expect(!log.contains("index.lock"), "a run collided with the other's checkout") }
        let waited = logs.contains { $0.contains("another p2plab run is using") }
        print("one run waited for the other's checkout: \(waited)")
    }
}
