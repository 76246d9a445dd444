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
            guard let holder = ctx.holderCommand else { throw CheckSkip("no holder child to start: p2plab-exit-holder is not beside the suite's executable (swift build builds both)") }
            guard let start = ctx.sysfs.provider(provider.address)?.available else { throw CheckFailure("p2pmem/available unreadable") }
            let arguments = holder + [ctx.sysfs.allocatePath(provider.address), ctx.sysfs.path("bus/pci/devices/\(provider.address)/p2pmem/available"),
                                      "\(ctx.debugfs)/\(P2PLAB_DEBUGFS_NAME)", provider.address.description]
            rec.note("+ " + arguments.joined(separator: " "))
            // posix_spawn, not Foundation's Process: 0.24 s from Process.run() to the child's main()
            // under TCG, against a few ms.
            let spawned = monotonicSeconds()
            var argv = arguments.map { strdup($0) } + [nil]
            defer { for pointer in argv { free(pointer) } }
            var output = [CChar](repeating: 0, count: 64 * 1024)
            var status: Int32 = 0
            let rc = p2plab_run_capture(&argv, &output, output.count, &status)
            guard rc == 0 else { throw CheckFailure("starting the holder child \(holder[0]) failed: \(Errno(rawValue: -rc))") }
            rec.note(String(format: "the holder child ran %.2f s", monotonicSeconds() - spawned))
            let text = output.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            for line in text.split(separator: "\n") { rec.note("child: \(line)") }
            let exit = WaitStatus(status)
            let childFailed = !exit.exitedCleanly
            if childFailed {
                rec.fail(exit.signal.map { "holder child killed by signal \($0)" }
                    ?? "holder child exited with \(exit.exitCode): it could not take everything it holds (FAILED lines above)")
            }
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
