import Catalog
import CP2PLabUAPI
import Foundation
import KTAP
import KernelConsole
import LabSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `p2plab torture` in the guest: workers that map, pin, register and fork on p2pmem and anonymous
/// memory from a seeded schedule while a loop unbinds and rebinds the provider's driver; every
/// result is judged against the expectation table, then the invariants are checked (p2pmem back in
/// the pool, no held or leaked pins, no splat, no hung task). KTAP on `emit`, one subtest per
/// worker and one per invariant.
public final class TortureRun: @unchecked Sendable {
    public let plan: TorturePlan
    let ctx: CheckContext
    let kernelLog: KmsgFollower

    /// Errnos (and the child's SIGBUS) an operation may also see while the provider is unbinding or
    /// unbound: the allocate file is gone (ENOENT), kernfs deactivated it or the pgmap is dying
    /// (ENODEV, p2pmem_alloc_mmap), the mapping was zapped by pci_p2pdma_unmap_mappings() so GUP
    /// faults on it (EFAULT, or a pin of only the pages GUP took before the zap: `partlyPinned`),
    /// the child touches a zapped page (SIGBUS); and while it is bound again,
    /// pci_p2pdma_add_resource() publishes the p2pmem group with an empty pool before it adds the
    /// CMB to it (ENOMEM from gen_pool_alloc).
    static let providerGone: [Observation] = [.refused(.ENOENT), .refused(.ENODEV), .refused(.EFAULT), .refused(.ENOMEM)]
    static let childSIGBUS = "child SIGBUS"

    /// How long an unbind may take once nothing holds the provider's pages (TCG and KASAN included).
    static let unbindBound = 60.0
    /// The hung-task timeout during the run: an unbind blocked this long is reported.
    static let hungTaskTimeout = 20

    public init(plan: TorturePlan, context: CheckContext) {
        self.plan = plan
        self.ctx = context
        kernelLog = KmsgFollower()
    }

    /// Runs the torture and writes its KTAP; returns the kselftest exit code and the summary.
    public func run(emit: @escaping @Sendable (String) -> Void) -> (LabExit, TortureSummary) {
        let writer = KTAPWriter(emit: emit)
        var summary = TortureSummary(plan: plan)
        writer.header()
        writer.diagnostic("torture: seed \(plan.seed), \(plan.workers) workers, \(TorturePlan.number(plan.duration)) s"
            + (plan.operations.map { ", the first \($0) operations of each" } ?? "") + (plan.unbind ? "" : ", no unbind"))
        writer.diagnostic("replay: p2plab torture \(plan.arguments.joined(separator: " "))")
        writer.plan(plan.testNames.count)
        let setup: TortureSetup
        do {
            setup = try TortureSetup(ctx, plan: plan)
        } catch {
            let reason = "\(error)"
            for (index, name) in plan.testNames.enumerated() { writer.result(index + 1, name, .skip, reason: reason) }
            return (error is CheckFailure ? .failed : .skipped, summary)
        }
        for line in setup.notes { writer.diagnostic(line) }

        let start = monotonicSeconds()
        let deadline = start + plan.duration
        let stop = StopFlag()
        let provider = ProviderLoop(setup: setup, schedule: TortureSchedule(seed: plan.seed), enabled: plan.unbind, stop: stop)
        let providerThread = provider.start()
        let workers = (0..<plan.workers).map { TortureWorker(index: $0, setup: setup, plan: plan, provider: provider.state, stop: stop, deadline: deadline) }
        let group = DispatchGroup()
        for worker in workers {
            group.enter()
            let thread = Thread {
                worker.run()
                group.leave()
            }
            thread.stackSize = 4 << 20
            thread.start()
        }
        // The workers end at the deadline; one stuck in the kernel is reported, not waited for.
        let workersDone = group.wait(timeout: .now() + plan.duration + Self.unbindBound + 30) == .success
        let elapsed = monotonicSeconds() - start
        stop.set()
        let providerDone = providerThread.wait(seconds: Self.unbindBound + 40)
        summary.elapsed = elapsed
        summary.providerCycles = provider.cycles

        // Subtests per worker.
        var anyFailure = false
        var warnings = Set<WarningSite>()
        let reports = workers.map { $0.report() }
        let refusals = FreedPageRefusals(
            acceptedPerWorker: reports.map { $0.counts.values.reduce(0) { $0 + ($1[TortureObservation.freedPageLabel] ?? 0) } },
            witnessed: setup.moduleStats().map { $0.zeroRefRefusals &- setup.startStats.zeroRefRefusals })
        if let note = refusals.note { writer.diagnostic(note) }
        for (worker, report) in zip(workers, reports) {
            warnings.formUnion(report.expectedWarnings)
            summary.operationsPerWorker.append(report.operations)
            for (operation, results) in report.counts {
                for (result, count) in results { summary.counts[operation.rawValue, default: [:]][result, default: 0] += count }
            }
            let number = worker.index + 1
            writer.diagnostic("worker \(number): \(report.operations) operations: " + report.countLine)
            if let failure = report.failure {
                summary.failures.append(failure)
                anyFailure = true
                var prefix = plan
                prefix.operations = failure.index + 1
                writer.diagnostic("replay: p2plab torture \(prefix.arguments.joined(separator: " "))")
                writer.diagnostic("FAIL: \(failure.line)")
                writer.result(number, "torture.worker.\(number)", .fail)
            } else if !workersDone && !report.finished {
                anyFailure = true
                writer.diagnostic("FAIL: worker \(number) still in operation #\(report.operations) (\(report.current.map(\.description) ?? "?")) \(Int(plan.duration + Self.unbindBound + 30)) s after the start")
                writer.result(number, "torture.worker.\(number)", .fail)
            } else if report.operations == 0 {
                anyFailure = true
                writer.diagnostic("FAIL: worker \(number) did no operation")
                writer.result(number, "torture.worker.\(number)", .fail)
            } else if let problem = refusals.problem, refusals.acceptedPerWorker[worker.index] > 0 {
                anyFailure = true
                writer.diagnostic("FAIL: worker \(number): \(problem)")
                writer.result(number, "torture.worker.\(number)", .fail)
            } else {
                writer.result(number, "torture.worker.\(number)", .pass)
            }
        }

        // Invariants, each its own subtest.
        var number = plan.workers
        func invariant(_ which: TortureInvariant, _ problem: String?, notes: [String], skip: String? = nil) {
            number += 1
            for line in notes { writer.diagnostic(line) }
            if let skip {
                writer.result(number, which.testName, .skip, reason: skip)
                return
            }
            if let problem {
                anyFailure = true
                summary.invariantProblems[which.rawValue] = problem
                writer.diagnostic("FAIL: \(problem)")
                writer.result(number, which.testName, .fail)
            } else {
                writer.result(number, which.testName, .pass)
            }
        }

        let cycle = provider.report(done: providerDone)
        if plan.unbind {
            invariant(.providerCycled, cycle.problem, notes: cycle.notes)
        } else {
            invariant(.providerCycled, nil, notes: [], skip: "--no-unbind: the provider stays bound")
        }

        // Once the provider is bound again and everything is released, the pool is whole.
        let settled = cycle.problem == nil && providerDone
        let available = setup.available()
        let availableNotes = ["available: \(setup.startAvailable) at the start, \(available.map(String.init) ?? "no p2pmem") at the end"
            + (provider.cycles > 0 ? " (the pool is new after each rebind: this compares the last binding's)" : "")]
        if !settled {
            invariant(.availableRestored, nil, notes: availableNotes, skip: "the provider is not bound again")
        } else if waitUntil(seconds: 10, { setup.available() == setup.startAvailable }) {
            invariant(.availableRestored, nil, notes: availableNotes)
        } else {
            invariant(.availableRestored, "p2pmem available is \(setup.available().map(String.init) ?? "gone") with everything released, \(setup.startAvailable) at the start: pages did not go back to the pool", notes: availableNotes)
        }

        let leaks = setup.leakReport(workers: workers)
        invariant(.noLeakedPins, leaks.problem, notes: leaks.notes)

        pause(seconds: 0.5)
        let lines = kernelLog.read()
        let found = lines.compactMap { line in ConsoleScanner.classify(line).map { (kind: $0, line: line) } }
        let hung = found.filter { $0.kind == .hungTask }.map(\.line)
        var splatsFound = found.filter { $0.kind != .hungTask }.map(\.line)
        var expected: [String] = []
        for site in warnings {
            // WARN_ON_ONCE: the refusal the table predicts WARNs once per boot, not per operation.
            if let index = splatsFound.firstIndex(where: site.matches) { expected.append("expected WARNING from \(site): \(splatsFound.remove(at: index))") }
        }
        invariant(.noSplat, splatsFound.isEmpty ? nil : "the kernel reported \(splatsFound.count): \(splatsFound.prefix(3).joined(separator: " | "))",
                  notes: expected + splatsFound.map { "splat: \($0)" })
        if let tunables = setup.hungTask {
            tunables.restore(nil)
            invariant(.noHungTask, hung.isEmpty ? nil : "hung-task report: \(hung.prefix(2).joined(separator: " | "))",
                      notes: ["hung_task_timeout_secs was \(Self.hungTaskTimeout) during the run"] + hung.map { "kernel: \($0)" })
        } else {
            invariant(.noHungTask, nil, notes: [], skip: "this kernel has no hung-task detector (CONFIG_DETECT_HUNG_TASK)")
        }
        writer.diagnostic(String(format: "operations: %d in %.1f s (%.1f/s); provider: %d unbind/rebind cycles",
                                 summary.operations, elapsed, summary.operationsPerSecond, summary.providerCycles))
        return (anyFailure ? .failed : .success, summary)
    }
}

/// Set once, read by every loop.
final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var stopped = false
    func set() { lock.withLock { stopped = true } }
    var isSet: Bool { lock.withLock { stopped } }
}

/// What the workers share: the module, the provider, the RDMA device, the instruments' start values.
final class TortureSetup: @unchecked Sendable {
    let ctx: CheckContext
    let modulePath: String
    let provider: P2PMemProvider
    let driver: String
    let standIn: PCIAddress
    let verbs: VerbsContext
    let rdmaKind: DeviceKind
    let startAvailable: UInt64
    let startPins: (acquired: UInt64, released: UInt64)
    let startStats: ModuleStats
    let hungTask: HungTaskTunables?
    private(set) var notes: [String] = []

    init(_ ctx: CheckContext, plan: TorturePlan) throws {
        self.ctx = ctx
        let module = try ctx.requireModule()
        modulePath = module.path
        provider = try ctx.requireProvider()
        let rdma = try ctx.requireRDMA()
        rdmaKind = rdma.kind
        do { verbs = try Verbs.open(rdma.name) } catch { throw CheckFailure("opening \(rdma.name): \(error)") }
        let link = ctx.sysfs.path("bus/pci/devices/\(provider.address)/driver")
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: link) else {
            throw CheckSkip("\(provider.address) has no driver bound")
        }
        driver = URL(fileURLWithPath: target).lastPathComponent
        standIn = Suite.standInDevice(ctx, provider.address)
        guard let available = ctx.sysfs.provider(provider.address)?.available else { throw CheckFailure("no p2pmem/available for \(provider.address)") }
        startAvailable = available
        guard let pins = Self.follPins() else { throw CheckFailure("/proc/vmstat has no nr_foll_pin_acquired/released") }
        startPins = pins
        guard case .success(let stats) = module.stats() else { throw CheckFailure("the module's STATS ioctl failed") }
        startStats = stats
        // The positive control of the leak check: a held pin must show in the module's counters.
        let control = try MappedRegion.anonymous(length: pageSize)
        guard case .success(let held) = module.pinResult(address: control.address, pages: 1, flags: [.longterm, .write, .hold]) else {
            throw CheckFailure("the control pin of anonymous memory failed")
        }
        let during = try? module.stats().get()
        _ = try? module.release(handle: held.handle)
        let after = try? module.stats().get()
        guard let during, let after, during.heldPins == stats.heldPins + 1, during.pins == stats.pins + 1, after.heldPins == stats.heldPins else {
            throw CheckError("the module's counters do not count: a held control pin showed \(during.map(\.description) ?? "nothing"), after its release \(after.map(\.description) ?? "nothing")")
        }
        if stats.heldPins != 0 || stats.heldUmems != 0 { throw CheckFailure("the module holds pins or umems before the torture: \(stats)") }
        if let tunables = try? HungTaskTunables.read(ctx.sysfs) {
            try tunables.arm(timeout: TortureRun.hungTaskTimeout)
            hungTask = tunables
        } else {
            hungTask = nil
        }
        notes = [
            "provider \(provider.address) (driver \(driver)), available \(startAvailable); RDMA device \(rdma.name) (\(rdma.kind.rawValue)); stand-in HCA \(standIn)",
            "control: a held anonymous pin showed in the module's counters (\(during.heldPins) held, \(during.pins) taken since load)",
            stats.zeroRefProbe
                ? "witness: the module's kretprobe on vm_insert_page() is armed; an EINVAL from the mmap of p2pmem passes only when it counted a page with refcount 0 refused during that mmap"
                : "witness: the module's kretprobe on vm_insert_page() is not armed (its load message says why); an EINVAL from the mmap of p2pmem fails its worker",
        ]
        _ = plan
    }

    func available() -> UInt64? { ctx.sysfs.provider(provider.address)?.available }

    /// The module's STATS, through a file of its own.
    func moduleStats() -> ModuleStats? {
        guard let module = try? TestModule() else { return nil }
        return try? module.stats().get()
    }

    var allocatePath: String { ctx.sysfs.allocatePath(provider.address) }

    /// `nr_foll_pin_acquired` and `nr_foll_pin_released` of /proc/vmstat: every FOLL_PIN in the kernel.
    /// Each CPU keeps a part of every counter until it folds it in (about once a second, later when
    /// idle): a pin released on one CPU could show while its acquisition on the other did not yet,
    /// or a release from before the start show up during the run. Writing vm.stat_refresh folds every
    /// CPU's part first (the kernel's own way to read exact counts); without it (not root, an old
    /// kernel) the counts are read as they are.
    static func follPins() -> (acquired: UInt64, released: UInt64)? {
        _ = writeSysfs("/proc/sys/vm/stat_refresh", "1")
        guard let text = try? String(contentsOfFile: "/proc/vmstat", encoding: .utf8) else { return nil }
        var acquired: UInt64?, released: UInt64?
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            guard parts.count == 2 else { continue }
            if parts[0] == "nr_foll_pin_acquired" { acquired = UInt64(parts[1]) }
            if parts[0] == "nr_foll_pin_released" { released = UInt64(parts[1]) }
        }
        guard let acquired, let released else { return nil }
        return (acquired, released)
    }

    /// The pins and umems a worker's counts say the module took: every PIN and UMEM that succeeded,
    /// and every PIN that took only its first pages (the module counts it; the step released it).
    static func pinsAndUmemsTaken(_ counts: [TortureOperation: [String: Int]]) -> Int {
        [TortureOperation.pinFast, .pinSlow, .umemHold].reduce(0) {
            $0 + (counts[$1]?["succeeds"] ?? 0) + (counts[$1]?[TortureObservation.partlyPinnedLabel] ?? 0)
        }
    }

    /// Nothing held by the module, and every FOLL_PIN taken during the run released; both counted some.
    func leakReport(workers: [TortureWorker]) -> (problem: String?, notes: [String]) {
        guard let module = try? TestModule(), case .success(let stats) = module.stats() else {
            return ("the module's STATS cannot be read at the end", [])
        }
        var notes = ["module at the end: \(stats); at the start: \(startStats)"]
        var problems: [String] = []
        if stats.heldPins != 0 || stats.heldUmems != 0 || stats.heldPages != 0 {
            problems.append("the module still holds \(stats.heldPins) pins (\(stats.heldPages) pages) and \(stats.heldUmems) umems with every worker done")
        }
        // Every pin and umem the workers saw succeed went through the counters, and nothing else did
        // (besides the control pin of the setup, which proved that they count).
        let taken = Int(stats.pins - startStats.pins) + Int(stats.umems - startStats.umems) - 1
        let succeeded = workers.map { Self.pinsAndUmemsTaken($0.report().counts) }.reduce(0, +)
        notes.append("the module counted \(taken) pins and umems during the run; the workers saw \(succeeded) succeed")
        if taken != succeeded { problems.append("the module's counters took \(taken) pins and umems, the workers saw \(succeeded) succeed") }
        // Released pins can lag an instant behind (an MR being torn down): look a few times.
        var delta: (acquired: UInt64, released: UInt64) = (0, 0)
        _ = waitUntil(seconds: 3) {
            guard let now = TortureSetup.follPins() else { return false }
            delta = (now.acquired &- self.startPins.acquired, now.released &- self.startPins.released)
            return delta.acquired == delta.released
        }
        notes.append("kernel FOLL_PIN pages during the run: \(delta.acquired) acquired, \(delta.released) released")
        if delta.acquired == 0 { problems.append("nr_foll_pin_acquired did not grow: the run pinned nothing the kernel counted") }
        if delta.acquired != delta.released {
            problems.append("\(Int64(bitPattern: delta.acquired &- delta.released)) pinned pages never released (nr_foll_pin_acquired − nr_foll_pin_released grew by that much with nothing held)")
        }
        return (problems.isEmpty ? nil : problems.joined(separator: "; "), notes)
    }
}

/// Whether the provider is bound and stable, and a counter that changes whenever it is not.
final class ProviderState: @unchecked Sendable {
    private let lock = NSLock()
    private var epoch = 0
    private var stable = true

    func snapshot() -> (epoch: Int, stable: Bool) { lock.withLock { (epoch, stable) } }
    func disturb() { lock.withLock { epoch += 1; stable = false } }
    func settle() { lock.withLock { epoch += 1; stable = true } }
}

/// The loop that unbinds and rebinds the provider's driver on the seed's schedule.
final class ProviderLoop: @unchecked Sendable {
    let setup: TortureSetup
    let schedule: TortureSchedule
    let enabled: Bool
    let stop: StopFlag
    let state = ProviderState()
    private let lock = NSLock()
    private var _cycles = 0
    private var unbindTimes: [Double] = []
    private var problem: String?

    init(setup: TortureSetup, schedule: TortureSchedule, enabled: Bool, stop: StopFlag) {
        self.setup = setup
        self.schedule = schedule
        self.enabled = enabled
        self.stop = stop
    }

    var cycles: Int { lock.withLock { _cycles } }

    func start() -> Joinable {
        let done = Joinable()
        let thread = Thread { [self] in
            if enabled { loop() }
            done.finish()
        }
        thread.start()
        return done
    }

    private func fail(_ text: String) { lock.withLock { if problem == nil { problem = text } } }

    private func loop() {
        let address = setup.provider.address.description
        let drivers = setup.ctx.sysfs.path("bus/pci/drivers/\(setup.driver)")
        for cycle in schedule.providerCycles() {
            if sleepUnlessStopped(Double(cycle.boundMilliseconds) / 1000) { return }
            state.disturb()
            let started = monotonicSeconds()
            var pid: Int32 = 0
            let rc = p2plab_sysfs_write_in_child(drivers + "/unbind", address, address.utf8.count, &pid)
            guard rc == 0 else { fail("fork for the unbind failed: \(Errno(rawValue: -rc))"); state.settle(); return }
            var status: Int32 = 0
            var ended = false
            while monotonicSeconds() - started < TortureRun.unbindBound {
                if p2plab_poll_child(pid, &status) != 0 { ended = true; break }
                usleep(2_000)
            }
            guard ended else {
                // Leave the child in D state: nothing can make it let go, and the run must still report.
                fail(String(format: "unbind of %@ still blocked after %.0f s (pid %d)", address, TortureRun.unbindBound, pid)
                    + ": something keeps a reference to the provider's pages")
                stop.set()
                return
            }
            let took = monotonicSeconds() - started
            let exit = WaitStatus(status)
            if !exit.exitedCleanly {
                fail("unbind of \(address) failed: \(exit.signal.map { "signal \($0)" } ?? Errno(rawValue: (status >> 8) & 0xff).name)")
                state.settle()
                return
            }
            lock.withLock { unbindTimes.append(took) }
            if sleepUnlessStopped(Double(cycle.unboundMilliseconds) / 1000, always: true) {}
            if case .failure(let errno) = writeSysfs(drivers + "/bind", address) {
                fail("binding \(address) to \(setup.driver) again failed: \(errno)")
                return
            }
            guard waitUntil(seconds: 30, { self.setup.ctx.sysfs.provider(self.setup.provider.address)?.published == true }) else {
                fail("p2pmem of \(address) not published 30 s after the rebind")
                return
            }
            lock.withLock { _cycles += 1 }
            state.settle()
            if stop.isSet { return }
        }
    }

    /// Sleeps, and says whether the run is to stop (at once unless `always`).
    private func sleepUnlessStopped(_ seconds: Double, always: Bool = false) -> Bool {
        let end = monotonicSeconds() + seconds
        while monotonicSeconds() < end {
            if !always && stop.isSet { return true }
            usleep(10_000)
        }
        return !always && stop.isSet
    }

    func report(done: Bool) -> (problem: String?, notes: [String]) {
        lock.withLock {
            var notes = ["provider: \(_cycles) unbind/rebind cycles"]
            if let longest = unbindTimes.max(), let shortest = unbindTimes.min() {
                notes[0] += String(format: "; unbind took %.3f–%.3f s (median %.3f s), waiting for the pins held at the time",
                                   shortest, longest, unbindTimes.sorted()[unbindTimes.count / 2])
            }
            if let problem { return (problem, notes) }
            if !done { return ("the provider loop did not finish its cycle", notes) }
            if _cycles == 0 { return ("the provider was never unbound and bound again: run longer (--duration)", notes) }
            return (nil, notes)
        }
    }
}

/// Set once by a thread that ends; waited for with a bound.
final class Joinable: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    func finish() { done.signal() }
    func wait(seconds: Double) -> Bool { done.wait(timeout: .now() + seconds) == .success }
}

/// What one worker did.
struct WorkerReport {
    var operations = 0
    var counts: [TortureOperation: [String: Int]] = [:]
    var failure: TortureFailure?
    var expectedWarnings = Set<WarningSite>()
    var finished = false
    var current: TortureStep?

    var countLine: String {
        TortureOperation.allCases.compactMap { operation in
            guard let results = counts[operation], !results.isEmpty else { return nil }
            let total = results.values.reduce(0, +)
            return "\(operation.rawValue) \(total) (" + results.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") + ")"
        }.joined(separator: ", ")
    }
}

/// One worker: its schedule's steps, one after the other, until the deadline.
final class TortureWorker: @unchecked Sendable {
    let index: Int
    let setup: TortureSetup
    let plan: TorturePlan
    let provider: ProviderState
    let stop: StopFlag
    let deadline: Double
    private let lock = NSLock()
    private var state = WorkerReport()
    /// The call the current step made last (only this worker's thread touches it): a refusal names
    /// it, so an errno that several calls of a step can return says which one did.
    private var call = ""

    init(index: Int, setup: TortureSetup, plan: TorturePlan, provider: ProviderState, stop: StopFlag, deadline: Double) {
        self.index = index
        self.setup = setup
        self.plan = plan
        self.provider = provider
        self.stop = stop
        self.deadline = deadline
    }

    func report() -> WorkerReport { lock.withLock { state } }

    func run() {
        // Its own open file: the module's holds are per file, and closing it at the end releases
        // whatever a failed step left behind (after the leak check has seen it).
        guard let module = try? TestModule() else {
            lock.withLock {
                state.failure = TortureFailure(worker: index + 1, index: 0, step: TortureStep(operation: .pinFast, pages: 0, holdMicroseconds: 0),
                                               observed: "cannot open the module's file", allowed: [], providerDisturbed: false)
            }
            return
        }
        var steps = TortureSchedule(seed: plan.seed).steps(worker: index)
        var number = 0
        while monotonicSeconds() < deadline, !stop.isSet, number < (plan.operations ?? Int.max), let step = steps.next() {
            lock.withLock { state.current = step }
            let before = provider.snapshot()
            let (operation, observation) = perform(step, module: module)
            let after = provider.snapshot()
            let disturbed = !before.stable || !after.stable || before.epoch != after.epoch
            let judged = judge(operation, observation, disturbed: disturbed)
            lock.withLock {
                state.operations += 1
                state.counts[step.operation, default: [:]][judged.label, default: 0] += 1
                if let site = judged.warning { state.expectedWarnings.insert(site) }
                if !judged.allowed, state.failure == nil {
                    let refusedBy: String? = if case .result(.refused) = observation { call } else { nil }
                    state.failure = TortureFailure(worker: index + 1, index: number, step: step, observed: observation.detail,
                                                   allowed: judged.allowedLabels, providerDisturbed: disturbed, call: refusedBy)
                }
            }
            if !judged.allowed { break }
            number += 1
        }
        lock.withLock {
            state.finished = true
            state.current = nil
        }
    }

    /// What a step's result means: its label in the counts, and whether the table allows it now.
    struct Judgement {
        var label: String
        var allowed: Bool
        var allowedLabels: [String]
        var warning: WarningSite?
    }

    func judge(_ operation: KernelOperation, _ observation: TortureObservation, disturbed: Bool) -> Judgement {
        let device: DeviceKind? = if case .registerMR = operation { setup.rdmaKind } else { nil }
        guard let want = ExpectationTable.outcome(for: operation, device: device, on: setup.ctx.reference) else {
            return Judgement(label: observation.label, allowed: false, allowedLabels: ["(no row in the expectation table for \(operation))"])
        }
        return Self.judge(observation, want: want, disturbed: disturbed)
    }

    /// The judgement of `observation` against the table's outcome `want`.
    static func judge(_ observation: TortureObservation, want: Outcome, disturbed: Bool) -> Judgement {
        var labels = [Self.label(want)]
        var allowed: Bool
        switch observation {
        case .result(let seen):
            allowed = seen.matches(want)
            // The torture judges the result, not the path: pin.fast_path tells gup-fast from the slow path.
            if case .fellBackToSlowPath = want.result, case .succeeded = seen { allowed = true }
        case .freedPageRefused:
            // The kernel's race, witnessed by the module during this very mmap (FreedPageRefusals).
            allowed = true
        case .childSignal, .failed, .partlyPinned:
            allowed = false
        }
        if disturbed {
            labels += Self.gone
            switch observation {
            case .result(let seen): allowed = allowed || TortureRun.providerGone.contains(seen)
            case .childSignal(let signal): allowed = allowed || signal == SIGBUS
            // GUP stopped at a page that pci_p2pdma_unmap_mappings() zapped (EFAULT) and returned
            // how many it had pinned before it.
            case .partlyPinned: allowed = true
            case .failed, .freedPageRefused: break
            }
        }
        return Judgement(label: observation.label, allowed: allowed, allowedLabels: labels, warning: want.warning)
    }

    static let gone = TortureRun.providerGone.map(\.description) + [TortureRun.childSIGBUS, TortureObservation.partlyPinnedLabel]

    static func label(_ outcome: Outcome) -> String {
        switch outcome.result {
        case .fellBackToSlowPath: "succeeds"
        default: Outcome(outcome.result).description
        }
    }

    /// Does one step; the operation it judges against and what it saw.
    func perform(_ step: TortureStep, module: TestModule) -> (KernelOperation, TortureObservation) {
        let length = step.pages * pageSize
        let hold = { _ = usleep(UInt32(step.holdMicroseconds)) }
        switch step.operation {
        case .mmapP2PMem:
            switch map(length, module: module) {
            case .success(let region):
                hold()
                region.unmap()
                return (.mmapResource, .result(.succeeded))
            case .failure(let refusal):
                return (.mmapResource, refusal.observation)
            }
        case .pinFast, .pinSlow:
            let flags: PinFlags = step.operation == .pinFast ? [.longterm, .p2pdma, .write, .fast] : [.longterm, .p2pdma, .write]
            let operation = KernelOperation.pin(.p2pmem, flags)
            let region: MappedRegion
            switch map(length, module: module) {
            case .success(let mapped): region = mapped
            case .failure(let refusal): return (operation, refusal.observation)
            }
            defer { region.unmap() }
            call = "the module's PIN ioctl"
            switch module.pinResult(address: region.address, pages: step.pages, flags: flags.union(.hold)) {
            case .success(let report):
                hold()
                do { try module.release(handle: report.handle) } catch { return (operation, .failed("RELEASE of the pin: \(error)")) }
                if report.pinned < step.pages { return (operation, .partlyPinned(pinned: report.pinned, of: step.pages)) }
                if report.pinned != step.pages { return (operation, .failed("pinned \(report.pinned) of \(step.pages) pages")) }
                return (operation, .result(.succeeded))
            case .failure(let errno):
                return (operation, .result(.refused(errno)))
            }
        case .umemHold:
            let operation = KernelOperation.umemGet(writable: true)
            let region: MappedRegion
            switch map(length, module: module) {
            case .success(let mapped): region = mapped
            case .failure(let refusal): return (operation, refusal.observation)
            }
            defer { region.unmap() }
            call = "the module's UMEM ioctl (ib_umem_get)"
            switch module.umem(address: region.address, length: length, writable: true, dmaDevice: setup.standIn, hold: true) {
            case .success(let report):
                hold()
                do { try module.release(handle: report.handle) } catch { return (operation, .failed("RELEASE of the umem: \(error)")) }
                return (operation, .result(.succeeded))
            case .failure(let errno):
                return (operation, .result(.refused(errno)))
            }
        case .regMRP2PMem:
            let operation = KernelOperation.registerMR(.p2pmem, writable: true)
            let region: MappedRegion
            switch map(length, module: module) {
            case .success(let mapped): region = mapped
            case .failure(let refusal): return (operation, refusal.observation)
            }
            defer { region.unmap() }
            return (operation, register(region, hold: hold))
        case .regMRAnonymous:
            let operation = KernelOperation.registerMR(.anonymous, writable: true)
            guard case .success(let region) = MappedRegion._anonymous(length: length, populate: true) else {
                return (operation, .failed("mmap of \(length) bytes of anonymous memory: \(Errno.current)"))
            }
            defer { region.unmap() }
            return (operation, register(region, hold: hold))
        case .fork:
            let operation = KernelOperation.forkChildWritesP2PMem
            let region: MappedRegion
            switch map(length, module: module) {
            case .success(let mapped): region = mapped
            case .failure(let refusal): return (operation, refusal.observation)
            }
            defer { region.unmap() }
            var report = p2plab_fork_report()
            let rc = p2plab_fork_probe(region.base, step.pages, 0x746f_7274_7572_6500 | UInt64(index), &report)
            let status = WaitStatus(report.child_status)
            // A child killed before it reported closes the pipe unread: EPIPE, and its status says why.
            if rc == -EPIPE, let signal = status.signal { return (operation, .childSignal(signal)) }
            if rc != 0 { return (operation, .failed("fork: \(Errno(rawValue: -rc))")) }
            if let signal = status.signal { return (operation, .childSignal(signal)) }
            if !status.exitedCleanly || report.wrote == 0 { return (operation, .failed("the child ended with wait status \(report.child_status)")) }
            return (operation, .result(.succeeded))
        }
    }

    /// Maps `length` bytes of p2pmem; a refusal says whether the module counted a vm_insert_page()
    /// refusal of a page with refcount 0 while the mmap ran (read only when its probe is armed).
    private func map(_ length: Int, module: TestModule) -> Result<MappedRegion, MapRefusal> {
        call = "the mmap of \(setup.allocatePath)"
        let before = setup.startStats.zeroRefProbe ? (try? module.stats().get())?.zeroRefRefusals : nil
        switch MappedRegion._shared(path: setup.allocatePath, length: length, writable: true, offset: 0) {
        case .success(let region):
            return .success(region)
        case .failure(let errno):
            var counted = false
            if errno == .EINVAL, let before, let after = (try? module.stats().get())?.zeroRefRefusals { counted = after > before }
            return .failure(MapRefusal(errno: errno, zeroRefRefusalCounted: counted))
        }
    }

    private func register(_ region: MappedRegion, hold: () -> Void) -> TortureObservation {
        call = "ibv_reg_mr"
        switch setup.verbs.registerMRResult(address: region.base, length: region.length, writable: true) {
        case .success(let mr):
            hold()
            if case .failure(let errno) = mr.deregister() { return .failed("ibv_dereg_mr: \(errno)") }
            return .result(.succeeded)
        case .failure(let errno):
            return .result(.refused(errno))
        }
    }
}

/// What a torture step saw.
enum TortureObservation {
    /// What an operation of the expectation table did.
    case result(Observation)
    /// The forked child was killed by this signal.
    case childSignal(Int32)
    /// Something the table has no word for went wrong (a RELEASE that failed, a short pin).
    case failed(String)
    /// The mmap of p2pmem/allocate failed with EINVAL while the test module counted a vm_insert_page()
    /// refusal of a P2PDMA page whose refcount was 0: a page another worker was freeing (FreedPageRefusals).
    case freedPageRefused
    /// The PIN took fewer pages than asked: GUP returns how many it pinned before a page it could
    /// not fault in (pin_user_pages(): "may be less than the number requested").
    case partlyPinned(pinned: Int, of: Int)

    static let freedPageLabel = "EINVAL (page being freed)"
    static let partlyPinnedLabel = "partly pinned"

    /// The label, with the counts of a partial pin: what a failure line says.
    var detail: String {
        if case .partlyPinned(let pinned, let pages) = self { return "pinned \(pinned) of \(pages) pages" }
        return label
    }

    var label: String {
        switch self {
        case .freedPageRefused: Self.freedPageLabel
        case .partlyPinned: Self.partlyPinnedLabel
        case .result(let observation): observation.description
        case .childSignal(let signal): signal == SIGBUS ? TortureRun.childSIGBUS : "child signal \(signal)"
        case .failed(let why): why
        }
    }
}

/// A refused mmap of p2pmem/allocate, and whether the test module counted a vm_insert_page() refusal
/// of a P2PDMA page with refcount 0 while it ran.
struct MapRefusal: Error, Equatable {
    var errno: Errno
    var zeroRefRefusalCounted: Bool

    var observation: TortureObservation {
        errno == .EINVAL && zeroRefRefusalCounted ? .freedPageRefused : .result(.refused(errno))
    }
}

/// The mmaps of p2pmem/allocate refused with EINVAL for a page that was still being freed.
///
/// A race of the kernel under test (Linux 6.12, as of every kernel whose free_zone_device_folio()
/// resets a P2PDMA page's refcount after ->page_free), not of the series: when the last reference to
/// a p2pmem page goes (a worker's munmap), free_zone_device_folio() calls p2pdma_page_free(), which
/// gives the page back to the provider's gen_pool, and only then sets the page's refcount back to 1.
/// In between, p2pmem_alloc_mmap() on the other CPU can take the same page from the pool (first fit
/// hands out the page just freed) and pass it to vm_insert_page(), whose
/// validate_page_before_insert() refuses a page with refcount 0 with -EINVAL; the mmap fails with
/// EINVAL. The window is a few instructions; under TCG a vCPU thread that the host preempts inside
/// it keeps it open for milliseconds, so a loaded host hits it (seen once in 4,586 operations of a
/// CI run beside two kernel builds). Upstream later moved the refcount's initialisation into
/// p2pmem_alloc_mmap() itself ("PCI/P2PDMA: Refcount P2PDMA pages"), which closes the window.
///
/// A worker accepts such an EINVAL only when the module's kretprobe on vm_insert_page() counted a
/// P2PDMA page with refcount 0 refused during that mmap; this checks the run's total as well, so an
/// EINVAL of another cause that happened to overlap a counted one does not pass unseen.
struct FreedPageRefusals: Equatable {
    /// EINVALs accepted as such, per worker (index 0 is worker 1).
    var acceptedPerWorker: [Int]
    /// The module's count over the run; nil when its STATS cannot be read at the end.
    var witnessed: UInt64?

    var accepted: Int { acceptedPerWorker.reduce(0, +) }

    /// Why the accepted refusals are not all accounted for, or nil.
    var problem: String? {
        guard accepted > 0 else { return nil }
        guard let witnessed else {
            return "\(accepted) mmaps of p2pmem accepted as refused for a page being freed, and the module's STATS cannot be read to confirm them"
        }
        guard UInt64(accepted) > witnessed else { return nil }
        return "\(accepted) mmaps of p2pmem accepted as refused for a page being freed, but the module counted \(witnessed) vm_insert_page() refusals of a page with refcount 0: an EINVAL of another cause overlapped one of them"
    }

    /// The line the KTAP carries when there were any.
    var note: String? {
        guard accepted > 0 || (witnessed ?? 0) > 0 else { return nil }
        return "mmap of p2pmem: \(accepted) refused with EINVAL for a page being freed"
            + " (the module counted \(witnessed.map(String.init) ?? "?") vm_insert_page() refusals of a P2PDMA page with refcount 0):"
            + " free_zone_device_folio() returns the page to the pool before it resets its refcount, a race of this kernel, not of the series"
    }
}
