import Foundation
import KTAP
import LabPipeline
import LabSupport
import Testing
@testable import P2PLab

@Suite("p2plab torture: seeded schedules, the KTAP summary, the reproducer")
struct TortureTests {
    @Test("the generator is SplitMix64: the reference outputs for seed 0")
    func splitMix64() {
        var random = TortureRandom(seed: 0)
        #expect([random.next(), random.next(), random.next()] == [0xE220_A839_7B1D_CDAF, 0x6E78_9E6A_A1B9_65F4, 0x06C4_5D18_8009_454F])
    }

    @Test("below(n) stays in 0..<n and reaches both ends")
    func bounded() {
        var random = TortureRandom(seed: 42)
        let draws = (0..<2000).map { _ in random.below(5) }
        #expect(draws.allSatisfy { (0..<5).contains($0) })
        #expect(Set(draws) == Set(0..<5))
    }

    @Test("the same seed replays the same steps per worker; another seed or worker does not")
    func replay() {
        let a = Array(TortureSchedule(seed: 7).steps(worker: 2).prefix(200))
        let b = Array(TortureSchedule(seed: 7).steps(worker: 2).prefix(200))
        #expect(a == b)
        #expect(a != Array(TortureSchedule(seed: 8).steps(worker: 2).prefix(200)))
        #expect(a != Array(TortureSchedule(seed: 7).steps(worker: 1).prefix(200)))
        #expect(Array(TortureSchedule(seed: 7).providerCycles().prefix(20)) == Array(TortureSchedule(seed: 7).providerCycles().prefix(20)))
        // Every operation occurs, with sizes from the choices, holds within 20 ms.
        let many = Array(TortureSchedule(seed: 7).steps(worker: 0).prefix(2000))
        #expect(Set(many.map(\.operation)) == Set(TortureOperation.allCases))
        #expect(many.allSatisfy { TortureSchedule.pageChoices.contains($0.pages) && (0...20_000).contains($0.holdMicroseconds) })
    }

    @Test("a schedule is a fixed sequence: the first steps of seed 1, worker 0, as recorded")
    func recordedSchedule() {
        // A change here changes what every recorded seed replays: keep it, or say so in the release notes.
        let steps = Array(TortureSchedule(seed: 1).steps(worker: 0).prefix(3)).map(\.description)
        #expect(steps == RecordedSchedule.seed1Worker0)
    }

    @Test("the reproducer: the prefix up to the failing step, then the whole run, with the variant's options")
    func reproducer() {
        let plan = TorturePlan(seed: 1234, workers: 4, duration: 25)
        let failure = TortureFailure(worker: 3, index: 41, step: TortureStep(operation: .umemHold, pages: 4, holdMicroseconds: 10),
                                     observed: "succeeds", allowed: ["EFAULT"], providerDisturbed: false)
        let variant = TortureReproducer.variantArguments(["torture", "--seed", "1234", "--workers=4", "--duration", "25", "--baseline", "--sanitize", "kasan,lockdep", "--output", "/tmp/x", "--shrink", "2"])
        #expect(variant == ["--baseline", "--sanitize", "kasan,lockdep"])
        #expect(TortureReproducer.commands(plan: plan, failure: failure, variantArguments: variant) == [
            "./p2plab torture --seed 1234 --workers 4 --duration 25 --ops 42 --baseline --sanitize kasan,lockdep",
            "./p2plab torture --seed 1234 --workers 4 --duration 25 --baseline --sanitize kasan,lockdep",
        ])
        #expect(TortureReproducer.commands(plan: plan, failure: nil, variantArguments: []) == ["./p2plab torture --seed 1234 --workers 4 --duration 25"])
        #expect(failure.line == "worker 3 operation #41 (umem.hold 4 pages, held 10 µs): succeeds, allowed EFAULT")
    }

    @Test("a refusal names the call that returned it; torture.json written before calls were named still reads")
    func refusalNamesItsCall() throws {
        let failure = TortureFailure(worker: 3, index: 544, step: TortureStep(operation: .umemHold, pages: 1, holdMicroseconds: 828),
                                     observed: "EINVAL", allowed: ["succeeds"], providerDisturbed: false,
                                     call: "the mmap of /sys/bus/pci/devices/0000:03:00.0/p2pmem/allocate")
        #expect(failure.line == "worker 3 operation #544 (umem.hold 1 pages, held 828 µs): EINVAL from the mmap of /sys/bus/pci/devices/0000:03:00.0/p2pmem/allocate, allowed succeeds")
        let old = #"{"worker":3,"index":544,"step":{"operation":"umem.hold","pages":1,"holdMicroseconds":828},"observed":"EINVAL","allowed":["succeeds"],"providerDisturbed":false}"#
        let decoded = try JSONDecoder().decode(TortureFailure.self, from: Data(old.utf8))
        #expect(decoded.call == nil)
        #expect(decoded.line == "worker 3 operation #544 (umem.hold 1 pages, held 828 µs): EINVAL, allowed succeeds")
    }

    @Test("the guest's KTAP parses into one result per worker and per invariant; a failure prints the seed and the replay")
    func summary() throws {
        let plan = TorturePlan(seed: 1, workers: 2, duration: 20)
        let run = KTAPParser.parse(Self.recordedKTAP, options: .init(expectedNames: plan.testNames))
        #expect(run.tests.map(\.name) == plan.testNames)
        #expect(run.tests.map(\.status) == [.fail, .pass, .pass, .pass, .fail, .pass, .pass])
        let failure = TortureFailure(worker: 1, index: 93, step: TortureStep(operation: .pinSlow, pages: 8, holdMicroseconds: 1717),
                                     observed: "EBUSY", allowed: ["succeeds"], providerDisturbed: true)
        let summary = TortureSummary(plan: plan, elapsed: 20, counts: ["pin.slow": ["succeeds": 30, "EBUSY": 1], "fork": ["succeeds": 9]],
                                     operationsPerWorker: [94, 156], failures: [failure], providerCycles: 3,
                                     invariantProblems: ["no_leaked_pins": "3 pinned pages never released"])
        #expect(summary.countRows == [["pin.slow", "succeeds", "30"], ["pin.slow", "EBUSY", "1"], ["fork", "succeeds", "9"]])
        let result = VariantResult(label: "series", selection: .full, run: run, runDirectory: URL(fileURLWithPath: "/tmp"))
        let lines = TortureReport(plan: plan, result: result, summary: summary, variantArguments: ["--baseline"]).lines()
        #expect(lines.contains("operations: 250 in 20.0 s, 12.5/s (worker 1: 94, worker 2: 156); provider: 3 unbind/rebind cycles"))
        #expect(lines.contains("verdict: FAIL (5 passed, 2 failed); seed 1"))
        #expect(lines.contains("first failure: worker 1 operation #93 (pin.slow 8 pages, held 1717 µs): EBUSY, allowed succeeds while the provider was unbinding or unbound"))
        #expect(lines.contains("invariant no_leaked_pins: 3 pinned pages never released"))
        #expect(lines.contains("reproduce: ./p2plab torture --seed 1 --workers 2 --duration 20 --ops 94 --baseline"))
        #expect(result.exitCode == LabExit.failed.rawValue)
    }

    @Test("the summary file round-trips")
    func summaryFile() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("torture-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let summary = TortureSummary(plan: TorturePlan(seed: 9, workers: 1, duration: 5, operations: 3, unbind: false), elapsed: 5,
                                     counts: ["fork": ["succeeds": 3]], operationsPerWorker: [3])
        try summary.write(into: directory)
        #expect(try TortureSummary.read(from: directory) == summary)
        #expect(summary.plan.arguments == ["--seed", "9", "--workers", "1", "--duration", "5", "--ops", "3", "--no-unbind"])
    }

    @Test("bad options exit 2", arguments: [["torture", "--workers", "0"], ["torture", "--duration", "0"], ["torture", "--ops", "0"],
                                             ["torture", "--check", "pin.*"], ["torture", "--seed", "-1"]])
    func usage(_ arguments: [String]) {
        #expect(throws: (any Error).self) { _ = try P2PLabCommand.parseAsRoot(arguments) }
    }

    /// A recorded guest KTAP of a two-worker run (cut down): worker 1 failed, a leak invariant failed.
    static let recordedKTAP = """
        KTAP version 1
        # torture: seed 1, 2 workers, 20 s
        # replay: p2plab torture --seed 1 --workers 2 --duration 20
        1..7
        # provider 0000:03:00.0 (driver nvme), available 67108864; RDMA device rxe0 (virtual DMA); stand-in HCA 0000:04:00.0
        # worker 1: 94 operations: pin.slow 31 (EBUSY 1, succeeds 30)
        # replay: p2plab torture --seed 1 --workers 2 --duration 20 --ops 94
        # FAIL: worker 1 operation #93 (pin.slow 8 pages, held 1717 µs): EBUSY, allowed succeeds
        not ok 1 torture.worker.1
        # worker 2: 156 operations: fork 9 (succeeds 9)
        ok 2 torture.worker.2
        # provider: 3 unbind/rebind cycles; unbind took 0.699–0.853 s (median 0.853 s), waiting for the pins held at the time
        ok 3 torture.provider_cycled
        # available: 67108864 at the start, 67108864 at the end
        ok 4 torture.available_restored
        # kernel FOLL_PIN pages during the run: 777 acquired, 774 released
        # FAIL: 3 pinned pages never released
        not ok 5 torture.no_leaked_pins
        ok 6 torture.no_splat
        # hung_task_timeout_secs was 20 during the run
        ok 7 torture.no_hung_task
        # operations: 250 in 20.0 s (12.5/s); provider: 3 unbind/rebind cycles
        """
}

/// What seed 1 gives worker 0, recorded when the schedule was written.
enum RecordedSchedule {
    static let seed1Worker0 = ["pin.slow 4 pages, held 89 µs", "mmap.p2pmem 8 pages, held 546 µs", "pin.fast 2 pages, held 1247 µs"]
}

@Suite("p2plab torture --shrink: the smaller runs it tries")
struct TortureShrinkTests {
    @Test("a failing worker: its prefix alone, then without the unbind loop, then nothing")
    func worker() {
        let plan = TorturePlan(seed: 3, workers: 4, duration: 30)
        let failure = TortureFailure(worker: 2, index: 9, step: TortureStep(operation: .fork, pages: 1, holdMicroseconds: 0),
                                     observed: "child signal 11", allowed: ["succeeds"], providerDisturbed: false)
        let first = TortureShrink.next(after: plan, failure: failure)
        #expect(first == TorturePlan(seed: 3, workers: 2, duration: 30, operations: 10))
        let second = first.flatMap { TortureShrink.next(after: $0, failure: failure) }
        #expect(second == TorturePlan(seed: 3, workers: 2, duration: 30, operations: 10, unbind: false))
        #expect(second.flatMap { TortureShrink.next(after: $0, failure: failure) } == nil)
    }

    @Test("an invariant failed: half the workers and half the time, down to one worker and 5 s")
    func invariant() {
        var plan = TorturePlan(seed: 3, workers: 5, duration: 30)
        var seen: [String] = []
        while let next = TortureShrink.next(after: plan, failure: nil) {
            seen.append("\(next.workers)×\(TorturePlan.number(next.duration))")
            plan = next
        }
        #expect(seen == ["3×15", "2×8", "1×5"])
    }
}

@Suite("A command line without some of its options")
struct DroppingOptionsTests {
    @Test("valued options go with their value, as two words or with =; the words named go; the rest stays in order")
    func dropsOptions() {
        #expect(dropping(["--versions"], from: ["test", "--versions", "v2,v3", "--check", "pin.*"]) == ["test", "--check", "pin.*"])
        #expect(dropping(["--versions"], from: ["test", "--versions=all", "--accel", "tcg"]) == ["test", "--accel", "tcg"])
        #expect(dropping(["--seed"], words: ["torture", "--no-unbind"], from: ["torture", "--seed", "5", "--no-unbind", "--baseline"]) == ["--baseline"])
        #expect(dropping(["--seed"], from: []) == [])
    }
}
