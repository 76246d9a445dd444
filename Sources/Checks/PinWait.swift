import Foundation

/// The rule by which a blocked unbind, remove or hot-unplug is shown to wait for a held pin, apart
/// from the clock, /proc and the module so that it can be tested with fakes.
///
/// memunmap_pages() kills the pagemap's reference, drops the pagemap's own share of it, and waits
/// in `wait_for_completion(&pgmap->done)` until the count is zero. Unpinned, that wait lasts one
/// RCU grace period (the switch of the reference to atomic mode); pinned, it lasts until the pinned
/// pages come back, since each p2pmem page handed out holds one reference. So the evidence is:
/// the task in D state in memunmap_pages, and the module's view of the pagemap (PGMAP) showing the
/// reference killed, the switch over, references left and `->done` not completed, i.e. nothing
/// left to wait for but pages, the held ones among them. It must still be so `Suite.teardownHold`
/// later, longer than any unbind took to finish once the pin went away, with the write not
/// returned. Without the module's view (or when it never shows that), the rule is the time one:
/// still blocked `Suite.teardownHoldUntimed` after it was first seen in memunmap_pages.
struct PinWaitRule {
    /// Seconds on the check's clock.
    var now: () -> Double
    var sleep: (Double) -> Void
    /// Whether the write (or the device removal) has returned.
    var finished: () -> Bool
    /// Whether it returns within the given seconds (polls or waits on a semaphore).
    var finishesWithin: (Double) -> Bool
    /// Whether the task sleeps in D state in memunmap_pages now.
    var waitsInMemunmap: () -> Bool
    /// The pagemap behind the held pages (nil: no such view).
    var pgmap: (() -> PgmapState?)?
    var hold = Suite.teardownHold
    var holdUntimed = Suite.teardownHoldUntimed

    enum Outcome: Equatable {
        /// It returned while the pin was held, `after` seconds after the write (or after arriving).
        case returned(after: Double)
        /// The module showed memunmap_pages waiting for pages alone from `settled`, and it still did at `until`.
        case waitsForPages(arrived: Double, settled: Double, until: Double, first: PgmapState, last: PgmapState)
        /// The pagemap stopped waiting (its count reached zero, or `->done` completed) while the pin was held.
        case pagemapLetGo(first: PgmapState, last: PgmapState?)
        /// Still blocked, but no longer in memunmap_pages, after the pagemap was seen waiting.
        case leftMemunmap(first: PgmapState)
        /// The time rule: not returned at `until`; `arrived` nil when it was never seen in
        /// memunmap_pages; `pgmap` the last state seen when the module's view did not settle.
        case blockedUntimed(arrived: Double?, until: Double, pgmap: PgmapState?)
    }

    /// From the write at `started`: waits (up to 1 s) for the task to reach memunmap_pages, then `hold(arrived:)`.
    func run(started: Double) -> Outcome {
        let arriveBy = started + 1
        while now() < arriveBy {
            if finished() { return .returned(after: now() - started) }
            if waitsInMemunmap() { return hold(arrived: now()) }
            sleep(0.01)
        }
        if finishesWithin(0) { return .returned(after: now() - started) }
        return .blockedUntimed(arrived: nil, until: now(), pgmap: nil)
    }

    /// The task was seen waiting in memunmap_pages at `arrived`.
    func hold(arrived: Double) -> Outcome {
        var seen: PgmapState?
        if let pgmap {
            // The switch to atomic mode is one RCU grace period; 1 s is far more than it takes.
            let settleBy = arrived + 1
            var first: PgmapState?
            while now() < settleBy {
                if finished() { return .returned(after: now() - arrived) }
                if let state = pgmap() {
                    seen = state
                    if state.waitsForPages { first = state; break }
                } else {
                    break
                }
                sleep(0.01)
            }
            if let first {
                let settled = now()
                let until = max(settled, arrived) + hold
                if finishesWithin(max(0, until - now())) { return .returned(after: now() - arrived) }
                let last = pgmap()
                guard let last, last.waitsForPages else { return .pagemapLetGo(first: first, last: last) }
                guard waitsInMemunmap() else { return .leftMemunmap(first: first) }
                return .waitsForPages(arrived: arrived, settled: settled, until: now(), first: first, last: last)
            }
        }
        let until = arrived + holdUntimed
        if finishesWithin(max(0, until - now())) { return .returned(after: now() - arrived) }
        return .blockedUntimed(arrived: arrived, until: now(), pgmap: seen)
    }
}

extension PinWaitRule {
    /// Notes what was seen, or fails the check; true when it waited for the pin.
    static func record(_ outcome: Outcome, _ rec: CheckRecorder, what: String, holder: String, task: String, started: Double,
                       since event: String = "the write", result: () -> String) -> Bool
    {
        switch outcome {
        case .returned(let after):
            rec.fail(String(format: "%@ returned (%@) while %@ was held, %.2f s after it was seen", what, result(), holder, after))
            return false
        case .waitsForPages(let arrived, let settled, let until, let first, let last):
            rec.note(String(format: "%@ waits for the pin: %@ from %.2f s after %@; the pagemap waits for pages alone from %.2f s (%@), still %.2f s later (%@)",
                            what, task, arrived - started, event, settled - started, first.description, until - settled, last.description))
            return true
        case .pagemapLetGo(let first, let last):
            rec.fail("\(what) still blocked while \(holder) was held, but the pagemap stopped waiting for pages: first \(first), then \(last.map(\.description) ?? "unreadable")")
            return false
        case .leftMemunmap(let first):
            rec.fail("\(what) left memunmap_pages while \(holder) was held and has not returned (\(task)); the pagemap had been waiting: \(first)")
            return false
        case .blockedUntimed(let arrived?, let until, let pgmap):
            rec.note(String(format: "%@ waits for the pin: %@ from %.2f s after %@, still there %.2f s later%@", what, task, arrived - started, event,
                            until - arrived, pgmap.map { "; the module's view of the pagemap never showed it waiting for pages alone (last: \($0))" } ?? ""))
            return true
        case .blockedUntimed(nil, _, _):
            rec.note("\(what) still blocked 1 s after \(event): \(task) (never seen waiting in memunmap_pages)")
            return true
        }
    }
}
