import Catalog
import CP2PLabUAPI
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Teardown while pinned: what happens to the provider (unbind, remove, a killed holder, the
/// hung-task detector) and to the mappings (munmap, mremap, mprotect, fork) while a long-term pin
/// holds p2pmem. The reviewers of the series objected that such a pin blocks device unbind with no
/// way to make the holder let go; these checks measure it.
extension Suite {
    /// How long an unbind or remove may take once the pin is gone (TCG included).
    static let teardownBound = 30.0

    /// How long a blocked unbind or remove is watched once the module shows memunmap_pages waiting
    /// for pages alone (see PinWaitRule): longer than any unbind or remove took to finish once the
    /// pin went away, so one that did not wait for the pin would have returned. On the lab kernel
    /// (high-resolution timers, expedited RCU) that took 0.01-0.05 s under TCG with the host's other
    /// core busy, 40 of them, the slowest after a SIGKILL of the holder: twice the slowest.
    static let teardownHold = 0.1

    /// The same without the module's view of the pagemap, from the task's arrival in memunmap_pages:
    /// five times what it takes to finish once the pin is gone.
    static let teardownHoldUntimed = 0.5

    static let teardownChecks: [CheckDefinition] = [
        CheckDefinition("teardown.unbind_umem_held") { ctx, rec in
            let setup = try TeardownSetup(ctx)
            guard let held = setup.holdUmem(rec) else { return }
            let unbind = BlockingWrite(path: setup.unbindPath, text: setup.provider.address.description)
            var ok = setup.expectBlocked(unbind, rec, what: "unbind", handle: held.handle)
            let released = monotonicSeconds()
            ok = setup.release(held, rec) && ok
            ok = setup.expectCompleted(unbind, after: released, rec, what: "unbind") && ok
            ok = setup.rebind(rec) && ok
            rec.expect(.unbindWaitsForUmem, observed: ok ? .succeeded : .refused(nil), detail: unbind.summary(releasedAt: released))
        },
        CheckDefinition("teardown.unbind_holder_killed") { ctx, rec in
            let setup = try TeardownSetup(ctx)
            var pid: Int32 = 0
            var request = p2plab_umem()
            let device = setup.standIn
            let rc = p2plab_spawn_umem_holder(
                setup.module.path, ctx.sysfs.allocatePath(setup.provider.address), pinPages * pageSize,
                device.domain, device.bus, device.devfn, &pid, &request)
            guard rc == 0 else { throw CheckFailure("starting the holder child failed: \(Errno(rawValue: -rc))") }
            var observation = Observation.succeeded
            if request.result < 0 { observation = .refused(Errno(rawValue: Int32(-request.result))) }
            rec.expect(.umemGet(writable: true), observed: observation, device: .p2pCapablePCI,
                       detail: "child \(pid) holds the umem (dma_device \(device))")
            guard case .succeeded = observation else {
                var status: Int32 = 0
                _ = p2plab_kill_and_reap(pid, &status)
                return
            }
            let unbind = BlockingWrite(path: setup.unbindPath, text: setup.provider.address.description)
            var ok = setup.expectBlocked(unbind, rec, what: "unbind", handle: request.handle, pid: pid)
            let killed = monotonicSeconds()
            var status: Int32 = 0
            let reaped = p2plab_kill_and_reap(pid, &status)
            if reaped != 0 { ok = false; rec.fail("SIGKILL of the holder \(pid) failed: \(Errno(rawValue: -reaped))") }
            rec.note(String(format: "holder %d killed and reaped %.2f s after SIGKILL", pid, monotonicSeconds() - killed))
            ok = setup.expectCompleted(unbind, after: killed, rec, what: "unbind") && ok
            ok = setup.rebind(rec) && ok
            rec.expect(.unbindCompletesWhenHolderKilled, observed: ok ? .succeeded : .refused(nil),
                       detail: unbind.summary(releasedAt: killed, event: "SIGKILL"))
        },
        CheckDefinition("teardown.hung_task_reported") { ctx, rec in
            let setup = try TeardownSetup(ctx)
            let tunables = try HungTaskTunables.read(ctx.sysfs)
            guard let held = setup.holdUmem(rec) else { return }
            // Whatever ends the check early, the pin must go, or the unbind never returns.
            defer { _ = try? setup.module.release(handle: held.handle) }
            let kmsg = KmsgFollower()
            let unbind = BlockingWrite(path: setup.unbindPath, text: setup.provider.address.description)
            var ok = true
            var report: [String] = []
            do {
                guard let tid = unbind.waitForTID(seconds: 5) else { throw CheckFailure("the unbinding thread did not start") }
                // Armed once the task waits: setting the timeout wakes the detector, whose first scan
                // then sees the task already asleep and starts its clock; the report follows one
                // timeout later instead of up to one check interval after that.
                let waiting = unbind.waitUntilWaiting(in: "memunmap_pages", seconds: 1)
                if waiting == nil { rec.note("the unbinding task \(tid) was not seen in memunmap_pages within 1 s: \(unbind.taskState)") }
                try tunables.arm(timeout: hungTaskTimeout)
                let armed = monotonicSeconds()
                defer { tunables.restore(rec) }
                // Until the report, the check only waits for the detector: the checks that run
                // beside it may start (they take PIDs after the unbinding task's).
                rec.waitsFromHere()
                let fragment = ":\(tid) blocked for more than"
                rec.expectSplat(containing: fragment, because: "this check holds the pin past hung_task_timeout_secs on purpose")
                let deadline = armed + Double(hungTaskTimeout) * 4 + 20
                while monotonicSeconds() < deadline, report.isEmpty {
                    if unbind.finished { break }
                    let lines = kmsg.read()
                    if let start = lines.firstIndex(where: { $0.contains(fragment) }) {
                        report = Array(lines[start...].prefix(40))
                        // The trace follows in its own records, printed by the same scan: take them
                        // up to its end (or what came within half a second).
                        let traceDeadline = monotonicSeconds() + 0.5
                        while !report.contains(where: { $0.contains("</TASK>") }), report.count < 40, monotonicSeconds() < traceDeadline {
                            pause(seconds: 0.02)
                            report += kmsg.read().prefix(40 - report.count)
                        }
                        break
                    }
                    pause(seconds: 0.05)
                }
                let blockedAt = monotonicSeconds() - unbind.started
                if report.isEmpty {
                    ok = false
                    rec.fail(String(format: "no hung-task report for the unbinding task %d after %.1f s blocked (unbind %@)",
                                    tid, blockedAt, unbind.finished ? "returned" : "still blocked"))
                } else {
                    rec.note(String(format: "the hung-task detector reported the unbinding task %d after %.1f s blocked (%.1f s after hung_task_timeout_secs was set to %d):",
                                    tid, blockedAt, monotonicSeconds() - armed, hungTaskTimeout))
                    for line in report.prefix(while: { !$0.contains("p2plab: check") }) { rec.note("  kernel: \(line)") }
                    if !report.contains(where: { $0.contains("memunmap_pages") }) {
                        rec.note("the report's trace does not name memunmap_pages (no stack trace support in this kernel?)")
                    }
                }
            }
            let released = monotonicSeconds()
            ok = setup.release(held, rec) && ok
            ok = setup.expectCompleted(unbind, after: released, rec, what: "unbind") && ok
            ok = setup.rebind(rec) && ok
            rec.expect(.hungTaskReportsUnbind, observed: ok ? .succeeded : .refused(nil), detail: unbind.summary(releasedAt: released))
        },
        CheckDefinition("teardown.remove_while_pinned") { ctx, rec in
            let setup = try TeardownSetup(ctx)
            guard let held = setup.holdUmem(rec) else { return }
            let devicePath = "bus/pci/devices/\(setup.provider.address)"
            let remove = BlockingWrite(path: ctx.sysfs.path("\(devicePath)/remove"), text: "1")
            var ok = setup.expectBlocked(remove, rec, what: "remove", handle: held.handle)
            if FileManager.default.fileExists(atPath: ctx.sysfs.path(devicePath)) { rec.note("\(setup.provider.address) still in sysfs while remove waits") }
            let released = monotonicSeconds()
            ok = setup.release(held, rec) && ok
            ok = setup.expectCompleted(remove, after: released, rec, what: "remove") && ok
            if !waitUntil(seconds: 10, every: quickPoll, { !FileManager.default.fileExists(atPath: ctx.sysfs.path(devicePath)) }) {
                ok = false
                rec.fail("\(setup.provider.address) still in sysfs 10 s after remove returned")
            } else {
                rec.note("\(setup.provider.address) is gone from sysfs")
            }
            setup.region.unmap()
            if case .failure(let errno) = writeSysfs(ctx.sysfs.path("bus/pci/rescan"), "1") {
                ok = false
                rec.fail("rescan failed: \(errno)")
            }
            ok = setup.waitPublished(rec, after: "rescan") && ok
            rec.expect(.removeWaitsForUmem, observed: ok ? .succeeded : .refused(nil), detail: remove.summary(releasedAt: released))
        },
        CheckDefinition("teardown.no_reuse_while_pinned") { ctx, rec in
            let module = try ctx.requireModule()
            let provider = try ctx.requireProvider()
            let allocate = ctx.sysfs.allocatePath(provider.address)
            func available() -> Int { Int(ctx.sysfs.provider(provider.address)?.available ?? 0) }
            let start = available()
            let region = try ctx.mapP2PMem(pages: pinPages)
            region.fill(seed: 11)
            let pinned = try pagemapPFNs(region.base, pages: pinPages)
            guard pinned.allSatisfy({ $0 != 0 }) else {
                throw CheckFailure("/proc/self/pagemap shows no PFN for the mapped p2pmem (\(pinned)): the PFN comparison cannot work")
            }
            let pin = module.pinResult(address: region.address, pages: pinPages, flags: [.longterm, .p2pdma, .hold])
            rec.expect(.pin(.p2pmem, [.longterm, .p2pdma]), observed: CheckRecorder.observation(pin), detail: "PFNs \(pfnRange(pinned))")
            guard case .success(let held) = pin else { return }
            var ok = true
            region.unmap()
            let afterUnmap = available()
            rec.note("available: \(start) at the start, \(afterUnmap) after munmap of the pinned \(byteCount(pinPages * pageSize))")
            if afterUnmap != start - pinPages * pageSize {
                ok = false
                rec.fail("available after munmap is \(afterUnmap), expected \(start - pinPages * pageSize) (the pinned pages still out)")
            }
            switch MappedRegion._shared(path: allocate, length: start, writable: true, offset: 0) {
            case .failure(let errno) where errno == .ENOMEM:
                rec.note("mapping all \(byteCount(start)) that were free at the start: ENOMEM, as the pinned pages are still out")
            case .failure(let errno):
                ok = false
                rec.fail("mapping \(byteCount(start)): \(errno), expected ENOMEM")
            case .success(let whole):
                ok = false
                let pfns = (try? pagemapPFNs(whole.base, pages: whole.pages)) ?? []
                let reused = Set(pfns).intersection(pinned)
                rec.fail("mapping all \(byteCount(start)) succeeded while \(pinPages) pages are pinned; \(reused.count) pinned PFNs handed out again")
            }
            let rest = available()
            if rest >= pageSize {
                let length = min(rest, 4096 * pageSize)
                switch MappedRegion._shared(path: allocate, length: length, writable: true, offset: 0) {
                case .success(let other):
                    let pfns = try pagemapPFNs(other.base, pages: other.pages)
                    let reused = Set(pfns).intersection(pinned)
                    if reused.isEmpty {
                        rec.note("a new mapping of \(byteCount(length)) has PFNs \(pfnRange(pfns)), none of the pinned ones")
                    } else {
                        ok = false
                        rec.fail("a new mapping reuses \(reused.count) pinned PFNs: \(reused.sorted().prefix(4))")
                    }
                case .failure(let errno):
                    ok = false
                    rec.fail("mapping the \(byteCount(length)) still available failed: \(errno)")
                }
            }
            do { try module.release(handle: held.handle) } catch { ok = false; rec.fail("RELEASE failed: \(error)") }
            if !waitUntil(seconds: 10, every: quickPoll, { available() == start }) {
                ok = false
                rec.fail("available is \(available()) 10 s after the release, \(start) at the start")
            }
            // The positive control: with the pin gone, the same request is granted.
            switch MappedRegion._shared(path: allocate, length: start, writable: true, offset: 0) {
            case .success: rec.note("after the release, all \(byteCount(start)) map again")
            case .failure(let errno):
                ok = false
                rec.fail("after the release, mapping all \(byteCount(start)) still fails: \(errno)")
            }
            rec.expect(.poolNotReusedWhilePinned, observed: ok ? .succeeded : .refused(nil))
        },
        CheckDefinition("teardown.fork_while_pinned") { ctx, rec in
            let module = try ctx.requireModule()
            let region = try ctx.mapP2PMem(pages: pinPages)
            region.fill(seed: 12)
            let parent = try pagemapPFNs(region.base, pages: pinPages)
            guard parent.allSatisfy({ $0 != 0 }) else { throw CheckFailure("/proc/self/pagemap shows no PFN for the mapped p2pmem") }
            let pin = module.pinResult(address: region.address, pages: pinPages, flags: [.longterm, .p2pdma, .hold])
            rec.expect(.pin(.p2pmem, [.longterm, .p2pdma]), observed: CheckRecorder.observation(pin))
            guard case .success(let held) = pin else { return }
            defer { _ = try? module.release(handle: held.handle) }
            var ok = true
            let pattern: UInt64 = 0x7032_706c_6162_0000
            var report = p2plab_fork_report()
            let rc = p2plab_fork_probe(region.base, pinPages, pattern, &report)
            guard rc == 0 else { throw CheckFailure("fork probe failed: \(Errno(rawValue: -rc))") }
            let child = withUnsafeBytes(of: report.pfns) { Array($0.bindMemory(to: UInt64.self).prefix(pinPages)) }
            if report.mincore_errno != 0 || report.pagemap_result != 0 {
                ok = false
                rec.fail("the child cannot see the mapping: mincore \(Errno(rawValue: report.mincore_errno)), pagemap \(report.pagemap_result)")
            } else if child != parent {
                ok = false
                rec.fail("the child maps PFNs \(pfnRange(child)), the parent \(pfnRange(parent)): copied, not shared")
            } else {
                rec.note("the child maps the parent's PFNs \(pfnRange(parent))")
            }
            let words = region.base.bindMemory(to: UInt64.self, capacity: region.length / 8)
            let seen = (0..<pinPages).filter { words[$0 * pageSize / 8] == pattern + UInt64($0) }.count
            if seen == pinPages {
                rec.note("the child's writes to all \(pinPages) pages are visible in the parent")
            } else {
                ok = false
                rec.fail("the parent sees the child's writes in \(seen) of \(pinPages) pages")
            }
            if !(WaitStatus(report.child_status).exitedCleanly) {
                ok = false
                rec.fail("the child ended with wait status \(report.child_status)")
            }
            if madvise(region.base, region.length, MADV_DONTFORK) != 0 {
                ok = false
                rec.fail("madvise(MADV_DONTFORK): \(Errno.current)")
            } else {
                var dontfork = p2plab_fork_report()
                let rc2 = p2plab_fork_probe(region.base, pinPages, 0, &dontfork)
                if rc2 != 0 {
                    ok = false
                    rec.fail("fork probe with MADV_DONTFORK failed: \(Errno(rawValue: -rc2))")
                } else if dontfork.mincore_errno == ENOMEM {
                    rec.note("with MADV_DONTFORK the child has no mapping there (mincore: ENOMEM)")
                } else {
                    ok = false
                    rec.fail("with MADV_DONTFORK the child still maps the range (mincore: \(dontfork.mincore_errno == 0 ? "ok" : Errno(rawValue: dontfork.mincore_errno).name))")
                }
            }
            if let stats = try? module.stats().get(), stats.heldPins == 0 {
                ok = false
                rec.fail("the module holds no pin after the forks (\(stats))")
            }
            rec.expect(.forkSharesPinnedPages, observed: ok ? .succeeded : .refused(nil))
        },
        CheckDefinition("teardown.remap_while_pinned") { ctx, rec in
            let module = try ctx.requireModule()
            let provider = try ctx.requireProvider()
            func available() -> Int { Int(ctx.sysfs.provider(provider.address)?.available ?? 0) }
            let start = available()
            let length = pinPages * pageSize
            let region = try RawMapping.p2pmem(ctx.sysfs.allocatePath(provider.address), length: length, prot: PROT_READ | PROT_WRITE)
            defer { region.unmap() }
            MappedRegion.fill(region.base, length: length, seed: 13)
            let pfns = try pagemapPFNs(region.base, pages: pinPages)
            let pin = module.pinResult(address: region.address, pages: pinPages, flags: [.longterm, .p2pdma, .hold])
            rec.expect(.pin(.p2pmem, [.longterm, .p2pdma]), observed: CheckRecorder.observation(pin))
            guard case .success(let held) = pin else { return }
            var ok = true
            let target = try RawMapping.reserve(length: length)
            let old = region.base
            guard let moved = p2plab_mremap_fixed(old, length, target.base) else {
                target.unmap()
                _ = try? module.release(handle: held.handle)
                throw CheckFailure("mremap(MREMAP_MAYMOVE|MREMAP_FIXED) of the pinned mapping failed: \(Errno.current)")
            }
            target.forget()
            region.moved(to: moved)
            let after = try pagemapPFNs(moved, pages: pinPages)
            if after == pfns {
                rec.note("mremap moved the pinned mapping: same PFNs \(pfnRange(pfns)) at the new address")
            } else {
                ok = false
                rec.fail("after mremap the PFNs are \(pfnRange(after)), before \(pfnRange(pfns))")
            }
            if let offset = MappedRegion.firstMismatch(moved, length: length, seed: 13) {
                ok = false
                rec.fail("data differs at offset \(offset) after mremap")
            }
            var vec = [UInt8](repeating: 0, count: pinPages)
            if mincore(old, length, &vec) == 0 {
                ok = false
                rec.fail("the old address range is still mapped after mremap")
            }
            region.unmap()
            let afterUnmap = available()
            if afterUnmap != start - length {
                ok = false
                rec.fail("available after munmap of the pinned mapping is \(afterUnmap), expected \(start - length)")
            } else {
                rec.note("after munmap the \(pinPages) pinned pages stay out of the pool (available \(afterUnmap))")
            }
            do { try module.release(handle: held.handle) } catch { ok = false; rec.fail("RELEASE failed: \(error)") }
            if !waitUntil(seconds: 10, every: quickPoll, { available() == start }) {
                ok = false
                rec.fail("available is \(available()) 10 s after the release, \(start) at the start")
            } else {
                rec.note("after the release available is back to \(start)")
            }
            rec.expect(.remapWhilePinned, observed: ok ? .succeeded : .refused(nil))
        },
        CheckDefinition("teardown.mprotect_while_pinned") { ctx, rec in
            let module = try ctx.requireModule()
            let provider = try ctx.requireProvider()
            let length = pinPages * pageSize
            let region = try RawMapping.p2pmem(ctx.sysfs.allocatePath(provider.address), length: length, prot: PROT_READ)
            defer { region.unmap() }
            let pin = module.pinResult(address: region.address, pages: pinPages, flags: [.p2pdma, .hold])
            rec.expect(.pin(.p2pmem, [.p2pdma]), observed: CheckRecorder.observation(pin), detail: "read-only, held")
            guard case .success(let held) = pin else { return }
            defer { _ = try? module.release(handle: held.handle) }
            guard mprotect(region.base, length, PROT_READ | PROT_WRITE) == 0 else {
                throw CheckFailure("mprotect(PROT_READ|PROT_WRITE) of p2pmem opened O_RDWR failed: \(Errno.current)")
            }
            rec.note("mprotect(PROT_READ → PROT_READ|PROT_WRITE) succeeded")
            let value: UInt64 = 0x6d70_726f_7465_6374
            var outcome = p2plab_child_outcome()
            let rc = p2plab_write_in_child(region.base, value, 5000, &outcome)
            guard rc == 0 else { throw CheckFailure("fork for the CPU write failed: \(Errno(rawValue: -rc))") }
            let observed: Observation
            var detail: String
            if outcome.timed_out != 0 {
                observed = .neverCompleted
                detail = "the child's one store was still faulting after \(outcome.elapsed_ms) ms and was killed"
            } else if WaitStatus(outcome.status).signal != nil {
                observed = .refused(nil)
                detail = "the child's store raised signal \(WaitStatus(outcome.status).signal ?? 0)"
            } else if region.base.load(as: UInt64.self) == value {
                observed = .succeeded
                detail = "the child's store completed in \(outcome.elapsed_ms) ms and the parent sees it"
            } else {
                observed = .refused(nil)
                detail = "the child exited (status \(outcome.status)) but its store is not visible"
            }
            rec.expect(.cpuWriteAfterMprotect, observed: observed, detail: detail)
            let umem = module.umem(address: region.address, length: length, writable: true, dmaDevice: standInDevice(ctx, provider.address))
            rec.expect(.umemGetAfterMprotect, observed: CheckRecorder.observation(umem), detail: "stand-in dma_device")
        },
    ]

    /// The hung-task timeout the hung-task check sets, seconds: the sysctl's smallest. The
    /// detector's verdict is the same at any timeout (the task in D state, not scheduled once for
    /// the whole timeout, as it would be for the default 120 s), and the check has already seen the
    /// task wait in memunmap_pages; a longer hold would add waiting, not evidence.
    static let hungTaskTimeout = 1

    /// The PCI function the module's stand-in HCA uses: an NVMe behind the provider's switch (a
    /// real HCA is another device than the provider), else the provider itself.
    static func standInDevice(_ ctx: CheckContext, _ provider: PCIAddress) -> PCIAddress {
        ctx.sysfs.nvmeControllers().first { $0.address != provider && ctx.sysfs.behindSameSwitch($0.address, provider) }?.address
            ?? provider
    }
}

/// `0x1a000..0x1a00f` or the first few PFNs.
func pfnRange(_ pfns: [UInt64]) -> String {
    guard let first = pfns.first, let last = pfns.last else { return "none" }
    let contiguous = zip(pfns, pfns.dropFirst()).allSatisfy { $1 == $0 + 1 }
    if contiguous { return String(format: "0x%llx..0x%llx", first, last) }
    return pfns.prefix(4).map { String(format: "0x%llx", $0) }.joined(separator: ",") + (pfns.count > 4 ? ",…" : "")
}

/// PFNs of `pages` pages at `base` (0: not present). The corresponding C function is `pread` of
/// /proc/self/pagemap.
func pagemapPFNs(_ base: UnsafeMutableRawPointer, pages: Int) throws -> [UInt64] {
    var pfns = [UInt64](repeating: 0, count: pages)
    let rc = p2plab_pagemap_pfns(base, pages, &pfns)
    guard rc == 0 else { throw CheckFailure("reading /proc/self/pagemap failed: \(Errno(rawValue: -rc))") }
    return pfns
}

/// A mapping the check moves and unmaps itself (MappedRegion assumes it stays where it was made).
final class RawMapping: @unchecked Sendable {
    private(set) var base: UnsafeMutableRawPointer
    let length: Int
    private var mapped = true

    private init(base: UnsafeMutableRawPointer, length: Int) {
        self.base = base
        self.length = length
    }

    var address: UInt64 { UInt64(UInt(bitPattern: base)) }

    /// `length` bytes of the provider's p2pmem, MAP_SHARED with `prot`, the file opened O_RDWR (so
    /// mprotect may add PROT_WRITE later).
    static func p2pmem(_ path: String, length: Int, prot: Int32) throws -> RawMapping {
        let fd = open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw CheckFailure("open \(path): \(Errno.current)") }
        defer { close(fd) }
        guard let pointer = mmap(nil, length, prot, MAP_SHARED, fd, 0), pointer != MAP_FAILED else {
            throw CheckFailure("mmap of \(byteCount(length)) of \(path): \(Errno.current)")
        }
        return RawMapping(base: pointer, length: length)
    }

    /// An inaccessible anonymous range, a target for MREMAP_FIXED.
    static func reserve(length: Int) throws -> RawMapping {
        guard let pointer = mmap(nil, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), pointer != MAP_FAILED else {
            throw CheckFailure("reserving \(byteCount(length)) of address space: \(Errno.current)")
        }
        return RawMapping(base: pointer, length: length)
    }

    /// mremap moved it.
    func moved(to newBase: UnsafeMutableRawPointer) { base = newBase }

    /// Something else (mremap) replaced the range: never unmap it from here.
    func forget() { mapped = false }

    func unmap() {
        if mapped {
            munmap(base, length)
            mapped = false
        }
    }

    deinit { unmap() }
}

extension MappedRegion {
    /// `fill(seed:)` for memory a MappedRegion does not own.
    static func fill(_ base: UnsafeMutableRawPointer, length: Int, seed: UInt64) {
        let words = base.bindMemory(to: UInt64.self, capacity: length / 8)
        for index in 0..<(length / 8) { words[index] = pattern(seed: seed, index: index) }
    }

    /// `firstMismatch(seed:)` for memory a MappedRegion does not own.
    static func firstMismatch(_ base: UnsafeMutableRawPointer, length: Int, seed: UInt64) -> Int? {
        let words = base.bindMemory(to: UInt64.self, capacity: length / 8)
        for index in 0..<(length / 8) where words[index] != pattern(seed: seed, index: index) { return index * 8 }
        return nil
    }
}

/// The provider, its driver and a held umem: what the unbind/remove checks share.
struct TeardownSetup {
    let ctx: CheckContext
    let module: TestModule
    let provider: P2PMemProvider
    let driver: String
    let standIn: PCIAddress
    let region: MappedRegion

    init(_ ctx: CheckContext) throws {
        self.ctx = ctx
        module = try ctx.requireModule()
        provider = try ctx.requireProvider()
        let link = ctx.sysfs.path("bus/pci/devices/\(provider.address)/driver")
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: link) else {
            throw CheckSkip("\(provider.address) has no driver bound")
        }
        driver = URL(fileURLWithPath: target).lastPathComponent
        standIn = Suite.standInDevice(ctx, provider.address)
        region = try ctx.mapP2PMem(pages: Suite.pinPages)
        region.fill(seed: 10)
    }

    var unbindPath: String { ctx.sysfs.path("bus/pci/drivers/\(driver)/unbind") }

    /// Takes the held writable umem (the MR's pin) and compares it with the table; nil when refused.
    func holdUmem(_ rec: CheckRecorder) -> UmemReport? {
        let result = module.umem(address: region.address, length: region.length, writable: true, dmaDevice: standIn, hold: true)
        rec.expect(.umemGet(writable: true), observed: CheckRecorder.observation(result), device: .p2pCapablePCI,
                   detail: "held, dma_device \(standIn)")
        guard case .success(let report) = result else { return nil }
        if case .success(let stats) = module.stats() {
            rec.note("module: \(stats)")
            if stats.heldUmems == 0 { rec.fail("the module's counters show no held umem right after holding one") }
        }
        return report
    }

    /// `handle` of this process's module file, or of `pid`'s: the held umem whose pagemap is watched.
    func expectBlocked(_ write: BlockingWrite, _ rec: CheckRecorder, what: String, handle: UInt32, pid: Int32? = nil) -> Bool {
        write.expectBlocked(rec, what: what, holder: "the umem", pgmap: module.pgmapProbe(handle: handle, pid: pid))
    }

    /// Releases the umem `holdUmem` took; false (and the failure recorded) if the module refuses.
    func release(_ held: UmemReport, _ rec: CheckRecorder) -> Bool {
        do {
            try module.release(handle: held.handle)
            return true
        } catch {
            rec.fail("RELEASE of the umem failed: \(error)")
            return false
        }
    }

    /// After the pin went away at `releasedAt`, the write must return within the bound, successfully.
    func expectCompleted(_ write: BlockingWrite, after releasedAt: Double, _ rec: CheckRecorder, what: String) -> Bool {
        guard write.wait(seconds: Suite.teardownBound) else {
            // Leave the thread: the hung-task detector names it if it never returns.
            rec.fail("\(what) still blocked \(Int(Suite.teardownBound)) s after the pin went away")
            return false
        }
        if case .failure(let errno)? = write.result {
            rec.fail("\(what) (write to \(write.path)) failed: \(errno)")
            return false
        }
        return true
    }

    /// Binds the provider again and waits for p2pmem to be published.
    func rebind(_ rec: CheckRecorder) -> Bool {
        var ok = true
        if ctx.sysfs.isBound(provider.address) {
            ok = false
            rec.fail("\(provider.address) still bound after unbind")
        }
        region.unmap()
        if case .failure(let errno) = writeSysfs(ctx.sysfs.path("bus/pci/drivers/\(driver)/bind"), provider.address.description) {
            rec.fail("rebinding \(provider.address) to \(driver) failed: \(errno)")
            return false
        }
        return waitPublished(rec, after: "rebinding to \(driver)") && ok
    }

    func waitPublished(_ rec: CheckRecorder, after event: String) -> Bool {
        let start = monotonicSeconds()
        guard waitUntil(seconds: 30, every: quickPoll, { ctx.sysfs.provider(provider.address)?.published == true }) else {
            rec.fail("p2pmem of \(provider.address) not published again 30 s after \(event)")
            return false
        }
        rec.note(String(format: "p2pmem published again %.2f s after %@, available %llu", monotonicSeconds() - start, event,
                        ctx.sysfs.provider(provider.address)?.available ?? 0))
        return true
    }
}

/// A write to a sysfs control file (unbind, remove) on its own thread, which may block in the kernel.
final class BlockingWrite: @unchecked Sendable {
    let path: String
    let started = monotonicSeconds()
    private let lock = NSLock()
    private let done = DispatchSemaphore(value: 0)
    private var _result: Result<Void, Errno>?
    private var _tid: Int32?
    private var _finishedAt: Double?

    init(path: String, text: String) {
        self.path = path
        let thread = Thread { [self] in
            let tid = p2plab_gettid()
            lock.withLock { _tid = tid }
            let result = writeSysfs(path, text)
            lock.withLock {
                _result = result
                _finishedAt = monotonicSeconds()
            }
            done.signal()
        }
        thread.start()
    }

    var result: Result<Void, Errno>? { lock.withLock { _result } }
    var tid: Int32? { lock.withLock { _tid } }
    var finishedAt: Double? { lock.withLock { _finishedAt } }
    var finished: Bool { finishedAt != nil }

    var resultText: String {
        switch result {
        case .success?: "success"
        case .failure(let errno)?: errno.name
        case nil: "still running"
        }
    }

    /// Whether it returned within `seconds` (at once when it already has).
    func wait(seconds: Double) -> Bool {
        if finished { return true }
        let ok = done.wait(timeout: .now() + seconds) == .success
        if ok { done.signal() }
        return ok
    }

    func waitForTID(seconds: Double) -> Int32? {
        _ = waitUntil(seconds: seconds, every: 0.005) { tid != nil }
        return tid
    }

    /// `state D, in memunmap_pages` from /proc/self/task/TID/{stat,wchan}.
    var taskState: String {
        guard let tid, let task = TaskState("/proc/self/task/\(tid)") else { return "" }
        let wchan = task.wchan
        return "state \(task.state)" + (wchan.isEmpty ? "" : ", in \(wchan)")
    }

    /// Polls (every 10 ms) until the writing thread waits in D state in `function`, for at most
    /// `seconds`: when it was first seen there, or nil (returned, elsewhere, or no wchan).
    func waitUntilWaiting(in function: String, seconds: Double) -> Double? {
        let deadline = started + seconds
        while monotonicSeconds() < deadline, !finished {
            if let tid, Self.waits(tid: tid, in: function) { return monotonicSeconds() }
            pause(seconds: 0.01)
        }
        return nil
    }

    static func waits(tid: Int32, in function: String) -> Bool {
        waits(task: "/proc/self/task/\(tid)", in: function)
    }

    /// `task`: a /proc/PID or /proc/PID/task/TID directory.
    static func waits(task directory: String, in function: String) -> Bool {
        guard let task = TaskState(directory), task.state == "D" else { return false }
        return task.wchan == function
    }

    /// The write must be seen waiting for the pin: `PinWaitRule` (the task in D state in
    /// memunmap_pages, and, through `pgmap`, the module's view of the pagemap showing it waits for
    /// pages alone, still so `Suite.teardownHold` later). Where /proc/PID/wchan names no function
    /// (no KALLSYMS), the rule is the plain one: not returned 1 s after the write.
    func expectBlocked(_ rec: CheckRecorder, what: String, holder: String, pgmap: (() -> PgmapState?)? = nil) -> Bool {
        let rule = PinWaitRule(
            now: monotonicSeconds, sleep: pause(seconds:), finished: { self.finished }, finishesWithin: { self.wait(seconds: $0) },
            waitsInMemunmap: { self.tid.map { Self.waits(tid: $0, in: "memunmap_pages") } ?? false }, pgmap: pgmap)
        let outcome = rule.run(started: started)
        let task = "task \(tid.map(String.init) ?? "?") \(taskState)"
        return PinWaitRule.record(outcome, rec, what: what, holder: holder, task: task, started: started, result: { self.resultText })
    }

    /// `blocked 1.53 s in all, completed 0.04 s after the release`.
    func summary(releasedAt: Double, event: String = "the release") -> String {
        guard let finishedAt else { return "still blocked" }
        return String(format: "blocked %.2f s in all; completed %.2f s after %@", finishedAt - started, finishedAt - releasedAt, event)
    }
}

/// The hung-task detector's tunables: read, set for one check, and put back.
struct HungTaskTunables {
    let sysfs: Sysfs
    let saved: [String: String]
    static let names = ["hung_task_timeout_secs", "hung_task_panic", "hung_task_warnings", "hung_task_check_interval_secs"]

    static func path(_ name: String) -> String { "/proc/sys/kernel/\(name)" }

    static func read(_ sysfs: Sysfs) throws -> HungTaskTunables {
        var saved: [String: String] = [:]
        for name in names {
            guard let text = try? String(contentsOfFile: path(name), encoding: .utf8) else {
                throw CheckSkip("no \(path(name)): this kernel lacks CONFIG_DETECT_HUNG_TASK")
            }
            saved[name] = text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return HungTaskTunables(sysfs: sysfs, saved: saved)
    }

    /// Panic off first, then the short timeout (which wakes the detector).
    func arm(timeout: Int) throws {
        for (name, value) in [("hung_task_panic", "0"), ("hung_task_warnings", "-1"), ("hung_task_check_interval_secs", "1"),
                              ("hung_task_timeout_secs", String(timeout))]
        {
            if case .failure(let errno) = writeSysfs(Self.path(name), value) {
                restore(nil)
                throw CheckFailure("setting \(name) to \(value): \(errno)")
            }
        }
    }

    /// The timeout first (so nothing is reported with panic back on), then the rest.
    func restore(_ rec: CheckRecorder?) {
        for name in ["hung_task_timeout_secs", "hung_task_check_interval_secs", "hung_task_warnings", "hung_task_panic"] {
            guard let value = saved[name] else { continue }
            if case .failure(let errno) = writeSysfs(Self.path(name), value) { rec?.fail("restoring \(name) to \(value): \(errno)") }
        }
    }
}

/// Follows /dev/kmsg from now on without writing a marker (the suite runner keeps its own reader).
final class KmsgFollower: @unchecked Sendable {
    private let fd: Int32

    init() {
        fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        if fd >= 0 { lseek(fd, 0, SEEK_END) }
    }

    deinit { if fd >= 0 { close(fd) } }

    /// The message lines logged since the last read.
    func read() -> [String] {
        guard fd >= 0 else { return [] }
        var lines: [String] = []
        var buffer = [UInt8](repeating: 0, count: 8192)
        while true {
            let count = Glibc.read(fd, &buffer, buffer.count)
            if count < 0 {
                if errno == EPIPE { continue }
                break
            }
            if count == 0 { break }
            lines.append(contentsOf: KmsgLog.parseRecord(buffer[..<count]))
        }
        return lines
    }
}

/// A waitpid() status (the W* macros are not imported into Swift).
struct WaitStatus {
    let raw: Int32
    init(_ raw: Int32) { self.raw = raw }

    var exitedCleanly: Bool { raw & 0x7f == 0 && exitCode == 0 }
    /// The exit status a process that exited gave (WEXITSTATUS).
    var exitCode: Int32 { (raw >> 8) & 0xff }
    /// The signal that ended the process, if one did.
    var signal: Int32? {
        let sig = raw & 0x7f
        return sig != 0 && sig != 0x7f ? sig : nil
    }
}
