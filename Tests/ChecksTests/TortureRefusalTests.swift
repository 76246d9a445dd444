import Catalog
import Foundation
import LabSupport
import Testing
@testable import Checks

/// What the kernel does under a loaded host that the torture must expect. An EINVAL from the mmap
/// of p2pmem/allocate: the kernel's race between free_zone_device_folio() and p2pmem_alloc_mmap(),
/// accepted only when the test module counted a page with refcount 0 refused during that mmap. A
/// pin of only its first pages while the provider unbinds. The recorded runs: the CI failure
/// (before refusals named their call); a run on the series with the window widened by a delay after
/// p2pdma_page_free(), whose refusals name the mmap and whose console shows vm_insert_page()
/// refusing a page with refcount 0; a run of 8 workers beside two busy loops with QEMU on one host CPU.
@Suite("Torture: an mmap refused for a page being freed, a pin cut short by the unbind")
struct TortureRefusalTests {
    static func fixture(_ name: String) throws -> Data {
        try Data(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/torture/\(name)"))
    }

    static func summary(_ name: String) throws -> TortureSummary {
        try LabJSON.decoder.decode(TortureSummary.self, from: fixture(name))
    }

    @Test("the widened run: every EINVAL came from the mmap, and the kernel refused a P2PDMA page with refcount 0 each time")
    func recordedCause() throws {
        let widened = try Self.summary("widened-einval.torture.json")
        #expect(widened.failures.count == 2)
        for failure in widened.failures {
            #expect(failure.observed == "EINVAL")
            #expect(failure.call?.hasPrefix("the mmap of ") == true && failure.call?.hasSuffix("/p2pmem/allocate") == true)
        }
        let console = String(decoding: try Self.fixture("widened-einval.console.txt"), as: UTF8.self)
        let refusals = console.split(whereSeparator: \.isNewline).filter { $0.contains("vm_insert_page(") && $0.contains("= -EINVAL") }
        #expect(refusals.count == widened.failures.count)
        #expect(refusals.allSatisfy { $0.contains("page refcount now 0, is_zone_device 1") })
        // The CI failure: the same step kind and result, before the refusal named its call.
        let ci = try Self.summary("ci-einval.torture.json")
        let failure = try #require(ci.failures.first)
        #expect(failure.observed == "EINVAL" && failure.call == nil && !failure.providerDisturbed)
        #expect(failure.step.operation == .umemHold && failure.allowed == ["succeeds"])
    }

    @Test("an EINVAL from the mmap passes when the module counted a refusal during it, on a stable provider too")
    func witnessed() throws {
        let failure = try #require(try Self.summary("ci-einval.torture.json").failures.first)
        let observation = MapRefusal(errno: .EINVAL, zeroRefRefusalCounted: true).observation
        #expect(observation.label == TortureObservation.freedPageLabel)
        for disturbed in [false, true] {
            let judged = TortureWorker.judge(observation, want: .succeeds, disturbed: disturbed)
            #expect(judged.allowed && judged.label == "EINVAL (page being freed)")
        }
        // Without the module's count, the recorded failure stays a failure, with the same allowed list.
        let unwitnessed = TortureWorker.judge(MapRefusal(errno: .EINVAL, zeroRefRefusalCounted: false).observation, want: .succeeds,
                                              disturbed: failure.providerDisturbed)
        #expect(!unwitnessed.allowed)
        #expect(unwitnessed.label == failure.observed && unwitnessed.allowedLabels == failure.allowed)
        // While the provider is away EINVAL is no excuse either.
        #expect(!TortureWorker.judge(MapRefusal(errno: .EINVAL, zeroRefRefusalCounted: false).observation, want: .succeeds, disturbed: true).allowed)
    }

    @Test("only EINVAL is the race: another errno during a counted refusal is judged as it is")
    func otherErrno() {
        let observation = MapRefusal(errno: .ENOMEM, zeroRefRefusalCounted: true).observation
        #expect(observation.label == "ENOMEM")
        #expect(!TortureWorker.judge(observation, want: .succeeds, disturbed: false).allowed)
        #expect(TortureWorker.judge(observation, want: .succeeds, disturbed: true).allowed)
    }

    @Test("the run's accepted refusals must all have been counted by the module")
    func totals() {
        let none = FreedPageRefusals(acceptedPerWorker: [0, 0, 0], witnessed: 0)
        #expect(none.problem == nil && none.note == nil)
        let counted = FreedPageRefusals(acceptedPerWorker: [2, 1, 5], witnessed: 8)
        #expect(counted.problem == nil)
        #expect(counted.note?.hasPrefix("mmap of p2pmem: 8 refused with EINVAL for a page being freed (the module counted 8 ") == true)
        let overlapped = FreedPageRefusals(acceptedPerWorker: [1, 1], witnessed: 1)
        #expect(overlapped.problem?.contains("the module counted 1 vm_insert_page() refusals") == true)
        let unread = FreedPageRefusals(acceptedPerWorker: [1], witnessed: nil)
        #expect(unread.problem?.contains("cannot be read") == true)
        // A count with nothing accepted is reported, not failed.
        let unused = FreedPageRefusals(acceptedPerWorker: [0], witnessed: 1)
        #expect(unused.problem == nil && unused.note != nil)
    }

    @Test("a loaded run: a slow pin took 1 of 8 pages while the provider unbound; that is GUP stopping at a zapped page, and the module counted it")
    func partialPin() throws {
        let recorded = try Self.summary("loaded-partial-pin.torture.json")
        let failure = try #require(recorded.failures.first)
        #expect(failure.step.operation == .pinSlow && failure.step.pages == 8 && failure.providerDisturbed)
        let observation = TortureObservation.partlyPinned(pinned: 1, of: 8)
        #expect(observation.detail == failure.observed)
        let disturbed = TortureWorker.judge(observation, want: .succeeds, disturbed: true)
        #expect(disturbed.allowed && disturbed.label == "partly pinned")
        #expect(disturbed.allowedLabels.contains("partly pinned"))
        // With the provider bound every page is mapped: a short pin is still a failure.
        let stable = TortureWorker.judge(observation, want: .succeeds, disturbed: false)
        #expect(!stable.allowed && stable.allowedLabels == ["succeeds"])

        // The leak check's mismatch of that run: the module counted the partial pin, the workers'
        // successes did not; counted as "partly pinned" it is one of the pins taken.
        let problem = try #require(recorded.invariantProblems[TortureInvariant.noLeakedPins.rawValue])
        #expect(problem == "the module's counters took 8494 pins and umems, the workers saw 8493 succeed")
        var counts: [TortureOperation: [String: Int]] = [:]
        for (name, results) in recorded.counts {
            guard let operation = TortureOperation(rawValue: name) else { continue }
            counts[operation] = results.filter { $0.key != failure.observed }
        }
        #expect(TortureSetup.pinsAndUmemsTaken(counts) == 8493)
        counts[.pinSlow, default: [:]][disturbed.label, default: 0] += 1
        #expect(TortureSetup.pinsAndUmemsTaken(counts) == 8494)
    }
}
