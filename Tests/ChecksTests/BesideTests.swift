import Catalog
import Foundation
import KTAP
import KernelConsole
import Testing
@testable import Checks

/// A kernel log as /dev/kmsg keeps it: one stream of lines in the order they were written, the
/// runner's markers and notes among them; a mark starts a new window.
final class StreamKernelLog: KernelLogSource, @unchecked Sendable {
    private let lock = NSLock()
    private var window: [String] = []

    func mark(_ marker: String) { lock.withLock { window = [marker] } }
    func note(_ line: String) { lock.withLock { window.append(line) } }
    /// What the kernel prints (a check's body calls it).
    func kernel(_ line: String) { lock.withLock { window.append(line) } }
    func linesSinceMark() -> [String] { lock.withLock { window } }
}

@Suite("Checks that run beside a check that waits")
struct BesideTests {
    static let host = CheckInfo("sample.waits", "waits for the kernel")
    static let companion = CheckInfo("sample.beside", "runs beside it", beside: "sample.waits")
    static let other = CheckInfo("sample.other", "runs alone")

    @Test("a check that runs beside another comes right after it when both are chosen, else in its own place")
    func order() {
        let infos = [Self.companion, Self.other, Self.host]
        #expect(SuiteCatalog.runOrder(infos, info: { $0 }).map(\.name) == ["sample.other", "sample.waits", "sample.beside"])
        #expect(SuiteCatalog.runOrder([Self.companion, Self.other], info: { $0 }).map(\.name) == ["sample.beside", "sample.other"])
        // The suite: each companion is numbered right after its host, and nothing is lost or repeated.
        let names = SuiteCatalog.select(filters: []).map(\.name)
        #expect(Set(names) == Set(SuiteCatalog.checks.map(\.name)) && names.count == SuiteCatalog.checks.count)
        for info in SuiteCatalog.checks {
            guard let host = info.beside else { continue }
            let position = names.firstIndex(of: info.name)!, hostPosition = names.firstIndex(of: host)!
            #expect(position > hostPosition)
            #expect(names[(hostPosition + 1)...position].allSatisfy { SuiteCatalog.check(named: $0)?.beside == host })
        }
        // A companion leaves the provider alone and provokes nothing: it requires no provider.
        for info in SuiteCatalog.checks where info.beside != nil { #expect(!info.requirements.contains(.provider)) }
        #expect(SuiteCatalog.select(filters: ["perftest.*"]).map(\.name) == ["perftest.p2pmem", "perftest.tmpfs"])
        // --list says so.
        #expect(SuiteRunner.listing(Suite.checks).contains {
            $0.hasPrefix("perftest.tmpfs ") && $0.hasSuffix("(runs beside teardown.hung_task_reported while it waits)")
        })
    }

    @Test("the companion runs while the host waits: the host finishes only because it did, and each result follows its number")
    func concurrent() {
        let log = StreamKernelLog()
        let ran = DispatchSemaphore(value: 0)
        let host = CheckDefinition(Self.host) { _, rec in
            log.kernel("WARNING: CPU: 0 PID: 70 at mm/gup.c:1 before_the_wait+0x1/0x2")
            rec.waitsFromHere()
            // Only a companion running meanwhile lets this wait end in time.
            if ran.wait(timeout: .now() + 5) != .success { rec.fail("the companion did not run while the host waited") }
            rec.note("host done")
        }
        let companion = CheckDefinition(Self.companion) { _, rec in
            log.kernel("WARNING: CPU: 1 PID: 80 at mm/gup.c:2 while_both_ran+0x1/0x2")
            rec.note("companion done")
            ran.signal()
        }
        let lines = Lines()
        let checks = SuiteRunner.select([companion, host], filters: [])
        #expect(checks.map(\.name) == ["sample.waits", "sample.beside"])
        let exit = SuiteRunner(checks: checks, context: fakeContext(), kernelLog: log, emit: lines.append).run()
        #expect(exit == .failed)
        let all = lines.all
        let hostResult = all.firstIndex(of: "not ok 1 sample.waits")!, companionResult = all.firstIndex(of: "not ok 2 sample.beside")!
        #expect(hostResult < companionResult)
        let hostPart = all[..<hostResult], companionPart = all[(hostResult + 1)..<companionResult]
        // The host waited for the companion, and its window holds both reports.
        #expect(!hostPart.contains { $0.contains("the companion did not run") })
        #expect(hostPart.contains("# ran beside it: 2 sample.beside"))
        #expect(hostPart.contains { $0.hasPrefix("# splat: ") && $0.contains("before_the_wait") })
        #expect(hostPart.contains { $0.hasPrefix("# splat: ") && $0.contains("while_both_ran") })
        // The companion's window starts at its own marker: the host's earlier report is not its.
        #expect(companionPart.contains("# ran beside 1 sample.waits while it waited"))
        #expect(companionPart.contains { $0.hasPrefix("# splat: ") && $0.contains("while_both_ran") })
        #expect(!companionPart.contains { $0.contains("before_the_wait") })
    }

    @Test("a host that never says it waits has its companions run after it, each in its own window")
    func neverWaits() {
        let log = StreamKernelLog()
        let order = Lines()
        let host = CheckDefinition(Self.host) { _, _ in
            log.kernel("WARNING: CPU: 0 PID: 70 at mm/gup.c:1 host_only+0x1/0x2")
            order.append("host")
        }
        let companion = CheckDefinition(Self.companion) { _, _ in order.append("companion") }
        let lines = Lines()
        let checks = SuiteRunner.select([host, companion], filters: [])
        _ = SuiteRunner(checks: checks, context: fakeContext(), kernelLog: log, emit: lines.append).run()
        #expect(order.all == ["host", "companion"])
        #expect(lines.all.contains("not ok 1 sample.waits"))
        #expect(lines.all.contains("ok 2 sample.beside"))
        #expect(!lines.all.contains { $0.contains("ran beside") })
    }

    @Test("a companion whose requirement is missing skips without running; the host still runs")
    func companionSkips() {
        let log = StreamKernelLog()
        let host = CheckDefinition(Self.host) { _, rec in rec.waitsFromHere() }
        let needy = CheckDefinition(CheckInfo("sample.needy", "needs a provider", requires: [.provider], beside: "sample.waits")) { _, _ in
            Issue.record("a check whose requirement is missing must not run")
        }
        let lines = Lines()
        let exit = SuiteRunner(checks: SuiteRunner.select([host, needy], filters: []), context: fakeContext(), kernelLog: log,
                               emit: lines.append).run()
        #expect(exit == .success)
        #expect(lines.all.contains("ok 1 sample.waits"))
        #expect(lines.all.contains { $0.hasPrefix("ok 2 sample.needy # SKIP") })
    }

    @Test("a companion that overruns the watchdog is TIMEOUT and stops the suite after the pair")
    func companionTimeout() {
        let log = StreamKernelLog()
        let host = CheckDefinition(Self.host) { _, rec in rec.waitsFromHere() }
        let stuck = CheckDefinition(Self.companion) { _, _ in Thread.sleep(forTimeInterval: 3) }
        let lines = Lines()
        let checks = SuiteRunner.select([host, stuck, CheckDefinition(Self.other) { _, _ in }], filters: [])
        let exit = SuiteRunner(checks: checks, context: fakeContext(), kernelLog: log, timeout: 0.3, emit: lines.append).run()
        #expect(exit == .failed)
        #expect(lines.all.contains("ok 1 sample.waits"))
        #expect(lines.all.contains("not ok 2 sample.beside # TIMEOUT"))
        #expect(!lines.all.contains { $0.contains("sample.other") && !$0.hasPrefix("#") })
    }
}
