import Foundation
import Catalog
import CP2PLabUAPI

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Suite {
    /// CLOCK_REALTIME_COARSE in nanoseconds: the clock the kernel stamps inode times with.
    static func coarseRealtimeNanoseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME_COARSE, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }

    /// Waits until the coarse real-time clock reads later than `stamp` (ns), so that any inode time
    /// the kernel sets from then on is later than `stamp`: at most one jiffy. A clock that does not
    /// move within a second is a broken instrument, not a verdict.
    static func waitForCoarseClock(after stamp: Int64, now: () -> Int64 = coarseRealtimeNanoseconds) throws {
        guard waitUntil(seconds: 1, every: 0.001, { now() > stamp }) else {
            throw CheckError("CLOCK_REALTIME_COARSE did not pass \(stamp) ns within 1 s (it reads \(now()) ns): cannot tell an mtime update apart")
        }
    }

    /// Path of one of the module's test attributes below the sysfs root.
    static func attributePath(_ ctx: CheckContext, _ name: String) -> String {
        ctx.sysfs.path("kernel/\(P2PLAB_SYSFS_DIR)/\(name)")
    }

    /// Re-arms every WARN_ON_ONCE (debugfs `clear_warn_once`), so a WARNING the kernel prints once
    /// per boot shows up in this check even when something earlier (another run) printed it.
    static func clearWarnOnce(_ ctx: CheckContext, _ rec: CheckRecorder) {
        let path = ctx.debugfs + "/clear_warn_once"
        do {
            try "1".write(toFile: path, atomically: false, encoding: .utf8)
        } catch {
            rec.note("could not write \(path) (\(error)): a WARN_ON_ONCE this kernel already printed will not print again")
        }
    }

    static let kernfsChecks: [CheckDefinition] = [
        CheckDefinition("kernfs.page_mkwrite_attribute") { ctx, rec in
            let path = attributePath(ctx, P2PLAB_ATTR_MKWRITE)
            clearWarnOnce(ctx, rec)
            let result = MappedRegion._shared(path: path, length: Int(P2PLAB_ATTR_SIZE), writable: true, offset: 0)
            // A kernel that maps it: unmap at once, never fault it.
            if case .success(let region) = result { region.unmap() }
            rec.expect(.mmapPageMkwriteAttribute, observed: CheckRecorder.observation(result), detail: path)
        },
        CheckDefinition("kernfs.close_attribute") { ctx, rec in
            let path = attributePath(ctx, P2PLAB_ATTR_CLOSE)
            clearWarnOnce(ctx, rec)
            let result = MappedRegion._shared(path: path, length: Int(P2PLAB_ATTR_SIZE), writable: true, offset: 0)
            if case .success(let region) = result { region.unmap() }
            rec.expect(.mmapCloseAttribute, observed: CheckRecorder.observation(result), detail: path)
        },
        CheckDefinition("kernfs.mtime_on_write_fault") { ctx, rec in
            let path = attributePath(ctx, P2PLAB_ATTR_PLAIN)
            let fd = open(path, O_RDWR | O_CLOEXEC)
            guard fd >= 0 else { throw CheckFailure("open \(path): \(Errno.current)") }
            defer { close(fd) }
            func mtime() throws -> Int64 {
                var info = stat()
                guard fstat(fd, &info) == 0 else { throw CheckFailure("fstat \(path): \(Errno.current)") }
                return Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec)
            }
            func map() throws -> UnsafeMutableRawPointer {
                let base = mmap(nil, Int(P2PLAB_ATTR_SIZE), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
                guard let base, base != MAP_FAILED else { throw CheckFailure("mmap of \(path) failed: \(Errno.current)") }
                return base
            }
            // Inode times come from the coarse real-time clock, which ticks with the jiffy: before
            // each write, wait until it reads later than the mtime it is compared with.
            let before = try mtime()
            try waitForCoarseClock(after: before)
            let first = try map()
            first.storeBytes(of: 0x5A, as: UInt8.self)
            let after = try mtime()
            munmap(first, Int(P2PLAB_ATTR_SIZE))
            rec.expect(.writeFaultUpdatesMtime, observed: after > before ? .succeeded : .didNotHappen,
                       detail: "write to an untouched page: mtime before \(before) ns, after \(after) ns")

            let second = try map()
            let seen = second.load(as: UInt8.self)
            let afterRead = try mtime()
            try waitForCoarseClock(after: afterRead)
            second.storeBytes(of: seen &+ 1, as: UInt8.self)
            let afterWrite = try mtime()
            munmap(second, Int(P2PLAB_ATTR_SIZE))
            rec.expect(.writeAfterReadUpdatesMtime, observed: afterWrite > afterRead ? .succeeded : .didNotHappen,
                       detail: "read, then write the same page: mtime after the read \(afterRead) ns, after the write \(afterWrite) ns")
        },
        CheckDefinition("kernfs.mmap_resource") { ctx, rec in
            let provider = try ctx.requireProvider()
            let resource = ctx.sysfs.path("bus/pci/devices/\(provider.address)/resource0")
            var ok = true
            do {
                let bar = try MappedRegion.shared(path: resource, length: pageSize, writable: false)
                // NVMe register VS at offset 8: major.minor.tertiary.
                let version = bar.base.load(fromByteOffset: 8, as: UInt32.self)
                let capLow = bar.base.load(fromByteOffset: 0, as: UInt32.self)
                rec.note(String(format: "%@: CAP[31:0] 0x%08x, VS 0x%08x (NVMe %d.%d)", resource, capLow, version,
                                Int(version >> 16), Int((version >> 8) & 0xff)))
                if version == 0 || version == 0xFFFF_FFFF {
                    ok = false
                    rec.fail("VS register reads 0x\(String(version, radix: 16)): BAR0 not reachable through the mapping")
                }
            } catch {
                ok = false
                rec.fail("mmap of \(resource) failed: \(error)")
            }
            let region = try ctx.mapP2PMem(pages: 4)
            region.fill(seed: 3)
            if let offset = region.firstMismatch(seed: 3) {
                ok = false
                rec.fail("p2pmem pattern read back differs at byte \(offset)")
            } else {
                rec.note("p2pmem/allocate: wrote and read back \(byteCount(region.length))")
            }
            rec.expect(.mmapResource, observed: ok ? .succeeded : .refused(nil))
        },
    ]
}
