import Foundation
import Catalog
import Checks
import KTAP
import KernelTree
import LabPipeline
import LabSupport
import Testing
@testable import P2PLab

/// A variant result made from KTAP text, as a run would leave it.
func variant(_ selection: PatchSelection, _ ktap: String, problem: String? = nil) -> VariantResult {
    VariantResult(label: selection.label, selection: selection, manifest: nil,
                  run: problem == nil ? KTAPParser.parse(ktap) : nil, runDirectory: URL(fileURLWithPath: "/tmp"),
                  problem: problem, ending: .exited(0), seconds: 1)
}

let passing = """
    KTAP version 1
    1..3
    ok 1 env.p2pmem_provider
    # errno: EREMOTEIO
    ok 2 regmr.p2pmem
    ok 3 kernfs.page_mkwrite_attribute
    """

let baselineFailing = """
    KTAP version 1
    1..3
    ok 1 env.p2pmem_provider
    # errno: EFAULT
    not ok 2 regmr.p2pmem
    not ok 3 kernfs.page_mkwrite_attribute
    """

/// v2 as the identity matcher reads it.
let v2Identity = IdentifiedSeries(patches: [
    IdentifiedPatch(subject: "kernfs: remove page_mkwrite() from vm_operations_struct", effects: [.kernfsDropsPageMkwrite(.refused)]),
    IdentifiedPatch(subject: "mm/gup: handle ZONE_DEVICE pages in folio_fast_pin_allowed()", effects: [.gupFastAcceptsZoneDevice]),
    IdentifiedPatch(subject: "mm/gup: allow FOLL_LONGTERM & FOLL_PCI_P2PDMA", effects: [.gupAllowsLongtermP2PDMA]),
    IdentifiedPatch(subject: "RDMA/umem: add support for P2P RDMA", effects: [.umemAsksForP2PDMA]),
])

@Suite("Comparison, ablation and bisect verdicts")
struct MatrixTests {
    @Test("the comparison shows what the series changes and passes when the series passes")
    func comparison() {
        let m = Matrix(results: [variant(.baseline, baselineFailing), variant(.full, passing)], identity: v2Identity)
        let table = m.comparisonTable()
        #expect(table.contains("regmr.p2pmem"))
        #expect(table.contains("FAIL EFAULT → pass"))
        let verdict = m.comparisonVerdict()
        #expect(verdict.exit == 0)
        #expect(verdict.line.hasPrefix("verdict: PASS: the series passes every check ("))
        #expect(!verdict.line.contains("(("), "one verdict line, not another one nested in it")
        #expect(verdict.line.contains("regmr.p2pmem, kernfs.page_mkwrite_attribute"))
        let failing = Matrix(results: [variant(.baseline, baselineFailing), variant(.full, baselineFailing)], identity: v2Identity)
        #expect(failing.comparisonVerdict().line.contains("does not pass (FAIL: "))
    }

    @Test("a series that changes nothing, fails, or could not be built is not a pass")
    func comparisonFailures() {
        #expect(Matrix(results: [variant(.baseline, passing), variant(.full, passing)], identity: v2Identity).comparisonVerdict().exit == 1)
        #expect(Matrix(results: [variant(.baseline, passing), variant(.full, baselineFailing)], identity: v2Identity).comparisonVerdict().exit == 1)
        #expect(Matrix(results: [variant(.baseline, passing), variant(.full, "", problem: "build failed")], identity: v2Identity).comparisonVerdict().exit == 125)
    }

    @Test("ablation cells that disagree with the expectation table are named")
    func ablation() {
        // Without patch 1, kernfs.page_mkwrite_attribute is predicted to fail; a pass there is a mismatch.
        let m = Matrix(results: [variant(PatchSelection(without: [1]), passing)], identity: v2Identity)
        #expect(m.mismatches() == ["regmr.p2pmem on without-1: expected fail, got pass",
                                   "kernfs.page_mkwrite_attribute on without-1: expected fail, got pass"])
        #expect(m.ablationVerdict().exit == 1)
        let right = Matrix(results: [variant(PatchSelection(without: [2]), passing)], identity: v2Identity)
        #expect(right.mismatches().isEmpty)
        #expect(right.ablationVerdict().exit == 0)
        #expect(right.ablationTable().contains("without-2"))
    }

    @Test("a fifth patch with no known effect: its cells say not predicted, and the ablation is never PASS")
    func unknownPatch() {
        var identity = v2Identity
        identity.patches.append(IdentifiedPatch(
            subject: "mm/gup: rework the pin loop", effects: [],
            unknown: UnknownChange(patch: "mm/gup: rework the pin loop", files: ["mm/gup.c"], functions: ["__gup_longterm_locked"])))
        #expect(identity.version == nil)
        let m = Matrix(results: [variant(PatchSelection(without: [2]), passing), variant(.full, passing)], identity: identity)
        #expect(m.mismatches().isEmpty)
        #expect(m.unpredicted().contains { $0.hasPrefix("regmr.p2pmem on series: not predicted") })
        #expect(!m.unpredicted().contains { $0.hasPrefix("kernfs.page_mkwrite_attribute") })
        #expect(m.ablationTable().contains("pass (not predicted)"))
        let verdict = m.ablationVerdict()
        #expect(verdict.exit != 0)
        #expect(!verdict.line.contains("PASS"))
        #expect(verdict.line.contains("mm/gup: rework the pin loop"))
        // Leaving the unknown patch out still leaves it in the reference: not predicted either.
        let left = Matrix(results: [variant(PatchSelection(without: [5]), passing)], identity: identity)
        #expect(!left.unpredicted().isEmpty)
        #expect(v2Identity.version == .v2)
    }

    @Test("bisect steps: a failed check or a crash is bad, an infrastructure failure is skipped")
    func stepVerdicts() {
        #expect(StepVerdict.of(variant(.full, passing), checks: ["regmr.*"]).0 == .good)
        #expect(StepVerdict.of(variant(.full, baselineFailing), checks: ["regmr.*"]).0 == .bad)
        #expect(StepVerdict.of(variant(.full, baselineFailing), checks: ["env.*"]).0 == .good)
        #expect(StepVerdict.of(variant(.full, "", problem: "boot timeout"), checks: []).0 == .skip)
        let crashed = "KTAP version 1\n1..2\nok 1 env.p2pmem_provider\n[ 9.1] Kernel panic - not syncing: Fatal exception\n"
        #expect(StepVerdict.of(variant(.full, crashed), checks: ["env.*"]).0 == .bad)
    }

    @Test("a variant that could not be tested exits its cause's own code, else 125")
    func problemExitCodes() {
        var broken = variant(.full, "", problem: "kernel build failed")
        broken.problemExit = .buildFailed
        #expect(broken.exitCode == 15)
        broken.problemExit = .missingDependency
        #expect(broken.exitCode == 3)
        broken.problemExit = nil
        #expect(broken.exitCode == 125)
        #expect(variant(.full, passing).exitCode == 0)
        #expect(variant(.full, baselineFailing).exitCode == 1)
    }

    @Test("globs", arguments: [
        ("pin.*", "pin.fast_path", true), ("pin.*", "regmr.anon", false), ("*", "x", true),
        ("regmr.p2pmem", "regmr.p2pmem", true), ("pin.longterm_p2pdma.?ast", "pin.longterm_p2pdma.fast", true),
    ])
    func globs(pattern: String, text: String, matches: Bool) {
        #expect(globMatches(pattern, text) == matches)
    }
}

@Suite("The versions matrix")
struct VersionMatrixTests {
    static func identity(_ version: SeriesVersion) -> IdentifiedSeries {
        IdentifiedSeries(patches: version.effects.effects.sorted().map { IdentifiedPatch(subject: $0.description, effects: [$0]) })
    }

    static func run(_ version: SeriesVersion, _ ktap: String) -> VersionRun {
        VersionRun(name: version.name, identity: identity(version), result: variant(.full, ktap))
    }

    static let v4 = """
        KTAP version 1
        1..2
        # expected WARNING from kernfs_fop_mmap (fs/kernfs/file.c): WARNING: CPU: 0 PID: 1 at fs/kernfs/file.c:484 kernfs_fop_mmap+0x1a9/0x1d0
        # errno: EINVAL
        ok 1 kernfs.page_mkwrite_attribute
        # observed: gup-fast serves LONGTERM|P2PDMA|WRITE|FAST on p2pmem: pinned by the slow path
        ok 2 pin.fast_path
        """

    @Test("each version's cells are checked against its own effects; the cells say what was seen")
    func matching() {
        let v2 = "KTAP version 1\n1..2\n# errno: EINVAL\nok 1 kernfs.page_mkwrite_attribute\n# observed: gup-fast serves LONGTERM|P2PDMA|WRITE|FAST on p2pmem: succeeds\nok 2 pin.fast_path\n"
        let m = VersionMatrix(runs: [Self.run(.v2, v2), Self.run(.v4, Self.v4)])
        #expect(m.mismatches().isEmpty)
        #expect(m.verdict().exit == 0)
        let table = m.table()
        #expect(table.contains("pass EINVAL+WARN"))
        #expect(table.contains("pass slow path"))
        #expect(table.contains("pass gup-fast"))
    }

    @Test("a failed cell fails the matrix; a version that could not be tested is 125")
    func failures() {
        let bad = Self.v4.replacingOccurrences(of: "ok 2 pin.fast_path", with: "not ok 2 pin.fast_path")
        let m = VersionMatrix(runs: [Self.run(.v4, bad)])
        #expect(m.mismatches() == ["pin.fast_path on v4: expected pass, got FAIL slow path"])
        #expect(m.verdict().exit == 1)
        let broken = VersionRun(name: "v3", identity: Self.identity(.v3), result: variant(.full, "", problem: "kernel build failed"))
        #expect(VersionMatrix(runs: [broken]).verdict().exit == 125)
    }

    @Test("an unknown patch in a version leaves its cells unpredicted: never PASS")
    func unknown() {
        var identity = Self.identity(.v5)
        identity.patches.append(IdentifiedPatch(
            subject: "kernfs: tidy kernfs_fop_mmap", effects: [],
            unknown: UnknownChange(patch: "kernfs: tidy kernfs_fop_mmap", files: ["fs/kernfs/file.c"], functions: ["kernfs_fop_mmap"])))
        let m = VersionMatrix(runs: [VersionRun(name: "v5", identity: identity, result: variant(.full, Self.v4))])
        #expect(m.unpredicted().count == 2)
        #expect(m.table().contains("(not predicted)"))
        #expect(!m.verdict().line.contains("PASS"))
        #expect(m.verdict().exit == 1)
    }
}

@Suite("Bisect step memory: an identical kernel and module reuse an earlier verdict")
struct StepMemoryTests {
    @Test("the key follows the hashes and what decides a verdict, and entries survive a new process")
    func memory() throws {
        func key(_ sums: [String], checks: [String] = ["pin.*"], identity: String = "1-2") -> String {
            StepMemory.key(sums: sums, machine: "lab", accel: "tcg", limits: .standard, checks: checks, binaryIdentity: identity)
        }
        let first = key(["aa11", "bb22"])
        #expect(first == key(["aa11", "bb22"]))
        #expect(first != key(["aa12", "bb22"]))
        #expect(first != key(["aa11", "bb22"], checks: ["regmr.*"]))
        #expect(first != key(["aa11", "bb22"], identity: "1-3"))
        let key = first

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("step-memory-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        StepMemory(directory: dir).remember(StepMemory.Entry(key: key, directory: "/runs/upto-2", bootOutcome: "exited"))
        let again = StepMemory(directory: dir)
        #expect(again.lookup(key) == StepMemory.Entry(key: key, directory: "/runs/upto-2", bootOutcome: "exited"))
        #expect(again.lookup("other") == nil)
    }

    @Test("builds fix timestamp, number, user and host, so the same source gives the same bzImage")
    func reproducible() {
        let names = KernelBuilder.reproducible.map { $0.split(separator: "=").first.map(String.init) ?? "" }
        #expect(names == ["KBUILD_BUILD_TIMESTAMP", "KBUILD_BUILD_VERSION", "KBUILD_BUILD_USER", "KBUILD_BUILD_HOST"])
    }
}

@Suite("Notes on patches with no known effect")
struct UnknownNoteTests {
    @Test("a plain test names the patch and the checks it leaves unpredicted; a patch left out is not mentioned")
    func notes() {
        var identity = v2Identity
        identity.patches.append(IdentifiedPatch(
            subject: "Documentation: p2pdma", effects: [],
            unknown: UnknownChange(patch: "Documentation: p2pdma", files: ["Documentation/driver-api/pci/p2pdma.rst"])))
        identity.patches.append(IdentifiedPatch(
            subject: "umem: tidy", effects: [],
            unknown: UnknownChange(patch: "umem: tidy", files: ["drivers/infiniband/core/umem.c"])))
        let notes = P2PLabCommand.Test.unknownNotes(identity, selection: .full)
        #expect(notes.count == 2)
        #expect(notes[0].hasSuffix("no check depends on that code"))
        #expect(notes[1].contains("not predicted: "))
        #expect(notes[1].contains("umem.p2p_capable_device"))
        #expect(!notes[1].contains("kernfs.close_attribute"))
        #expect(P2PLabCommand.Test.unknownNotes(identity, selection: PatchSelection(without: [6])).count == 1)
    }
}

@Suite("test --repeat and runs that tested nothing")
struct StabilityTests {
    @Test("a check whose verdict changes between runs is FLAKY and fails the run")
    func flaky() {
        let once = variant(.full, passing)
        let other = variant(.full, passing.replacingOccurrences(of: "ok 3 kernfs.page_mkwrite_attribute", with: "not ok 3 kernfs.page_mkwrite_attribute"))
        let stability = Stability(results: [once, other, once])
        #expect(stability.flaky() == ["kernfs.page_mkwrite_attribute"])
        #expect(stability.table().contains("FLAKY"))
        let verdict = stability.verdict()
        #expect(verdict.exit == LabExit.failed.rawValue)
        #expect(verdict.line.hasPrefix("verdict: FLAKY: 1 check(s)"))
    }

    @Test("the same verdicts in every run: the run's own verdict, said to hold")
    func stable() {
        let stability = Stability(results: [variant(.full, passing), variant(.full, passing)])
        #expect(stability.flaky().isEmpty)
        #expect(stability.verdict().exit == 0)
        #expect(stability.verdict().line.contains("the same in all 2 runs"))
    }

    @Test("every check skipped, or the module or provider missing, is exit 4, not a pass")
    func nothingTested() {
        let skipped = variant(.full, "KTAP version 1\n1..2\nok 1 env.module # SKIP test module not loaded\nok 2 pin.fast_path # SKIP test module not loaded\n")
        #expect(skipped.run?.verdict == .skipped)
        #expect(skipped.exitCode == LabExit.skipped.rawValue)
        #expect(skipped.nothingTested?.hasPrefix("every check was skipped") == true)
        let noModule = variant(.full, "KTAP version 1\n# module: none (loading /x.ko failed: ENOEXEC)\n1..2\nok 1 env.rdma_device\nok 2 env.module # SKIP loading /x.ko failed\n")
        #expect(noModule.run?.verdict == .pass)
        #expect(noModule.exitCode == LabExit.skipped.rawValue)
        #expect(noModule.nothingTested == "the test module is missing: loading /x.ko failed: ENOEXEC")
        #expect(variant(.full, passing).exitCode == 0)
    }
}

/// `--panic-on-warn`: a check whose operations WARN on the kernel under test is predicted CRASHED.
@Suite("panic_on_warn predictions follow content")
struct PanicOnWarnPredictionTests {
    func prediction(_ name: String, on kernel: KernelEffects, reference: KernelEffects) -> Prediction? {
        SuiteCatalog.check(named: name)?.prediction(on: kernel, reference: reference, panicOnWarn: true)
    }

    @Test("the rows that require a WARN crash: v3+ page_mkwrite, v5 ->close, the baseline's LONGTERM|P2PDMA; the rest are as without it")
    func rows() {
        for version in [SeriesVersion.v3, .v4, .v5] {
            #expect(prediction("kernfs.page_mkwrite_attribute", on: version.effects, reference: version.effects) == .crash, "\(version.name)")
        }
        #expect(prediction("kernfs.page_mkwrite_attribute", on: SeriesVersion.v2.effects, reference: SeriesVersion.v2.effects) == .pass)
        #expect(prediction("kernfs.close_attribute", on: SeriesVersion.v5.effects, reference: SeriesVersion.v5.effects) == .crash)
        #expect(prediction("kernfs.close_attribute", on: SeriesVersion.v4.effects, reference: SeriesVersion.v4.effects) == .pass)
        #expect(prediction("pin.longterm_p2pdma.fast", on: .baseline, reference: SeriesVersion.v2.effects) == .crash)
        #expect(prediction("pin.longterm_p2pdma.fast", on: SeriesVersion.v2.effects, reference: SeriesVersion.v2.effects) == .pass)
        #expect(prediction("regmr.p2pmem", on: .baseline, reference: SeriesVersion.v2.effects) == .fail)
        // Without the flag nothing is predicted to crash.
        #expect(SuiteCatalog.check(named: "kernfs.close_attribute")?.prediction(on: SeriesVersion.v5.effects, reference: SeriesVersion.v5.effects) == .pass)
    }

    @Test("an ablation cell CRASHED where the table predicts a crash agrees; a PASS there does not")
    func ablationCells() {
        var crashed = variant(.baseline, """
            KTAP version 1
            1..2
            # errno: EFAULT
            not ok 1 regmr.p2pmem
            not ok 2 pin.longterm_p2pdma.fast # ERROR CRASHED: Kernel panic - not syncing: kernel: panic_on_warn set ...
            """)
        crashed.run?.metadata[RunMetadata.Keys.panicOnWarn] = "1"
        #expect(crashed.panicOnWarn)
        let m = Matrix(results: [crashed], identity: v2Identity)
        #expect(m.mismatches().isEmpty, "\(m.mismatches())")
        var passed = variant(.baseline, """
            KTAP version 1
            1..1
            ok 1 pin.longterm_p2pdma.fast
            """)
        passed.run?.metadata[RunMetadata.Keys.panicOnWarn] = "1"
        #expect(Matrix(results: [passed], identity: v2Identity).mismatches() == ["pin.longterm_p2pdma.fast on baseline: expected CRASHED, got pass"])
    }
}

@Suite("--compare --panic-on-warn")
struct ComparePanicOnWarnTests {
    /// v5 by its effects: kernfs refuses ->page_mkwrite with a WARN, ->close WARNs, GUP and umem as v2.
    let v5Identity = IdentifiedSeries(patches: [
        IdentifiedPatch(subject: "kernfs: WARN on ->close", effects: [.kernfsWarnsOnClose]),
        IdentifiedPatch(subject: "kernfs: remove page_mkwrite() from vm_operations_struct", effects: [.kernfsDropsPageMkwrite(.warnedOnceAndRefused)]),
        IdentifiedPatch(subject: "mm/gup: allow FOLL_LONGTERM & FOLL_PCI_P2PDMA", effects: [.gupAllowsLongtermP2PDMA]),
        IdentifiedPatch(subject: "RDMA/umem: add support for P2P RDMA", effects: [.umemAsksForP2PDMA]),
    ])

    func panicking(_ selection: PatchSelection, _ ktap: String, crashed: [Int]) -> VariantResult {
        var result = variant(selection, ktap)
        for index in crashed { result.run?.tests[index].status = .crashed }
        result.run?.metadata[RunMetadata.Keys.panicOnWarn] = "1"
        return result
    }

    let ktap = """
        KTAP version 1
        1..3
        ok 1 pin.longterm_p2pdma.fast
        ok 2 kernfs.page_mkwrite_attribute
        ok 3 regmr.anon
        """

    @Test("the series' WARNing checks CRASHED where the table predicts it, the baseline's too: PASS, exit 0")
    func predictedCrashesPass() {
        let baseline = panicking(.baseline, ktap, crashed: [0])
        let series = panicking(.full, ktap, crashed: [1])
        #expect(series.exitCode == LabExit.crashed.rawValue)
        let verdict = Matrix(results: [baseline, series], identity: v5Identity).comparisonVerdict()
        #expect(verdict.exit == 0, "\(verdict.line)")
        #expect(verdict.line.contains("crashes only where panic_on_warn predicts (kernfs.page_mkwrite_attribute)"), "\(verdict.line)")
        #expect(Matrix(results: [baseline, series], identity: v5Identity).comparisonTable().contains("CRASHED → pass"))
    }

    @Test("a series crash the table does not predict still fails the comparison")
    func unpredictedCrashFails() {
        let baseline = panicking(.baseline, ktap, crashed: [0])
        let series = panicking(.full, ktap, crashed: [1, 2])
        let verdict = Matrix(results: [baseline, series], identity: v5Identity).comparisonVerdict()
        #expect(verdict.exit == LabExit.failed.rawValue)
        #expect(verdict.line.hasPrefix("verdict: FAIL: the series does not pass"))
    }
}

@Suite("bisect and a crash")
struct BisectCrashTests {
    @Test("a chosen check that crashed is bad (git bisect run gets 1, never the 7 of test or 125), even when the others ran after a reboot")
    func crashedIsBad() {
        let run = variant(.full, """
            KTAP version 1
            1..2
            not ok 1 regmr.p2pmem # ERROR CRASHED: Kernel panic - not syncing: Fatal exception
            ok 2 regmr.anon
            """)
        #expect(run.exitCode == 7)
        let (verdict, why) = StepVerdict.of(run, checks: ["regmr.*"])
        #expect(verdict == .bad)
        #expect(why.hasPrefix("regmr.p2pmem CRASHED"))
        #expect(StepVerdict.gitBisectRunExit(verdict, run) == 1)
    }
}
