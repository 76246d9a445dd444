import Catalog
import CP2PLabUAPI
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Suite {
    static let oracleChecks: [CheckDefinition] = [
        CheckDefinition("oracle.gup_test") { ctx, rec in
            let module = try ctx.requireModule()
            let gup: GupTest
            do {
                gup = try GupTest(debugfs: ctx.debugfs)
            } catch {
                throw CheckSkip("no \(ctx.debugfs)/gup_test (\(error)): enable CONFIG_GUP_TEST and mount debugfs")
            }
            let pages = pinPages
            let oracleRegion = try ctx.mapP2PMem(pages: pages)
            let oracle: Observation
            switch gup.pinLongtermBenchmark(address: oracleRegion.address, length: oracleRegion.length, gupFlags: P2PLAB_FOLL_PCI_P2PDMA_6_12) {
            case .failure(let errno):
                oracle = .refused(errno)
            case .success(let bytes) where bytes == UInt64(oracleRegion.length):
                oracle = .succeeded
            case .success(0):
                oracle = .refused(nil)
            case .success(let bytes):
                throw CheckFailure("gup_test pinned \(bytes) of \(oracleRegion.length) bytes")
            }
            let moduleRegion = try ctx.mapP2PMem(pages: pages)
            let verdict = CheckRecorder.observation(module.pinResult(address: moduleRegion.address, pages: pages, flags: [.longterm, .p2pdma]))
            rec.note("gup_test: \(oracle); module LONGTERM|P2PDMA pin: \(verdict)")
            let agree: Bool
            switch (oracle, verdict) {
            case (.succeeded, .succeeded), (.refused, .refused): agree = true
            default: agree = false
            }
            if !agree { rec.fail("gup_test (\(oracle)) and the module (\(verdict)) disagree") }
            rec.expect(.gupTestLongtermP2PDMA, observed: oracle)
        },
    ]

    static let lifecycleChecks: [CheckDefinition] = [
        CheckDefinition("lifecycle.exit_releases") { ctx, rec in
            let provider = try ctx.requireProvider()
            guard let holder = ctx.holderCommand else { throw CheckSkip("this front end cannot start the holder child") }
            guard let start = ctx.sysfs.provider(provider.address)?.available else { throw CheckFailure("p2pmem/available unreadable") }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: holder[0])
            process.arguments = Array(holder.dropFirst()) + [provider.address.description]
            let output = Pipe()
            process.standardOutput = output
            process.standardError = output
            rec.note("+ " + (holder + [provider.address.description]).joined(separator: " "))
            let spawned = monotonicSeconds()
            try process.run()
            let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            rec.note(String(format: "the holder child ran %.2f s", monotonicSeconds() - spawned))
            for line in text.split(separator: "\n") { rec.note("child: \(line)") }
            let childFailed = process.terminationStatus != 0
            if childFailed { rec.fail("holder child exited with \(process.terminationStatus): it could not take everything it holds (FAILED lines above)") }
            var now = start
            let back = waitUntil(seconds: 10, every: quickPoll) {
                now = ctx.sysfs.provider(provider.address)?.available ?? 0
                return now == start
            }
            rec.expect(.exitReleases, observed: back && !childFailed ? .succeeded : .refused(nil),
                       detail: "available before \(start), after the child exited \(now)")
        },
        CheckDefinition("lifecycle.unbind_while_pinned") { ctx, rec in
            let module = try ctx.requireModule()
            let provider = try ctx.requireProvider()
            let devicePath = "bus/pci/devices/\(provider.address)"
            guard let driver = (try? FileManager.default.destinationOfSymbolicLink(atPath: ctx.sysfs.path("\(devicePath)/driver")))
                .map({ URL(fileURLWithPath: $0).lastPathComponent })
            else { throw CheckSkip("\(provider.address) has no driver bound") }
            let region = try ctx.mapP2PMem(pages: pinPages)
            // Read-only, so the check is about patch 3's claim alone (unbind waits for long-term pins),
            // not about kernfs' dirty tracking (patch 1), which a writable slow pin would also meet.
            let pin = module.pinResult(address: region.address, pages: pinPages, flags: [.longterm, .p2pdma, .hold])
            guard case .success(let held) = pin else {
                rec.expect(.unbindWaitsForPin, observed: CheckRecorder.observation(pin), detail: "taking the long-term pin")
                return
            }
            rec.note("holding \(held.pinned) pages, handle \(held.handle)")
            let unbind = ctx.sysfs.path("bus/pci/drivers/\(driver)/unbind")
            let write = BlockingWrite(path: unbind, text: provider.address.description)
            var ok = write.expectBlocked(rec, what: "unbind", holder: "the pin", pgmap: module.pgmapProbe(handle: held.handle))
            do { try module.release(handle: held.handle) } catch { rec.fail("RELEASE failed: \(error)") }
            let released = monotonicSeconds()
            if !write.wait(seconds: teardownBound) {
                // Leave the thread: the hung-task detector will name it if it never returns.
                rec.fail("unbind still blocked \(Int(teardownBound)) s after RELEASE")
                rec.expect(.unbindWaitsForPin, observed: .refused(nil))
                return
            }
            rec.note("unbind " + write.summary(releasedAt: released, event: "RELEASE"))
            if case .failure(let errno)? = write.result { ok = false; rec.fail("write to \(unbind) failed: \(errno)") }
            if ctx.sysfs.isBound(provider.address) { ok = false; rec.fail("\(provider.address) still bound after unbind") }
            region.unmap()

            let bind = ctx.sysfs.path("bus/pci/drivers/\(driver)/bind")
            if case .failure(let errno) = writeSysfs(bind, provider.address.description) {
                ok = false
                rec.fail("rebinding \(provider.address) to \(driver) failed: \(errno)")
            } else if !waitUntil(seconds: 20, every: quickPoll, { ctx.sysfs.provider(provider.address)?.published == true }) {
                ok = false
                rec.fail("p2pmem of \(provider.address) not published again 20 s after rebinding")
            } else {
                rec.note("rebound to \(driver): p2pmem published again, available \(ctx.sysfs.provider(provider.address)?.available ?? 0)")
            }
            rec.expect(.unbindWaitsForPin, observed: ok ? .succeeded : .refused(nil))
        },
    ]
}

/// The child of lifecycle.exit_releases: takes p2pmem, pins and MRs, reports them, and exits
/// without giving anything back, so the kernel's exit path has to.
public enum ExitHolder {
    /// Runs the holder and terminates the process with `_exit`, skipping every cleanup: status 0 when
    /// it holds everything it set out to hold, 1 when anything was refused (each refusal is printed).
    public static func run(provider: PCIAddress, sysfs: Sysfs = Sysfs(), debugfs: String = "/sys/kernel/debug") -> Never {
        func say(_ text: String) {
            FileHandle.standardOutput.write(Data((text + "\n").utf8))
        }
        var failed = false
        func refused(_ text: String) {
            say("FAILED: " + text)
            failed = true
        }
        let pages = 16
        guard let region = try? MappedRegion.shared(path: sysfs.allocatePath(provider), length: pages * pageSize) else {
            say("FAILED: mmap of \(sysfs.allocatePath(provider)) failed: \(Errno.current)")
            _exit(1)
        }
        region.fill(seed: 4)
        say("mapped \(pages) pages of p2pmem; available now \(sysfs.provider(provider)?.available ?? 0)")
        var keep: [AnyObject] = [region]
        if let module = try? TestModule(debugfs: debugfs) {
            // Short-term and long-term P2PDMA pins, read-only and writable, each held until exit.
            let holds: [PinFlags] = [[.write, .p2pdma, .hold], [.longterm, .p2pdma, .hold], [.longterm, .p2pdma, .write, .hold]]
            for flags in holds {
                switch module.pinResult(address: region.address, pages: pages, flags: flags) {
                case .success(let report): say("holding a \(flags) pin of \(report.pinned) pages (handle \(report.handle))")
                case .failure(let errno): refused("\(flags) pin of p2pmem: \(errno.name)")
                }
            }
            // An MR's pin: ib_umem_get() through the stand-in P2P-capable device, kept as an MR keeps it.
            switch module.umem(address: region.address, length: region.length, writable: true, dmaDevice: provider, hold: true) {
            case .success(let report): say("holding a umem of \(report.pages) p2pmem pages (ib_umem_get, handle \(report.handle))")
            case .failure(let errno): refused("ib_umem_get of p2pmem (held): \(errno.name)")
            }
            keep.append(module)
        } else {
            refused("test module not loaded: no pins held")
        }
        if let name = Verbs.deviceNames().first, let verbs = try? Verbs.open(name),
            let anon = try? MappedRegion.anonymous(length: 1 << 20)
        {
            switch verbs.registerMRResult(address: anon.base, length: anon.length, writable: true) {
            case .success(let mr):
                say("holding a 1 MiB MR on \(name)")
                keep.append(mr)
            case .failure(let errno): refused("ibv_reg_mr of 1 MiB anonymous memory on \(name): \(errno.name)")
            }
            keep.append(verbs)
            keep.append(anon)
        }
        withExtendedLifetime(keep) { _exit(failed ? 1 : 0) }
    }
}
