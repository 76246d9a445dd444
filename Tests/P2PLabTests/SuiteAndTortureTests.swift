import Foundation
import KTAP
import LabPipeline
import LabSupport
import Testing
@testable import P2PLab

@Suite("p2plab test --torture: the suite and a torture of the same kernel, one verdict")
struct SuiteAndTortureTests {
    let plan = TorturePlan(seed: 77, workers: 4, duration: 30)

    let tortureFailing = """
        KTAP version 1
        1..2
        ok 1 torture.worker.1
        not ok 2 torture.no_leaked_pins
        """

    let torturePassing = """
        KTAP version 1
        1..2
        ok 1 torture.worker.1
        ok 2 torture.no_leaked_pins
        """

    /// A suite whose first check took the kernel down (the host marks it CRASHED).
    var suiteCrashed: VariantResult {
        var result = variant(.full, "KTAP version 1\n1..2\nnot ok 1 control.oops\nok 2 env.module\n")
        result.run?.tests[0].status = .crashed
        return result
    }

    @Test("both pass: PASS, exit 0, one line naming both with the torture's rate and seed")
    func bothPass() {
        let summary = TortureSummary(plan: plan, elapsed: 30, operationsPerWorker: [600, 600, 600, 600])
        let run = SuiteAndTorture(suite: variant(.full, passing), torture: variant(.full, torturePassing), summary: summary, plan: plan)
        #expect(run.exitCode == 0)
        #expect(run.verdictLine == "verdict: PASS: suite PASS (3 passed); torture PASS (2 passed) (4 workers, 30 s, 80.0 ops/s, seed 77)")
    }

    @Test("a torture that fails fails the run although the suite passed; a crash in the suite outranks it")
    func worstWins() {
        let failing = SuiteAndTorture(suite: variant(.full, passing), torture: variant(.full, tortureFailing), summary: nil, plan: plan)
        #expect(failing.exitCode == LabExit.failed.rawValue)
        #expect(failing.verdictLine.hasPrefix("verdict: FAIL: suite PASS (3 passed); torture FAIL (1 passed, 1 failed)"))
        let crashed = SuiteAndTorture(suite: suiteCrashed, torture: variant(.full, tortureFailing), summary: nil, plan: plan)
        #expect(crashed.exitCode == LabExit.crashed.rawValue)
        #expect(crashed.verdictLine.hasPrefix("verdict: CRASHED: suite CRASHED"))
    }

    @Test("a torture that could not boot is the run's exit code (121), not a pass of the suite")
    func tortureCouldNotTest() {
        var broken = variant(.full, "", problem: "boot timeout: the guest did not come up")
        broken.problemExit = .bootTimeout
        let run = SuiteAndTorture(suite: variant(.full, passing), torture: broken, summary: nil, plan: plan)
        #expect(run.exitCode == LabExit.bootTimeout.rawValue)
        #expect(run.verdictLine.hasPrefix("verdict: COULD NOT TEST: suite PASS (3 passed); torture could not test (boot timeout"))
    }

    @Test("no torture when the suite's kernel could not be tested: the suite's code and the reason")
    func notRun() {
        var broken = variant(.full, "", problem: "the kernel build failed")
        broken.problemExit = .buildFailed
        var run = SuiteAndTorture(suite: broken, torture: nil, summary: nil, plan: plan)
        run.skipped = "the kernel could not be tested"
        #expect(run.exitCode == LabExit.buildFailed.rawValue)
        #expect(run.verdictLine == "verdict: COULD NOT TEST: suite could not test (the kernel build failed); torture not run (the kernel could not be tested)")
    }

    @Test("the rendered suite and torture say suite:/torture:, so the run prints one verdict line")
    func renaming() {
        let text = SuiteAndTorture.renamingVerdicts("a\nverdict: PASS (3 passed)\n", as: "suite")
        #expect(text == "a\nsuite: PASS (3 passed)\n")
    }

    @Test("the torture's replay takes the test's build options only; reproduce.sh fixes the seed")
    func arguments() {
        let test = ["test", "--sanitize", "ubsan,kfence", "--check", "pin.*", "--torture=45", "--torture-seed", "9", "--format", "json",
                    "--output", "/tmp/r", "--panic-on-warn"]
        #expect(SuiteAndTorture.tortureVariantArguments(test) == ["--sanitize", "ubsan,kfence", "--panic-on-warn"])
        #expect(SuiteAndTorture.reproduceArguments(["test", "--sanitize", "kasan", "--torture-seed=3"], seed: 12)
            == ["test", "--sanitize", "kasan", "--torture-seed", "12"])
    }

    @Test("--sanitize adds a 30 s torture to a single-variant test; --torture 0 and the multi-variant modes do not")
    func defaults() throws {
        let sanitized = try P2PLabCommand.Test.parse(["--sanitize", "ubsan"])
        #expect(sanitized.tortureSeconds == 30)
        #expect(try P2PLabCommand.Test.parse([]).tortureSeconds == 0)
        #expect(try P2PLabCommand.Test.parse(["--sanitize", "ubsan", "--torture", "0"]).tortureSeconds == 0)
        #expect(try P2PLabCommand.Test.parse(["--torture", "20"]).tortureSeconds == 20)
        #expect(throws: (any Error).self) { try P2PLabCommand.Test.parse(["--torture", "601"]) }
        #expect(throws: (any Error).self) { try P2PLabCommand.Test.parse(["--compare", "--torture", "20"]) }
        #expect(throws: (any Error).self) { try P2PLabCommand.Test.parse(["--torture-seed", "4"]) }
        #expect(!(try P2PLabCommand.Test.parse(["--compare", "--sanitize", "ubsan"]).singleVariant))
    }
}
