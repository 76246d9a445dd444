import CP2PLabUAPI
import Foundation
import Testing

@testable import Checks

/// A kernel seen through fakes: when the write returns, when the task sits in memunmap_pages, and
/// what the module shows of the pagemap, each as a function of the fake clock.
final class FakeKernel {
    var clock = 0.0
    /// When the write returns (nil: never, while the pin is held).
    var returnsAt: Double?
    /// When the task is in D state in memunmap_pages.
    var inMemunmap: (Double) -> Bool = { $0 >= 0.2 }
    var pgmap: ((Double) -> PgmapState?)?

    static let settled = PgmapState(
        state: UInt32(P2PLAB_PGMAP_DEVICE | P2PLAB_PGMAP_P2PDMA | P2PLAB_PGMAP_DEAD | P2PLAB_PGMAP_ATOMIC | P2PLAB_PGMAP_DMA_PINNED),
        refCount: 16, heldPages: 16, pageRefcount: 1024)
    static let switching = PgmapState(
        state: UInt32(P2PLAB_PGMAP_DEVICE | P2PLAB_PGMAP_P2PDMA | P2PLAB_PGMAP_DEAD | P2PLAB_PGMAP_ATOMIC | P2PLAB_PGMAP_SWITCHING | P2PLAB_PGMAP_DMA_PINNED),
        refCount: nil, heldPages: 16, pageRefcount: 1024)
    static let released = PgmapState(
        state: UInt32(P2PLAB_PGMAP_DEVICE | P2PLAB_PGMAP_P2PDMA | P2PLAB_PGMAP_DEAD | P2PLAB_PGMAP_ATOMIC | P2PLAB_PGMAP_DONE),
        refCount: 0, heldPages: 16, pageRefcount: 1)

    var finished: Bool { returnsAt.map { clock >= $0 } ?? false }

    func rule(pgmap withPgmap: Bool = true) -> PinWaitRule {
        PinWaitRule(
            now: { self.clock }, sleep: { self.clock += $0 }, finished: { self.finished },
            finishesWithin: { seconds in
                let end = self.clock + seconds
                if let at = self.returnsAt, at <= end {
                    self.clock = max(self.clock, at)
                    return true
                }
                self.clock = end
                return false
            },
            waitsInMemunmap: { !self.finished && self.inMemunmap(self.clock) },
            pgmap: withPgmap ? pgmap.map { probe in { probe(self.clock) } } : nil)
    }
}

@Suite("A blocked unbind is shown to wait for the pin, and a kernel that does not is caught")
struct PinWaitRuleTests {
    @Test("the series: in memunmap_pages at 0.2 s, the pagemap settled at 0.24 s; held teardownHold (0.1 s), not the 0.5 s of the time rule")
    func waitsForPages() {
        let kernel = FakeKernel()
        kernel.pgmap = { $0 < 0.24 ? FakeKernel.switching : FakeKernel.settled }
        guard case .waitsForPages(let arrived, let settled, let until, _, let last) = kernel.rule().run(started: 0) else {
            Issue.record("expected waitsForPages")
            return
        }
        #expect(abs(arrived - 0.2) < 0.011 && abs(settled - 0.24) < 0.011)
        #expect(until - settled >= Suite.teardownHold - 1e-9 && until < 0.24 + Suite.teardownHoldUntimed)
        #expect(last.refCount == 16)
    }

    @Test("a kernel whose unbind does not wait for the pin: it passes memunmap_pages and returns, a failure")
    func returnsWhilePinned() {
        let kernel = FakeKernel()
        kernel.inMemunmap = { $0 >= 0.2 && $0 < 0.23 }
        kernel.returnsAt = 0.25
        kernel.pgmap = { $0 < 0.22 ? FakeKernel.switching : FakeKernel.released }
        guard case .returned = kernel.rule().run(started: 0) else {
            Issue.record("expected returned")
            return
        }
    }

    @Test("the pagemap waits for pages at first but returns before the hold is up (a timed wait): a failure")
    func returnsDuringHold() {
        let kernel = FakeKernel()
        kernel.pgmap = { _ in FakeKernel.settled }
        kernel.returnsAt = 0.3
        guard case .returned = kernel.rule().run(started: 0) else {
            Issue.record("expected returned")
            return
        }
    }

    @Test("the count reaches zero while the pin is held and the task is still blocked: a failure")
    func pagemapLetGo() {
        let kernel = FakeKernel()
        kernel.pgmap = { $0 < 0.3 ? FakeKernel.settled : FakeKernel.released }
        guard case .pagemapLetGo = kernel.rule().run(started: 0) else {
            Issue.record("expected pagemapLetGo")
            return
        }
    }

    @Test("still blocked, but elsewhere than memunmap_pages after the pagemap was seen waiting: a failure")
    func leftMemunmap() {
        let kernel = FakeKernel()
        kernel.inMemunmap = { $0 >= 0.2 && $0 < 0.3 }
        kernel.pgmap = { _ in FakeKernel.settled }
        guard case .leftMemunmap = kernel.rule().run(started: 0) else {
            Issue.record("expected leftMemunmap")
            return
        }
    }

    @Test("no view of the pagemap: the time rule, 0.5 s after arriving in memunmap_pages")
    func untimedWithoutPgmap() {
        let kernel = FakeKernel()
        guard case .blockedUntimed(let arrived?, let until, nil) = kernel.rule(pgmap: false).run(started: 0) else {
            Issue.record("expected blockedUntimed")
            return
        }
        #expect(until - arrived >= Suite.teardownHoldUntimed)
    }

    @Test("a pagemap that never settles (still switching after 1 s): the time rule, with the last state seen")
    func neverSettles() {
        let kernel = FakeKernel()
        kernel.pgmap = { _ in FakeKernel.switching }
        guard case .blockedUntimed(_?, _, let seen?) = kernel.rule().run(started: 0) else {
            Issue.record("expected blockedUntimed")
            return
        }
        #expect(seen.switching)
    }

    @Test("never seen in memunmap_pages (no wchan): blocked 1 s after the write is the plain rule")
    func neverArrives() {
        let kernel = FakeKernel()
        kernel.inMemunmap = { _ in false }
        guard case .blockedUntimed(nil, let until, _) = kernel.rule().run(started: 0) else {
            Issue.record("expected blockedUntimed")
            return
        }
        #expect(until >= 1)
    }

    @Test("waitsForPages needs the reference killed, the switch over, references left and ->done not completed")
    func waitsForPagesFlags() {
        #expect(FakeKernel.settled.waitsForPages)
        #expect(!FakeKernel.switching.waitsForPages)
        #expect(!FakeKernel.released.waitsForPages)
        var live = FakeKernel.settled
        live.state &= ~UInt32(P2PLAB_PGMAP_DEAD)
        #expect(!live.waitsForPages)
        #expect(FakeKernel.settled.description.contains("16 references left (the hold: 16 pages)"))
    }
}
