import Catalog
import CKmod
import CP2PLabUAPI
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What the module's PIN ioctl reported.
public struct PinReport: Sendable, Hashable {
    /// Pages pinned (the module unpins them at once unless the pin was held).
    public var pinned: Int
    /// Pinned pages that are PCI P2PDMA pages.
    public var p2pdmaPages: Int
    public var elapsedNanoseconds: UInt64
    /// Slow-GUP entries during the call; nil when the module could not count them.
    public var slowPathCalls: UInt64?
    /// With `.hold`: the id RELEASE takes.
    public var handle: UInt32
}

/// What the module's UMEM ioctl (`ib_umem_get()` with a stand-in HCA) reported.
public struct UmemReport: Sendable, Hashable {
    public var mappedEntries: Int
    public var pages: Int
    public var busAddressEntries: Int
    public var firstDMAAddress: UInt64
    /// `ib_dma_pci_p2p_dma_supported()` of the stand-in device.
    public var p2pSupported: Bool
    /// With `hold`: the id RELEASE takes (the umem stays pinned until then, or until close).
    public var handle: UInt32 = 0
}

/// The module's STATS: what every open file holds, and what was taken since it was loaded.
public struct ModuleStats: Sendable, Hashable, CustomStringConvertible {
    public var heldPins: UInt64
    public var heldPages: UInt64
    public var heldUmems: UInt64
    public var pins: UInt64
    public var umems: UInt64
    /// vm_insert_page() refusals (EINVAL) of a P2PDMA page whose refcount was still 0: a page another
    /// task was freeing, handed out again by the p2pmem pool (see the torture's `FreedPageRefusals`).
    public var zeroRefRefusals: UInt64 = 0
    /// Whether the module's kretprobe that counts them is armed.
    public var zeroRefProbe = false

    public var description: String {
        "held: \(heldPins) pins (\(heldPages) pages), \(heldUmems) umems; taken since load: \(pins) pins, \(umems) umems"
    }
}

/// The module's PGMAP: the dev_pagemap behind a held pin or umem, as memunmap_pages() sees it.
public struct PgmapState: Sendable, Hashable, CustomStringConvertible {
    public var state: UInt32
    /// The pagemap's references left, when they count in atomic mode and the switch is done.
    public var refCount: Int64?
    public var heldPages: UInt64
    public var pageRefcount: Int64

    public init(state: UInt32, refCount: Int64?, heldPages: UInt64, pageRefcount: Int64) {
        self.state = state
        self.refCount = refCount
        self.heldPages = heldPages
        self.pageRefcount = pageRefcount
    }

    func has(_ flag: Int) -> Bool { state & UInt32(flag) != 0 }
    public var device: Bool { has(P2PLAB_PGMAP_DEVICE) }
    public var p2pdma: Bool { has(P2PLAB_PGMAP_P2PDMA) }
    /// Its reference was killed: memunmap_pages() has begun.
    public var dead: Bool { has(P2PLAB_PGMAP_DEAD) }
    public var switching: Bool { has(P2PLAB_PGMAP_SWITCHING) }
    /// `->done` completed: nothing is left to wait for.
    public var done: Bool { has(P2PLAB_PGMAP_DONE) }
    public var dmaPinned: Bool { has(P2PLAB_PGMAP_DMA_PINNED) }

    /// memunmap_pages() waits for page references alone: the reference is dead, its switch to
    /// atomic mode (an RCU grace period) is over, references are left and `->done` has not completed.
    public var waitsForPages: Bool { dead && !switching && (refCount ?? 0) > 0 && !done }

    /// `dead, 16 references left (the hold: 16 pages), first page refcount 1025, dma-pinned`.
    public var description: String {
        guard device else { return "the held page is no ZONE_DEVICE page" }
        var parts: [String] = [p2pdma ? "P2PDMA pagemap" : "ZONE_DEVICE pagemap"]
        parts.append(dead ? "reference killed" : "reference live")
        if switching { parts.append("switching to atomic mode") }
        if let refCount { parts.append("\(refCount) references left (the hold: \(heldPages) pages)") }
        parts.append(done ? "done" : "not done")
        parts.append("first page refcount \(pageRefcount)" + (dmaPinned ? ", dma-pinned" : ""))
        return parts.joined(separator: ", ")
    }
}

/// Errors of finding and loading the test module.
public enum ModuleError: Error, CustomStringConvertible, Sendable {
    case notFound(String)
    case loadFailed(path: String, errno: Errno)
    case notOpened(path: String, errno: Errno)
    case kmod(String)

    public var description: String {
        switch self {
        case .notFound(let why): why
        case .loadFailed(let path, let errno):
            "loading \(path) failed: \(errno); build it against the running kernel (make -C /lib/modules/$(uname -r)/build M=kernel/module)"
        case .notOpened(let path, let errno): "cannot open \(path): \(errno); is debugfs mounted?"
        case .kmod(let why): "libkmod: \(why)"
        }
    }
}

/// The p2plab_test module's debugfs file, driven with its ioctls (kernel/module/p2plab_uapi.h).
public final class TestModule: Sendable {
    private let fd: Int32
    /// The debugfs path it was opened from.
    public let path: String

    /// Opens `/sys/kernel/debug/p2plab_test`. The corresponding C function is `open`.
    public init(debugfs: String = "/sys/kernel/debug") throws(ModuleError) {
        let path = "\(debugfs)/\(P2PLAB_DEBUGFS_NAME)"
        let fd = open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw .notOpened(path: path, errno: .current) }
        self.fd = fd
        self.path = path
    }

    deinit { close(fd) }

    /// Whether the module is loaded (its debugfs file exists).
    public static func isLoaded(debugfs: String = "/sys/kernel/debug") -> Bool {
        FileManager.default.fileExists(atPath: "\(debugfs)/\(P2PLAB_DEBUGFS_NAME)")
    }

    /// Loads the module from `path` unless it is loaded already. The corresponding C functions are
    /// `kmod_module_new_from_path` and `kmod_module_insert_module`.
    /// - Returns: true when this call inserted it, false when it was already there.
    @discardableResult
    public static func load(path: String) throws(ModuleError) -> Bool {
        try _load(path: path).get()
    }

    static func _load(path: String) -> Result<Bool, ModuleError> {
        guard FileManager.default.fileExists(atPath: path) else {
            return .failure(.notFound("no module at \(path): build kernel/module and pass --module or set P2PLAB_MODULE"))
        }
        guard let ctx = kmod_new(nil, nil) else { return .failure(.kmod("kmod_new failed")) }
        defer { kmod_unref(ctx) }
        var module: OpaquePointer?
        let created = kmod_module_new_from_path(ctx, path, &module)
        guard created == 0, let module else {
            return .failure(.loadFailed(path: path, errno: Errno(rawValue: -created)))
        }
        defer { kmod_module_unref(module) }
        // KMOD_MODULE_LIVE: reuse what is there, even when it came from another build.
        if kmod_module_get_initstate(module) == Int32(KMOD_MODULE_LIVE.rawValue) { return .success(false) }
        let inserted = kmod_module_insert_module(module, 0, nil)
        if inserted == -EEXIST { return .success(false) }
        guard inserted == 0 else { return .failure(.loadFailed(path: path, errno: Errno(rawValue: -inserted))) }
        return .success(true)
    }

    private func ioctlResult<T>(_ request: UInt, _ argument: inout T) -> Result<Void, Errno> {
        let rc = withUnsafeMutablePointer(to: &argument) { ioctl(fd, request, $0) }
        return rc < 0 ? .failure(.current) : .success(())
    }

    func _pin(address: UInt64, pages: Int, flags: PinFlags) -> Result<PinReport, Errno> {
        var request = p2plab_pin()
        request.addr = address
        request.nr_pages = UInt64(pages)
        request.flags = flags.rawValue
        if case .failure(let errno) = ioctlResult(p2plab_ioctl_pin, &request) { return .failure(errno) }
        if request.result < 0 { return .failure(Errno(rawValue: Int32(-request.result))) }
        // pin_user_pages() (the slow entry) returns 0, not -EINVAL, when is_valid_gup_args() refuses
        // the flags (6.12); nothing pinned from a non-empty request is that refusal.
        if request.result == 0 && pages > 0 { return .failure(Errno(rawValue: EINVAL)) }
        return .success(PinReport(
            pinned: Int(request.result), p2pdmaPages: Int(request.nr_p2pdma), elapsedNanoseconds: request.elapsed_ns,
            slowPathCalls: request.slow_path_calls == UInt64.max ? nil : request.slow_path_calls,
            handle: request.handle))
    }

    /// Pins `pages` pages at `address` with `flags` and reports what happened; unpinned at once
    /// unless `.hold`. The corresponding C call is `ioctl(P2PLAB_IOCTL_PIN)`.
    public func pin(address: UInt64, pages: Int, flags: PinFlags) throws(Errno) -> PinReport {
        try _pin(address: address, pages: pages, flags: flags).get()
    }

    /// The PIN ioctl as a `Result`, for checks that compare errnos.
    public func pinResult(address: UInt64, pages: Int, flags: PinFlags) -> Result<PinReport, Errno> {
        _pin(address: address, pages: pages, flags: flags)
    }

    /// Releases a held pin (`handle` 0: all of them). The corresponding C call is
    /// `ioctl(P2PLAB_IOCTL_RELEASE)`.
    /// - Returns: pages unpinned.
    @discardableResult
    public func release(handle: UInt32) throws(Errno) -> UInt64 {
        var request = p2plab_release()
        request.handle = handle
        try ioctlResult(p2plab_ioctl_release, &request).get()
        return request.released
    }

    /// Calls `ib_umem_get()` on `length` bytes at `address` with the PCI function `dmaDevice` as
    /// the stand-in HCA's dma_device. The corresponding C call is `ioctl(P2PLAB_IOCTL_UMEM)`.
    /// With `hold` the module keeps the umem, as an MR keeps its pages, until RELEASE or close.
    public func umem(address: UInt64, length: Int, writable: Bool, dmaDevice: PCIAddress, hold: Bool = false) -> Result<UmemReport, Errno> {
        var request = p2plab_umem()
        request.addr = address
        request.length = UInt64(length)
        request.access = (writable ? UInt32(P2PLAB_UMEM_WRITE) : 0) | (hold ? UInt32(P2PLAB_UMEM_HOLD) : 0)
        request.pci_domain = dmaDevice.domain
        request.pci_bus = dmaDevice.bus
        request.pci_devfn = dmaDevice.devfn
        if case .failure(let errno) = ioctlResult(p2plab_ioctl_umem, &request) { return .failure(errno) }
        if request.result < 0 { return .failure(Errno(rawValue: Int32(-request.result))) }
        return .success(UmemReport(
            mappedEntries: Int(request.result), pages: Int(request.nr_pages), busAddressEntries: Int(request.nr_bus_addr),
            firstDMAAddress: request.first_dma_addr, p2pSupported: request.p2p_supported != 0, handle: request.handle))
    }

    /// The dev_pagemap behind the held pin or umem `handle` of this file (`pid` nil) or of the
    /// process `pid`'s file. The corresponding C call is `ioctl(P2PLAB_IOCTL_PGMAP)`.
    public func pgmap(handle: UInt32, pid: Int32? = nil) -> Result<PgmapState, Errno> {
        var request = p2plab_pgmap()
        request.handle = handle
        request.pid = UInt32(bitPattern: pid ?? 0)
        if case .failure(let errno) = ioctlResult(p2plab_ioctl_pgmap, &request) { return .failure(errno) }
        return .success(PgmapState(state: request.state, refCount: request.ref_count < 0 ? nil : request.ref_count,
                                   heldPages: request.held_pages, pageRefcount: request.page_refcount))
    }

    /// `pgmap(handle:pid:)` as the probe PinWaitRule polls: nil once it fails.
    func pgmapProbe(handle: UInt32, pid: Int32? = nil) -> () -> PgmapState? {
        { try? self.pgmap(handle: handle, pid: pid).get() }
    }

    /// A deliberate failure (`P2PLAB_CONTROL_OOPS`, `P2PLAB_CONTROL_HANG`): returns only when the
    /// module refused it (EPERM: `allow_crash` is not set). The corresponding C call is
    /// `ioctl(P2PLAB_IOCTL_CONTROL)`.
    public func control(_ what: Int32) -> Result<Void, Errno> {
        p2plab_ioctl_value(fd, p2plab_ioctl_control, UInt(what)) < 0 ? .failure(.current) : .success(())
    }

    /// The module parameter that lets `control` crash or hang the kernel.
    public static let allowCrashParameter = "/sys/module/p2plab_test/parameters/allow_crash"

    /// What the module holds over every open file. The corresponding C call is `ioctl(P2PLAB_IOCTL_STATS)`.
    public func stats() -> Result<ModuleStats, Errno> {
        var request = p2plab_stats()
        if case .failure(let errno) = ioctlResult(p2plab_ioctl_stats, &request) { return .failure(errno) }
        return .success(ModuleStats(
            heldPins: request.held_pins, heldPages: request.held_pages, heldUmems: request.held_umems,
            pins: request.pins, umems: request.umems, zeroRefRefusals: request.zero_ref_refusals, zeroRefProbe: request.zero_ref_probe != 0))
    }
}

/// The kernel's /sys/kernel/debug/gup_test (CONFIG_GUP_TEST), the oracle for the module's verdict.
public final class GupTest: Sendable {
    private let fd: Int32

    /// Opens the gup_test file. The corresponding C function is `open`.
    public init(debugfs: String = "/sys/kernel/debug") throws(Errno) {
        let fd = open("\(debugfs)/\(P2PLAB_GUP_TEST_DEBUGFS_NAME)", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw .current }
        self.fd = fd
    }

    deinit { close(fd) }

    /// PIN_LONGTERM_BENCHMARK over `[address, address + length)` with `gupFlags` (the kernel's FOLL_*
    /// numbering); returns the bytes it pinned (gup_test reports no errno, only how far it got).
    /// The corresponding C call is `ioctl(PIN_LONGTERM_BENCHMARK)`.
    public func pinLongtermBenchmark(address: UInt64, length: Int, gupFlags: UInt32) -> Result<UInt64, Errno> {
        var request = p2plab_gup_test()
        request.addr = address
        request.size = UInt64(length)
        request.nr_pages_per_call = UInt32(length / pageSize)
        request.gup_flags = gupFlags
        let rc = withUnsafeMutablePointer(to: &request) { ioctl(fd, p2plab_gup_pin_longterm_benchmark, $0) }
        return rc < 0 ? .failure(.current) : .success(request.size)
    }

    /// PIN_LONGTERM_TEST_START: pins `[address, address + length)` with FOLL_LONGTERM (and FOLL_WRITE)
    /// through pin_user_pages() or, with `fast`, pin_user_pages_fast(), and keeps the pin until
    /// ``stopLongtermTest()``. The kernel passes no other flag, so FOLL_PCI_P2PDMA is never set.
    /// The corresponding C call is `ioctl(PIN_LONGTERM_TEST_START)`.
    public func startLongtermTest(address: UInt64, length: Int, write: Bool, fast: Bool) -> Result<Void, Errno> {
        var request = p2plab_pin_longterm_test()
        request.addr = address
        request.size = UInt64(length)
        request.flags = (write ? UInt32(P2PLAB_PIN_LONGTERM_TEST_FLAG_USE_WRITE) : 0) | (fast ? UInt32(P2PLAB_PIN_LONGTERM_TEST_FLAG_USE_FAST) : 0)
        let rc = withUnsafeMutablePointer(to: &request) { ioctl(fd, p2plab_gup_pin_longterm_test_start, $0) }
        return rc < 0 ? .failure(.current) : .success(())
    }

    /// PIN_LONGTERM_TEST_READ: copies the pinned pages out to `buffer` through the kernel's mapping
    /// of them (kmap_local_page). The corresponding C call is `ioctl(PIN_LONGTERM_TEST_READ)`.
    public func readLongtermTest(into buffer: UnsafeMutableRawPointer) -> Result<Void, Errno> {
        var address = UInt64(UInt(bitPattern: buffer))
        let rc = withUnsafeMutablePointer(to: &address) { ioctl(fd, p2plab_gup_pin_longterm_test_read, $0) }
        return rc < 0 ? .failure(.current) : .success(())
    }

    /// PIN_LONGTERM_TEST_STOP: unpins what START pinned. The corresponding C call is
    /// `ioctl(PIN_LONGTERM_TEST_STOP)`.
    @discardableResult
    public func stopLongtermTest() -> Result<Void, Errno> {
        ioctl(fd, p2plab_gup_pin_longterm_test_stop) < 0 ? .failure(.current) : .success(())
    }
}
