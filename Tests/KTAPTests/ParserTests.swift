import Testing

@testable import KTAP

@Suite("KTAP parser: golden logs")
struct ParserGoldenTests {
    @Test func cleanPass() throws {
        let run = KTAPParser.parse(try Fixture.text("clean_pass.ktap"))
        #expect(run.parseErrors.isEmpty)
        #expect(run.plan == 6)
        #expect(run.tests.map(\.number) == Array(1...6))
        #expect(run.tests.allSatisfy { $0.status == .pass })
        #expect(run.tests[3].name == "regmr.anon")
        #expect(run.tests[3].diagnostics == ["registered and deregistered 4 KiB, 64 KiB, 2 MiB, 64 MiB"])
        #expect(run.tests[3].duration == 0.2125)
        #expect(run.tests[4].errno == "EREMOTEIO")
        #expect(run.tests[4].expected == "EREMOTEIO")
        #expect(run.tests[4].observed == "EREMOTEIO")
        // Structured keys are lifted out of the free-form diagnostics.
        #expect(run.tests[4].diagnostics.isEmpty)
        #expect(run.ending == .complete)
        #expect(run.verdict == .pass)
        #expect(run.verdictLine == "verdict: PASS (6 passed)")
    }

    @Test func skipsAndAFailureWithDiagnostics() throws {
        let run = KTAPParser.parse(try Fixture.text("skips_and_failure.ktap"))
        #expect(run.parseErrors.isEmpty)
        #expect(run.metadata.entries.map(\.key) == ["kernel", "machine"])
        #expect(run.metadata["kernel"] == "6.12.22-p2plab-baseline")
        #expect(run.tests.map(\.status) == [.pass, .pass, .pass, .fail, .fail, .skip, .skip])
        let regmr = run.tests[3]
        #expect(regmr.diagnostics == ["ibv_reg_mr(p2pmem, 2 MiB, LOCAL_WRITE|REMOTE_WRITE) on rxe0"])
        #expect(regmr.errno == "EFAULT")
        #expect(regmr.expected == "EREMOTEIO")
        #expect(regmr.observed == "EFAULT")
        #expect(regmr.duration == 0.0025)
        let pin = run.tests[4]
        #expect(pin.name == "pin.longterm_p2pdma.fast")
        #expect(pin.splats == [
            "WARNING: CPU: 0 PID: 214 at mm/gup.c:2633 is_valid_gup_args+0x8c/0xb0",
            "Call Trace: __gup_longterm_locked+0x5a/0x9e0",
        ])
        #expect(pin.duration == 0.00425)
        #expect(run.tests[5].directive == "SKIP")
        #expect(run.tests[5].reason == "needs a P2P-capable HCA: pass --device mlx5_0 on real hardware")
        #expect(run.tests[6].reason == "run as root")
        #expect(run.verdict == .fail)
        #expect(run.verdictLine == "verdict: FAIL (3 passed, 2 failed, 2 skipped)")
    }

    @Test func nestedSuites() throws {
        let run = KTAPParser.parse(try Fixture.text("nested.ktap"))
        #expect(run.parseErrors.isEmpty)
        #expect(run.tests.map(\.name) == ["pin", "regmr", "oracle.gup_test"])
        let pin = run.tests[0]
        #expect(pin.status == .pass)
        #expect(pin.subtests.map(\.name) == ["longterm_p2pdma.fast", "longterm_p2pdma.slow", "longterm_without_p2pdma_flag"])
        #expect(pin.subtests[1].duration == 0.0095)
        #expect(pin.subtests[2].errno == "EREMOTEIO")
        // "# Subtest:" names the block; it is not a diagnostic of the first subtest.
        #expect(pin.subtests[0].diagnostics.isEmpty)
        let regmr = run.tests[1]
        #expect(regmr.status == .fail)
        #expect(regmr.diagnostics == ["regmr.write failed"])
        #expect(regmr.subtests.map(\.name) == ["write", "read_only"])
        #expect(regmr.subtests[0].subtests.map(\.status) == [.pass, .fail])
        #expect(regmr.subtests[0].subtests[1].expected == "EREMOTEIO")
        #expect(regmr.subtests[1].status == .skip)
        #expect(run.leaves.map { ($0.path + [$0.test.name]).joined(separator: ".") } == [
            "pin.longterm_p2pdma.fast", "pin.longterm_p2pdma.slow", "pin.longterm_without_p2pdma_flag",
            "regmr.write.anon_4k", "regmr.write.p2pmem_2m", "regmr.read_only", "oracle.gup_test",
        ])
        #expect(run.verdictLine == "verdict: FAIL (4 passed, 1 failed, 2 skipped)")
    }

    @Test func consoleWithKernelNoiseTimestampsAndCarriageReturns() throws {
        let run = KTAPParser.parse(try Fixture.text("console_noise.log"))
        #expect(run.parseErrors.isEmpty)
        #expect(run.tests.map(\.name) == [
            "env.p2pmem_provider", "env.rdma_device", "regmr.anon", "regmr.p2pmem", "kernfs.page_mkwrite_refused",
        ])
        #expect(run.tests.allSatisfy { $0.status == .pass })
        // Kernel lines between a check's diagnostics do not end up in them.
        #expect(run.tests[3].errno == "EREMOTEIO")
        #expect(run.tests[3].expected == "EREMOTEIO")
        #expect(run.tests[3].diagnostics.isEmpty)
        #expect(run.tests[3].duration == 0.0015)
        #expect(run.diagnostics == ["p2plab-check: 5 passed, 0 failed, 0 skipped"])
        #expect(run.consoleFindings.isEmpty)
        #expect(run.verdictLine == "verdict: PASS (5 passed)")
    }

    @Test func logCutOffByAPanic() throws {
        let run = KTAPParser.parse(try Fixture.text("panic_cutoff.log"))
        #expect(run.plan == 6)
        #expect(run.tests.map(\.status) == [.pass, .pass, .pass, .crashed, .notRun, .notRun])
        let running = run.tests[3]
        #expect(running.number == 4)
        #expect(running.diagnostics == ["pinned 512 pages LONGTERM|PCI_P2PDMA, unbinding 0000:01:00.0"])
        #expect(running.reason == "Kernel panic - not syncing: Fatal exception")
        #expect(running.splats == [
            "BUG: kernel NULL pointer dereference, address: 0000000000000000",
            "Oops: 0000 [#1] PREEMPT SMP NOPTI",
        ])
        #expect(run.tests[4].reason == "the run stopped during test 4")
        #expect(run.ending == .panic)
        #expect(run.crashed)
        #expect(run.consoleFindings.map(\.kind) == [.bug, .oops, .panic])
        #expect(run.parseErrors.map(\.message) == ["log ends after 3 of 6 tests"])
        #expect(run.verdictLine == "verdict: CRASHED (3 passed, 1 crashed, 2 not run)")
    }

    @Test func expectedNamesNameTheTestsTheLogNeverReached() throws {
        let names = [
            "env.p2pmem_provider", "env.rdma_device", "regmr.anon", "lifecycle.unbind_while_pinned",
            "lifecycle.exit_releases", "oracle.gup_test",
        ]
        let run = KTAPParser.parse(try Fixture.text("panic_cutoff.log"), options: .init(expectedNames: names))
        #expect(run.tests.map(\.name) == names)
    }

    @Test func truncatedLogWithoutPanic() throws {
        let run = KTAPParser.parse(try Fixture.text("truncated.log"))
        #expect(run.tests.map(\.status) == [.pass, .pass, .crashed, .notRun, .notRun])
        #expect(run.tests[2].diagnostics == ["registering 64 MiB MR"])
        #expect(run.tests[2].reason == "the log ends before its result (no panic in the console)")
        #expect(run.ending == .truncated)
        #expect(run.consoleFindings.isEmpty)
        #expect(run.parseErrors.contains { $0.message == "log ends after 2 of 5 tests" })
        #expect(run.verdict == .crashed)
    }

    @Test(arguments: ["truncated.log", "panic_cutoff.log"])
    func hostTimeoutTurnsTheRunningTestIntoTimeout(fixture: String) throws {
        let run = KTAPParser.parse(try Fixture.text(fixture), timedOut: true)
        #expect(run.tests.filter { $0.status == .timeout }.count == 1)
        #expect(!run.tests.contains { $0.status == .crashed })
        #expect(run.ending == .timedOut)
        #expect(run.verdict == .timeout)
    }

    @Test func garbageIsRecordedNotThrown() throws {
        let run = KTAPParser.parse(try Fixture.text("garbage.txt"))
        #expect(run.tests.isEmpty)
        #expect(run.parseErrors.map(\.message) == ["no KTAP output found in 7 lines"])
        #expect(run.verdict == .noResults)
        #expect(run.verdictLine == "verdict: NO RESULTS (no tests)")
    }

    @Test func kunitTAP14WithTabsAndDoublePrefixes() throws {
        let run = KTAPParser.parse(try Fixture.text("kunit_tap14.log"))
        #expect(run.parseErrors.isEmpty)
        #expect(run.tests.map(\.name) == ["kunit-resource-test", "kunit-try-catch-test"])
        #expect(run.tests[0].subtests.map(\.name) == [
            "kunit_resource_test_init_resources", "kunit_resource_test_alloc_resource",
            "kunit_resource_test_destroy_resource",
        ])
        #expect(run.tests[1].status == .fail)
        #expect(run.tests[1].subtests.map(\.status) == [.pass, .fail])
    }

    static let allFixtures = [
        "clean_pass.ktap", "skips_and_failure.ktap", "nested.ktap", "console_noise.log", "panic_cutoff.log",
        "truncated.log", "garbage.txt", "kunit_tap14.log",
    ]

    @Test("re-emitted KTAP parses back to the same tests", arguments: allFixtures)
    func reEmittedKTAPRoundTrips(fixture: String) throws {
        let run = KTAPParser.parse(try Fixture.text(fixture))
        let again = KTAPParser.parse(KTAPEmitter.render(run))
        #expect(again.tests == run.tests)
        #expect(again.metadata == run.metadata)
        #expect(again.verdict == run.verdict || run.verdict == .noResults && again.verdict == .noResults)
        if !run.tests.isEmpty { #expect(again.parseErrors.isEmpty) }
    }
}

@Suite("KTAP parser: rules")
struct ParserRuleTests {
    @Test func crashBeforeAnyDiagnosticsCrashesTheNextTestInThePlan() {
        let run = KTAPParser.parse("""
            KTAP version 1
            1..3
            ok 1 env.p2pmem_provider
            [    5.000000] Kernel panic - not syncing: sysrq triggered crash
            """)
        #expect(run.tests.map(\.status) == [.pass, .crashed, .notRun])
        #expect(run.tests[1].reason == "Kernel panic - not syncing: sysrq triggered crash")
        #expect(run.ending == .panic)
    }

    @Test func panicAfterACompletePlanStillCrashesTheRun() {
        let run = KTAPParser.parse("KTAP version 1\n1..1\nok 1 a\n[ 9.0] Kernel panic - not syncing: sysrq triggered crash\n")
        #expect(run.tests.map(\.status) == [.pass])
        #expect(run.verdict == .crashed)
        #expect(run.parseErrors.isEmpty)
    }

    @Test func panicInsideANestedSuiteCrashesTheSubtestAndItsParent() {
        let run = KTAPParser.parse("""
            KTAP version 1
            1..2
              KTAP version 1
              # Subtest: pin
              1..3
              ok 1 fast
              # pinning
            Kernel panic - not syncing: Fatal exception
            """)
        #expect(run.tests.map(\.status) == [.crashed, .notRun])
        #expect(run.tests[0].name == "pin")
        #expect(run.tests[0].subtests.map(\.status) == [.pass, .crashed, .notRun])
        #expect(run.tests[0].subtests[1].diagnostics == ["pinning"])
        #expect(run.counts.crashed == 1)
    }

    @Test func separateConsoleLogIsScannedForThePanic() {
        let run = KTAPParser.parse(
            "KTAP version 1\n1..2\nok 1 a\n",
            options: .init(consoleLog: "[ 1.0] Oops: 0000 [#1] PREEMPT SMP NOPTI\n[ 1.1] Kernel panic - not syncing: Fatal exception\n"))
        #expect(run.consoleFindings.map(\.kind) == [.oops, .panic])
        #expect(run.tests.map(\.status) == [.pass, .crashed])
        // Findings from another file have other line numbers: they are not this test's splats.
        #expect(run.tests[1].splats.isEmpty)
    }

    @Test(arguments: [
        ("ok 1 t # TODO not implemented", TestStatus.pass, "TODO"),
        ("not ok 1 t # TODO not implemented", .skip, "TODO"),
        ("not ok 1 t # XFAIL known broken", .skip, "XFAIL"),
        ("not ok 1 t # TIMEOUT 30 seconds", .timeout, "TIMEOUT"),
        ("not ok 1 t # ERROR setup failed", .fail, "ERROR"),
        ("not ok 1 t # skip lowercase works", .skip, "SKIP"),
        ("ok 1 - t # rcode=0", .pass, nil),
    ] as [(String, TestStatus, String?)])
    func directives(line: String, status: TestStatus, directive: String?) {
        let run = KTAPParser.parse("KTAP version 1\n1..1\n\(line)\n")
        #expect(run.tests.first?.name == "t")
        #expect(run.tests.first?.status == status)
        #expect(run.tests.first?.directive == directive)
    }

    @Test func wrongNumbersAndExtraResultsAreRecorded() {
        let run = KTAPParser.parse("KTAP version 1\n1..1\nok 1 a\nok 3 b\n")
        #expect(run.tests.count == 2)
        #expect(run.parseErrors.map(\.description) == [
            "line 4: test number 3 where 2 was expected", "line 4: test 3 is beyond the plan 1..1",
            "2 results for a plan of 1",
        ])
    }

    @Test func badDurationStaysADiagnostic() {
        let run = KTAPParser.parse("KTAP version 1\n1..1\n# duration_ms: soon\nok 1 a\n")
        #expect(run.tests[0].duration == nil)
        #expect(run.tests[0].diagnostics == ["duration_ms: soon"])
    }

    @Test func kernelHashLinesAreNotDiagnostics() {
        let run = KTAPParser.parse("KTAP version 1\n1..1\n[ 1.0] #PF: supervisor read access in kernel mode\nok 1 a\n")
        #expect(run.tests[0].diagnostics.isEmpty)
    }

    @Test func secondDocumentIsAppended() {
        // KUnit ran at boot, then the suite: both documents' tests are kept, numbering restarts.
        let run = KTAPParser.parse("""
            [ 0.5] KTAP version 1
            [ 0.5] 1..1
            [ 0.5] ok 1 kunit_suite
            KTAP version 1
            1..2
            ok 1 a
            ok 2 b
            """)
        #expect(run.tests.map(\.name) == ["kunit_suite", "a", "b"])
        #expect(run.plan == 3)
        #expect(run.verdict == .pass)
        #expect(run.parseErrors.map(\.line) == [4])
    }

    @Test func callerMetadataComesFirstAndWins() {
        let run = KTAPParser.parse(
            "KTAP version 1\n# kernel: from-guest\n# accel: tcg\n1..0\n",
            options: .init(metadata: [RunMetadata.Keys.p2plabVersion: "0.1", RunMetadata.Keys.kernel: "6.12.22"]))
        #expect(run.metadata.entries.map(\.key) == ["p2plab_version", "kernel", "accel"])
        #expect(run.metadata["kernel"] == "6.12.22")
    }

    @Test func planSkipAll() {
        let run = KTAPParser.parse("KTAP version 1\n1..0 # SKIP no p2pmem provider published\n")
        #expect(run.tests.isEmpty)
        #expect(run.diagnostics == ["all tests skipped: no p2pmem provider published"])
        #expect(run.parseErrors.isEmpty)
    }
}
