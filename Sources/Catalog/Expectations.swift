/// How the kernel can use a piece of memory for DMA: decided from sysfs, see `Sysfs.rdmaDeviceInfo`.
public enum DeviceKind: String, Sendable, Hashable, CaseIterable, Codable {
    /// Software RDMA (rxe, siw): no DMA device, `ib_uses_virt_dma()`; ib_umem_get never asks for P2PDMA.
    case virtualDMA = "virtual DMA"
    /// A PCI function the kernel maps for DMA directly (a real HCA, or the module's stand-in HCA).
    case p2pCapablePCI = "P2P-capable PCI"
}

/// The memory an operation works on.
public enum MemoryKind: String, Sendable, Hashable, Codable {
    /// A mapping of `/sys/bus/pci/devices/BDF/p2pmem/allocate`: ZONE_DEVICE pages in the NVMe CMB.
    case p2pmem
    /// Private anonymous memory.
    case anonymous
    /// A MAP_SHARED mapping of a file on ext4 (a real filesystem that needs dirty tracking).
    case ext4Shared = "ext4 MAP_SHARED"
    /// A MAP_SHARED mapping of a file on tmpfs (shmem: no writeback, so pinnable).
    case tmpfsShared = "tmpfs MAP_SHARED"
}

/// What the module is asked to do to pin pages: the uAPI's P2PLAB_PIN_* bits the checks use.
public struct PinFlags: OptionSet, Sendable, Hashable, Codable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let write = PinFlags(rawValue: 1 << 0)
    public static let longterm = PinFlags(rawValue: 1 << 1)
    public static let p2pdma = PinFlags(rawValue: 1 << 2)
    /// `pin_user_pages_fast()` instead of `pin_user_pages()`.
    public static let fast = PinFlags(rawValue: 1 << 3)
    /// Keep the pin until RELEASE or close.
    public static let hold = PinFlags(rawValue: 1 << 4)

    /// `LONGTERM|P2PDMA|WRITE|FAST`, in the kernel's order of importance.
    public var description: String {
        let names: [(PinFlags, String)] = [
            (.longterm, "LONGTERM"), (.p2pdma, "P2PDMA"), (.write, "WRITE"), (.fast, "FAST"), (.hold, "HOLD"),
        ]
        let set = names.filter { contains($0.0) }.map(\.1)
        return set.isEmpty ? "0" : set.joined(separator: "|")
    }
}

/// One thing a check does whose result depends on the kernel.
public enum KernelOperation: Sendable, Hashable, CustomStringConvertible {
    /// The module's PIN ioctl on a range of `memory` with `flags` (HOLD does not change the verdict).
    case pin(MemoryKind, PinFlags)
    /// `ibv_reg_mr` of `memory`, writable (LOCAL_WRITE|REMOTE_WRITE) or read-only.
    case registerMR(MemoryKind, writable: Bool)
    /// The module's UMEM ioctl: `ib_umem_get()` with a P2P-capable PCI dma_device on p2pmem.
    case umemGet(writable: Bool)
    /// A LONGTERM|P2PDMA|WRITE|FAST pin of p2pmem was served by gup-fast alone.
    case fastPathServed
    /// mmap of the module's sysfs attribute whose vm_ops has ->page_mkwrite.
    case mmapPageMkwriteAttribute
    /// mmap of the module's sysfs attribute whose vm_ops has ->close.
    case mmapCloseAttribute
    /// A write fault through a shared mmap of a sysfs bin file updates its mtime.
    case writeFaultUpdatesMtime
    /// mmap of an NVMe's `resource0` and of `p2pmem/allocate`, read and write them.
    case mmapResource
    /// The kernel's gup_test PIN_LONGTERM_BENCHMARK with FOLL_PCI_P2PDMA on p2pmem.
    case gupTestLongtermP2PDMA
    /// Unbinding the provider's driver waits for a held long-term P2PDMA pin, then completes.
    case unbindWaitsForPin
    /// A process that exits holding p2pmem pins, mappings and MRs gives everything back.
    case exitReleases
    /// A write to a page of a shared sysfs bin mmap that was read first updates its mtime.
    case writeAfterReadUpdatesMtime
    /// Every case of the kernel's gup_longterm selftest passes (it judges each pin itself).
    case gupLongtermCases
    /// Unbinding the provider's driver waits for a held umem (an MR's long-term pin), completes
    /// after its release, and a rebind publishes p2pmem again.
    case unbindWaitsForUmem
    /// SIGKILL of the process holding the umem lets a waiting unbind complete.
    case unbindCompletesWhenHolderKilled
    /// With the umem held past hung_task_timeout_secs, the hung-task detector names the unbinding task.
    case hungTaskReportsUnbind
    /// `remove` through sysfs waits for a held umem, then the device goes away; a rescan brings it back.
    case removeWaitsForUmem
    /// A hot-unplug from QEMU's monitor (`device_del`) waits in the guest's removal for a held umem;
    /// after the release QEMU deletes the device, and `device_add` brings it and its p2pmem back.
    case hotUnplugWaitsForUmem
    /// The same hot-unplug with nothing pinned completes, and the device comes back.
    case hotUnplugUnpinned
    /// A held long-term pin's pages are not handed out again after munmap until it is released.
    case poolNotReusedWhilePinned
    /// fork() of a long-term pinned shared p2pmem mapping: the child maps the same pages (no COW);
    /// with MADV_DONTFORK it maps nothing.
    case forkSharesPinnedPages
    /// mremap moves a long-term pinned p2pmem mapping with its pages; munmap leaves the pin holding them.
    case remapWhilePinned
    /// A CPU write through a p2pmem mapping made PROT_READ, then mprotect()ed writable.
    case cpuWriteAfterMprotect
    /// The module's writable UMEM of that mapping: its PTEs are still read-only, so gup-fast
    /// cannot serve it, and the slow path meets kernfs' dirty tracking.
    case umemGetAfterMprotect
    /// fork() with a fresh read-write p2pmem mapping; the child stores to every page and exits.
    case forkChildWritesP2PMem

    public var description: String {
        switch self {
        case .pin(let memory, let flags): "pin \(memory.rawValue) \(flags)"
        case .registerMR(let memory, let writable): "ibv_reg_mr \(memory.rawValue) \(writable ? "writable" : "read-only")"
        case .umemGet(let writable): "ib_umem_get p2pmem \(writable ? "writable" : "read-only")"
        case .fastPathServed: "gup-fast serves LONGTERM|P2PDMA|WRITE|FAST on p2pmem"
        case .mmapPageMkwriteAttribute: "mmap of a kernfs file with ->page_mkwrite"
        case .mmapCloseAttribute: "mmap of a kernfs file with ->close"
        case .writeFaultUpdatesMtime: "write fault on a sysfs bin mmap updates mtime"
        case .mmapResource: "mmap resource0 and p2pmem/allocate"
        case .gupTestLongtermP2PDMA: "gup_test PIN_LONGTERM_BENCHMARK FOLL_PCI_P2PDMA on p2pmem"
        case .unbindWaitsForPin: "unbind waits for a held pin"
        case .exitReleases: "exit releases p2pmem"
        case .writeAfterReadUpdatesMtime: "write after a read of a sysfs bin mmap updates mtime"
        case .gupLongtermCases: "every gup_longterm case passes"
        case .unbindWaitsForUmem: "unbind waits for a held umem"
        case .unbindCompletesWhenHolderKilled: "unbind completes when the holder is killed"
        case .hungTaskReportsUnbind: "hung-task detector reports the unbind"
        case .removeWaitsForUmem: "sysfs remove waits for a held umem"
        case .hotUnplugWaitsForUmem: "device_del hot-unplug waits for a held umem"
        case .hotUnplugUnpinned: "device_del hot-unplug with nothing pinned"
        case .poolNotReusedWhilePinned: "pinned p2pmem not reused after munmap"
        case .forkSharesPinnedPages: "fork shares pinned p2pmem pages"
        case .remapWhilePinned: "mremap/munmap of pinned p2pmem"
        case .cpuWriteAfterMprotect: "CPU write after mprotect(RO→RW) of p2pmem"
        case .umemGetAfterMprotect: "ib_umem_get writable after mprotect(RO→RW) of p2pmem"
        case .forkChildWritesP2PMem: "a forked child writes to a p2pmem mapping"
        }
    }

    /// The kernel code the operation's result depends on (path prefixes): a change with no known
    /// effect that touches one of these makes the operation's outcome unpredictable.
    public var code: [String] {
        let p2pmem = [
            "mm/gup.c", "mm/memremap.c", "mm/memory.c", "mm/mmap.c", "mm/vma.c", "mm/huge_memory.c",
            "include/linux/mm.h", "include/linux/memremap.h", "include/linux/pci-p2pdma.h", "drivers/pci/p2pdma.c",
            "fs/kernfs/", "fs/sysfs/",
        ]
        func memory(_ kind: MemoryKind) -> [String] {
            switch kind {
            case .p2pmem: p2pmem
            case .anonymous: ["mm/gup.c", "mm/memory.c", "include/linux/mm.h"]
            case .ext4Shared: ["mm/gup.c", "mm/memory.c", "mm/filemap.c", "include/linux/mm.h", "fs/ext4/"]
            case .tmpfsShared: ["mm/gup.c", "mm/memory.c", "mm/shmem.c", "include/linux/mm.h"]
            }
        }
        switch self {
        case .pin(let kind, _): return memory(kind)
        case .registerMR(let kind, _): return memory(kind) + ["drivers/infiniband/", "include/rdma/"]
        case .umemGet: return p2pmem + ["drivers/infiniband/core/umem.c", "include/rdma/"]
        case .fastPathServed: return p2pmem
        case .mmapPageMkwriteAttribute, .mmapCloseAttribute: return ["fs/kernfs/", "fs/sysfs/", "mm/mmap.c", "mm/vma.c"]
        case .writeFaultUpdatesMtime, .writeAfterReadUpdatesMtime: return ["fs/kernfs/", "fs/sysfs/", "mm/memory.c", "fs/inode.c"]
        case .gupLongtermCases:
            return ["mm/gup.c", "mm/gup_test.c", "mm/memory.c", "mm/shmem.c", "mm/filemap.c", "mm/hugetlb.c", "include/linux/mm.h", "fs/ext4/"]
        case .mmapResource: return ["fs/kernfs/", "fs/sysfs/", "drivers/pci/", "mm/mmap.c", "mm/memory.c"]
        case .gupTestLongtermP2PDMA: return p2pmem + ["mm/gup_test.c"]
        case .unbindWaitsForPin: return p2pmem + ["drivers/nvme/", "drivers/pci/"]
        case .exitReleases: return p2pmem + ["drivers/infiniband/", "kernel/exit.c"]
        case .unbindWaitsForUmem, .unbindCompletesWhenHolderKilled, .removeWaitsForUmem, .hotUnplugWaitsForUmem:
            return p2pmem + ["drivers/infiniband/core/umem.c", "include/rdma/", "drivers/nvme/", "drivers/pci/", "drivers/base/"]
        case .hotUnplugUnpinned: return p2pmem + ["drivers/nvme/", "drivers/pci/", "drivers/base/"]
        case .hungTaskReportsUnbind:
            return p2pmem + ["drivers/infiniband/core/umem.c", "include/rdma/", "drivers/nvme/", "drivers/pci/", "kernel/hung_task.c"]
        case .poolNotReusedWhilePinned: return p2pmem + ["lib/genalloc.c"]
        case .forkSharesPinnedPages: return p2pmem + ["kernel/fork.c", "mm/madvise.c"]
        case .remapWhilePinned: return p2pmem + ["mm/mremap.c"]
        case .cpuWriteAfterMprotect: return p2pmem + ["mm/mprotect.c"]
        case .umemGetAfterMprotect: return p2pmem + ["mm/mprotect.c", "drivers/infiniband/core/umem.c", "include/rdma/"]
        case .forkChildWritesP2PMem: return p2pmem + ["kernel/fork.c"]
        }
    }
}

/// Where in the kernel a WARNING an outcome carries comes from.
public enum WarningSite: String, Sendable, Hashable, Codable, CustomStringConvertible {
    /// is_valid_gup_args() in mm/gup.c (LONGTERM with PCI_P2PDMA).
    case gupArguments = "is_valid_gup_args"
    /// kernfs_fop_mmap() in fs/kernfs/file.c (an implementation's ->page_mkwrite or ->close).
    case kernfsMmap = "kernfs_fop_mmap"

    /// The source file the kernel names in the WARNING line (`WARNING: … at fs/kernfs/file.c:466 …`).
    public var file: String {
        switch self {
        case .gupArguments: "mm/gup.c"
        case .kernfsMmap: "fs/kernfs/file.c"
        }
    }

    public var description: String { "\(rawValue) (\(file))" }

    /// Whether a kernel-log line is this site's WARNING.
    public func matches(_ line: String) -> Bool {
        line.contains("WARNING") && (line.contains(file) || line.contains(rawValue))
    }
}

/// What an operation should do on a given kernel: its result, and whether the kernel WARNs on the way.
public struct Outcome: Sendable, Hashable, CustomStringConvertible {
    public enum Result: Sendable, Hashable {
        /// Pinned, registered, mapped, or the property held.
        case succeeds
        /// Refused with this errno.
        case refused(Errno)
        /// Pinned, but gup-fast gave up and the slow path did the work.
        case fellBackToSlowPath
        /// A property that is no errno-returning call (mtime updated) does not hold.
        case doesNotHappen
        /// Never completes: a fault the kernel retries forever (the thread spins until it is killed).
        case neverCompletes
    }

    public var result: Result
    /// The WARNING the kernel prints doing it, if it prints one.
    public var warning: WarningSite?

    public init(_ result: Result, warning: WarningSite? = nil) {
        self.result = result
        self.warning = warning
    }

    public static let succeeds = Outcome(.succeeds)
    public static let fellBackToSlowPath = Outcome(.fellBackToSlowPath)
    public static let doesNotHappen = Outcome(.doesNotHappen)
    public static let neverCompletes = Outcome(.neverCompletes)
    public static func refused(_ errno: Errno) -> Outcome { Outcome(.refused(errno)) }
    /// Refused with `errno`, and the kernel prints a WARNING from `site` (is_valid_gup_args by default).
    public static func refusedWithWarning(_ errno: Errno, at site: WarningSite = .gupArguments) -> Outcome {
        Outcome(.refused(errno), warning: site)
    }
    /// Done, but the kernel prints a WARNING from `site` on the way.
    public static func succeedsWithWarning(at site: WarningSite) -> Outcome { Outcome(.succeeds, warning: site) }

    public var description: String {
        let base: String =
            switch result {
            case .succeeds: "succeeds"
            case .refused(let errno): errno.name
            case .fellBackToSlowPath: "pinned by the slow path"
            case .doesNotHappen: "does not happen"
            case .neverCompletes: "never completes"
            }
        return warning == nil ? base : base + " + WARNING"
    }

    /// The errno this outcome carries, if any.
    public var errno: Errno? {
        if case .refused(let errno) = result { return errno }
        return nil
    }
}

/// What a check saw an operation do.
public enum Observation: Sendable, Hashable, CustomStringConvertible {
    case succeeded
    /// Refused; nil when the interface does not say why (gup_test only reports how much it pinned).
    case refused(Errno?)
    case fellBackToSlowPath
    /// The property checked (mtime updated) did not hold.
    case didNotHappen
    /// Still running at the check's deadline, and killed.
    case neverCompleted

    public var description: String {
        switch self {
        case .didNotHappen: "does not happen"
        case .succeeded: "succeeds"
        case .refused(let errno?): errno.name
        case .refused(nil): "refused"
        case .fellBackToSlowPath: "pinned by the slow path"
        case .neverCompleted: "never completes"
        }
    }

    /// Whether this is what `outcome` predicts. A WARNING is judged by the kernel-log scan, not here.
    public func matches(_ outcome: Outcome) -> Bool {
        switch (self, outcome.result) {
        case (.succeeded, .succeeds), (.fellBackToSlowPath, .fellBackToSlowPath), (.didNotHappen, .doesNotHappen), (.neverCompleted, .neverCompletes): true
        case (.refused(let seen), .refused(let want)): seen == nil || seen == want
        default: false
        }
    }
}

/// One rule of an expectation: when every effect kind in `missing` is absent and every effect in
/// `present` is there, the outcome is `outcome`. A rule with neither is the default.
public struct ExpectationRule: Sendable, Hashable {
    public var missing: Set<EffectKind>
    public var present: Set<Effect>
    public var outcome: Outcome

    public init(missing: Set<EffectKind>, present: Set<Effect> = [], _ outcome: Outcome) {
        self.missing = missing
        self.present = present
        self.outcome = outcome
    }

    func applies(to kernel: KernelEffects) -> Bool {
        missing.allSatisfy { !kernel.has($0) } && present.isSubset(of: kernel.effects)
    }
}

/// What an operation does, per kernel (which effects it carries) and per device kind.
public struct Expectation: Sendable, Hashable {
    public var operation: KernelOperation
    /// nil: the same on every device kind.
    public var device: DeviceKind?
    /// Tried in order; the first that applies wins (the last one is the default).
    public var rules: [ExpectationRule]
    /// Why, for the reader of the table and of `--list`.
    public var why: String

    /// The outcome on a kernel carrying `kernel`'s effects.
    public func outcome(on kernel: KernelEffects) -> Outcome {
        rules.first { $0.applies(to: kernel) }?.outcome ?? .succeeds
    }

    /// Effect kinds whose presence or absence changes the outcome.
    public var kinds: Set<EffectKind> {
        rules.reduce(into: Set<EffectKind>()) { $0.formUnion($1.missing); $0.formUnion($1.present.map(\.kind)) }
    }
}

/// The expectations of the suite, as data, in terms of effects: what the series' commit messages
/// and the 6.12 sources (mm/gup.c, fs/kernfs/file.c) imply, and what the lab measured.
public enum ExpectationTable {
    private static func rule(_ missing: Set<EffectKind>, _ outcome: Outcome) -> ExpectationRule {
        ExpectationRule(missing: missing, outcome)
    }

    private static func when(_ present: Effect, _ outcome: Outcome) -> ExpectationRule {
        ExpectationRule(missing: [], present: [present], outcome)
    }

    /// Every row. Rule order matters: is_valid_gup_args() (gup-longterm) refuses before check_vma_flags()
    /// looks at dirty tracking (kernfs-mkwrite), which comes before the per-page P2PDMA test (EREMOTEIO).
    public static let rows: [Expectation] = [
        // p2pmem pins through the module (pin_user_pages / pin_user_pages_fast).
        Expectation(
            operation: .pin(.p2pmem, [.write]), device: nil,
            rules: [rule([], .refused(.EREMOTEIO))],
            why: "a P2PDMA page without FOLL_PCI_P2PDMA is refused on every kernel"),
        Expectation(
            operation: .pin(.p2pmem, [.write, .p2pdma]), device: nil,
            rules: [rule([], .succeeds)],
            why: "short-term P2PDMA pins predate the series"),
        // Fast pins without FOLL_LONGTERM (gup_test -a): gup-fast, or the slow path after it gives up.
        Expectation(
            operation: .pin(.p2pmem, [.write, .p2pdma, .fast]), device: nil,
            rules: [rule([], .succeeds)],
            why: "short-term P2PDMA pins predate the series; the slow path serves them when gup-fast gives up"),
        Expectation(
            operation: .pin(.p2pmem, [.write, .fast]), device: nil,
            rules: [rule([], .refused(.EREMOTEIO))],
            why: "gup-fast leaves a P2PDMA page without FOLL_PCI_P2PDMA to the slow path, which refuses it"),
        // gup_test's PIN_LONGTERM_TEST_START with FLAG_USE_FAST: no FOLL_PCI_P2PDMA, like its slow twin.
        Expectation(
            operation: .pin(.p2pmem, [.longterm, .fast]), device: nil,
            rules: [rule([], .refused(.EREMOTEIO))],
            why: "gup-fast gives up on the P2PDMA page, the slow path's page test refuses"),
        Expectation(
            operation: .pin(.p2pmem, [.longterm, .write, .fast]), device: nil,
            rules: [rule([.kernfsDropsPageMkwrite], .refused(.EFAULT)), rule([], .refused(.EREMOTEIO))],
            why: "as the slow pin once gup-fast gives up: dirty tracking first while kernfs keeps page_mkwrite, then the page test"),
        Expectation(
            operation: .pin(.p2pmem, [.longterm]), device: nil,
            rules: [rule([], .refused(.EREMOTEIO))],
            why: "read-only long-term pin without FOLL_PCI_P2PDMA: no dirty tracking involved, the page test refuses"),
        Expectation(
            operation: .pin(.p2pmem, [.longterm, .write]), device: nil,
            rules: [rule([.kernfsDropsPageMkwrite], .refused(.EFAULT)), rule([], .refused(.EREMOTEIO))],
            why: "while kernfs keeps its page_mkwrite it makes the VMA need dirty tracking (EFAULT) before the page test"),
        Expectation(
            operation: .pin(.p2pmem, [.longterm, .p2pdma]), device: nil,
            rules: [rule([.gupAllowsLongtermP2PDMA], .refusedWithWarning(.EINVAL)), rule([], .succeeds)],
            why: "the series removes the WARN_ON_ONCE in is_valid_gup_args()"),
        Expectation(
            operation: .pin(.p2pmem, [.longterm, .p2pdma, .write]), device: nil,
            rules: [
                rule([.gupAllowsLongtermP2PDMA], .refusedWithWarning(.EINVAL)), rule([.kernfsDropsPageMkwrite], .refused(.EFAULT)),
                rule([], .succeeds),
            ],
            why: "needs GUP to allow the flag combination and kernfs to drop page_mkwrite (no dirty tracking)"),
        // Fast pins never meet kernfs' dirty tracking once gup-fast accepts ZONE_DEVICE: p2pmem's mmap inserts its PTEs
        // (vm_insert_page) before mmap_region() write-protects vm_page_prot for ->page_mkwrite, so they
        // are writable from the start, and gup_fast_folio_allowed() lets ZONE_DEVICE folios through
        // before it looks at any mapping. While kernfs keeps page_mkwrite a fast pin therefore still succeeds
        // when gup-fast accepts ZONE_DEVICE; only with neither does it fall back to the slow path and get EFAULT.
        // (Measured by p2plab test --ablate: without-1 pins fast, EFAULTs slow.)
        Expectation(
            operation: .pin(.p2pmem, [.longterm, .p2pdma, .write, .fast]), device: nil,
            rules: [
                rule([.gupAllowsLongtermP2PDMA], .refusedWithWarning(.EINVAL)), rule([.kernfsDropsPageMkwrite, .gupFastAcceptsZoneDevice], .refused(.EFAULT)),
                rule([], .succeeds),
            ],
            why: "gup-fast serves it when it accepts ZONE_DEVICE, whatever kernfs does; otherwise the slow path meets kernfs' dirty tracking unless kernfs dropped page_mkwrite"),
        Expectation(
            operation: .pin(.p2pmem, [.longterm, .p2pdma, .fast]), device: nil,
            rules: [rule([.gupAllowsLongtermP2PDMA], .refusedWithWarning(.EINVAL)), rule([], .succeeds)],
            why: "read-only: no dirty tracking, so only the LONGTERM|P2PDMA refusal matters"),
        Expectation(
            operation: .fastPathServed, device: nil,
            rules: [
                rule([.gupAllowsLongtermP2PDMA], .refusedWithWarning(.EINVAL)), rule([.kernfsDropsPageMkwrite, .gupFastAcceptsZoneDevice], .refused(.EFAULT)),
                rule([.gupFastAcceptsZoneDevice], .fellBackToSlowPath), rule([], .succeeds),
            ],
            why: "unless gup-fast accepts ZONE_DEVICE, gup_fast_folio_allowed() reads the NULL mapping of the ZONE_DEVICE folio and gives up"),

        // Real-filesystem and shmem pages: long-term writable pins of ext4 stay refused.
        Expectation(
            operation: .pin(.ext4Shared, [.longterm, .write]), device: nil,
            rules: [rule([], .refused(.EFAULT))],
            why: "writable_file_mapping_allowed(): ext4 needs dirty tracking, on every kernel"),
        Expectation(
            operation: .pin(.ext4Shared, [.longterm, .write, .fast]), device: nil,
            rules: [rule([], .refused(.EFAULT))],
            why: "gup-fast rejects file-backed folios for LONGTERM|WRITE, the slow path then refuses"),
        Expectation(
            operation: .pin(.tmpfsShared, [.longterm, .write]), device: nil,
            rules: [rule([], .succeeds)],
            why: "shmem needs no dirty tracking"),
        Expectation(
            operation: .pin(.tmpfsShared, [.longterm, .write, .fast]), device: nil,
            rules: [rule([], .succeeds)],
            why: "shmem_mapping() is allowed by gup-fast"),

        // ibv_reg_mr: ib_umem_get() pins with pin_user_pages_fast(LONGTERM|WRITE [|PCI_P2PDMA]).
        Expectation(
            operation: .registerMR(.p2pmem, writable: true), device: .virtualDMA,
            rules: [rule([.kernfsDropsPageMkwrite], .refused(.EFAULT)), rule([], .refused(.EREMOTEIO))],
            why: "rxe/siw never get FOLL_PCI_P2PDMA (ib_umem_get asks the DMA device, and they have none)"),
        Expectation(
            operation: .registerMR(.p2pmem, writable: false), device: .virtualDMA,
            rules: [rule([], .refused(.EREMOTEIO))],
            why: "read-only: no dirty tracking, the page test refuses on every kernel"),
        Expectation(
            operation: .registerMR(.p2pmem, writable: true), device: .p2pCapablePCI,
            rules: [
                rule([.umemAsksForP2PDMA, .kernfsDropsPageMkwrite], .refused(.EFAULT)), rule([.umemAsksForP2PDMA], .refused(.EREMOTEIO)),
                rule([.gupAllowsLongtermP2PDMA], .refusedWithWarning(.EINVAL)), rule([.kernfsDropsPageMkwrite, .gupFastAcceptsZoneDevice], .refused(.EFAULT)),
                rule([], .succeeds),
            ],
            why: "needs ib_umem_get to ask for FOLL_PCI_P2PDMA, GUP to allow it long-term, kernfs to drop page_mkwrite"),
        Expectation(
            operation: .registerMR(.p2pmem, writable: false), device: .p2pCapablePCI,
            rules: [
                rule([.umemAsksForP2PDMA], .refused(.EREMOTEIO)), rule([.gupAllowsLongtermP2PDMA], .refusedWithWarning(.EINVAL)),
                rule([], .succeeds),
            ],
            why: "read-only: kernfs' page_mkwrite does not matter"),
        Expectation(
            operation: .registerMR(.anonymous, writable: true), device: nil,
            rules: [rule([], .succeeds)], why: "ordinary memory"),
        Expectation(
            operation: .registerMR(.ext4Shared, writable: true), device: nil,
            rules: [rule([], .refused(.EFAULT))],
            why: "no long-term writable pins of real-filesystem pages, on any kernel"),
        Expectation(
            operation: .registerMR(.tmpfsShared, writable: true), device: nil,
            rules: [rule([], .succeeds)], why: "shmem"),
        Expectation(
            // Always the module's stand-in: a PCI function with direct DMA, whatever RDMA device is present.
            operation: .umemGet(writable: true), device: nil,
            rules: [
                rule([.umemAsksForP2PDMA, .kernfsDropsPageMkwrite], .refused(.EFAULT)), rule([.umemAsksForP2PDMA], .refused(.EREMOTEIO)),
                rule([.gupAllowsLongtermP2PDMA], .refusedWithWarning(.EINVAL)), rule([.kernfsDropsPageMkwrite, .gupFastAcceptsZoneDevice], .refused(.EFAULT)),
                rule([], .succeeds),
            ],
            why: "the module's stand-in HCA takes the same ib_umem_get() path (pin_user_pages_fast) as a real one"),

        // kernfs: what kernfs_fop_mmap() does with an implementation's vm_ops.
        Expectation(
            operation: .mmapPageMkwriteAttribute, device: nil,
            rules: [
                when(.kernfsDropsPageMkwrite(.refused), .refused(.EINVAL)),
                when(.kernfsDropsPageMkwrite(.warnedAndMapped), .succeedsWithWarning(at: .kernfsMmap)),
                when(.kernfsDropsPageMkwrite(.warnedOnceAndRefused), .refusedWithWarning(.EINVAL, at: .kernfsMmap)),
                rule([], .succeeds),
            ],
            why: "6.12 wraps the implementation's ->page_mkwrite; the series refuses it (v2), WARNs and maps it (v3), or WARNs and refuses it (v4, v5)"),
        Expectation(
            operation: .mmapCloseAttribute, device: nil,
            rules: [
                when(.kernfsWarnsOnClose, .refusedWithWarning(.EINVAL, at: .kernfsMmap)),
                rule([], .refused(.EINVAL)),
            ],
            why: "kernfs cannot wrap ->close and refuses it on every kernel; v5 adds a WARN_ON_ONCE"),
        Expectation(
            operation: .writeFaultUpdatesMtime, device: nil,
            rules: [rule([], .succeeds)],
            why: "dropping kernfs' page_mkwrite relies on fault_dirty_shared_page() calling file_update_time()"),
        Expectation(
            operation: .writeAfterReadUpdatesMtime, device: nil,
            rules: [rule([.kernfsDropsPageMkwrite], .succeeds), rule([], .doesNotHappen)],
            why: "without a ->page_mkwrite the mapping is not write-notified: a read fault maps the page writable, so the later write does not fault and file_update_time() is not called; kernfs' own ->page_mkwrite, which the series drops, did call it"),
        Expectation(
            operation: .mmapResource, device: nil,
            rules: [rule([], .succeeds)], why: "other kernfs mmap users must keep working"),

        // The kernel's own view, and the device lifecycle.
        Expectation(
            operation: .gupTestLongtermP2PDMA, device: nil,
            rules: [rule([.gupAllowsLongtermP2PDMA], .refusedWithWarning(.EINVAL)), rule([], .succeeds)],
            why: "gup_test calls pin_user_pages(FOLL_LONGTERM|FOLL_PCI_P2PDMA) directly"),
        Expectation(
            operation: .unbindWaitsForPin, device: nil,
            rules: [rule([.gupAllowsLongtermP2PDMA], .refusedWithWarning(.EINVAL)), rule([], .succeeds)],
            why: "the pin the unbind has to wait for is a long-term P2PDMA pin (read-only: only the LONGTERM|P2PDMA refusal matters)"),
        Expectation(
            operation: .exitReleases, device: nil,
            rules: [
                rule([.gupAllowsLongtermP2PDMA], .refusedWithWarning(.EINVAL)), rule([.kernfsDropsPageMkwrite], .refused(.EFAULT)),
                rule([.umemAsksForP2PDMA], .refused(.EREMOTEIO)), rule([], .succeeds),
            ],
            why: "the child holds long-term P2PDMA pins (GUP must allow them; writable ones also need kernfs to drop page_mkwrite) and a umem of the stand-in device (ib_umem_get must ask for P2PDMA)"),
        Expectation(
            operation: .gupLongtermCases, device: nil,
            rules: [rule([], .succeeds)],
            why: "the series changes no pin of memfd, tmpfs or ext4: ext4 R/W MAP_SHARED pins stay refused, which gup_longterm counts as a pass"),

        // Teardown while pinned: the reviewers' objection, measured. Each starts from a pin, so it has
        // the rules of that pin; where the pin is refused there is nothing to wait for.
        Expectation(
            operation: .pin(.p2pmem, [.p2pdma]), device: nil,
            rules: [rule([], .succeeds)],
            why: "a read-only short-term P2PDMA pin predates the series"),
        Expectation(
            operation: .unbindWaitsForUmem, device: nil, rules: umemRules,
            why: "memunmap_pages() waits uninterruptibly until every page of the pgmap is freed; a held umem keeps its pages"),
        Expectation(
            operation: .unbindCompletesWhenHolderKilled, device: nil, rules: umemRules,
            why: "the killed holder's files close, ib_umem_release() unpins, the pgmap's last reference goes"),
        Expectation(
            operation: .hungTaskReportsUnbind, device: nil, rules: umemRules,
            why: "the unbind sleeps in wait_for_completion() (D state) as long as the pin is held: what the reviewers objected to"),
        Expectation(
            operation: .removeWaitsForUmem, device: nil, rules: umemRules,
            why: "remove releases the driver the same way unbind does"),
        Expectation(
            operation: .hotUnplugWaitsForUmem, device: nil, rules: umemRules,
            why: "the guest's hotplug driver removes the slot's device as remove does, so memunmap_pages() waits for the held umem; QEMU deletes the device only once the guest has ejected the slot"),
        Expectation(
            operation: .hotUnplugUnpinned, device: nil, rules: [rule([], .succeeds)],
            why: "with nothing pinned, the guest removes the device and ejects the slot, and QEMU deletes the device; the series changes nothing here"),
        Expectation(
            operation: .poolNotReusedWhilePinned, device: nil, rules: longtermReadOnlyRules,
            why: "a pinned page's refcount keeps it out of p2pdma_page_free(), so gen_pool never gets it back"),
        Expectation(
            operation: .forkSharesPinnedPages, device: nil, rules: longtermReadOnlyRules,
            why: "vm_insert_page() makes the VMA VM_MIXEDMAP, whose PTEs fork copies (vma_needs_copy); shared, so no COW"),
        Expectation(
            operation: .remapWhilePinned, device: nil, rules: longtermReadOnlyRules,
            why: "mremap moves the PTEs of the same pages; a pin is on the page, not the mapping"),
        Expectation(
            operation: .cpuWriteAfterMprotect, device: nil,
            rules: [rule([.kernfsDropsPageMkwrite], .neverCompletes), rule([], .succeeds)],
            why: "while kernfs has page_mkwrite, write-notify keeps the PTEs read-only and do_page_mkwrite() retries the fault forever on a folio without ->mapping"),
        Expectation(
            operation: .umemGetAfterMprotect, device: nil,
            rules: [
                rule([.umemAsksForP2PDMA, .kernfsDropsPageMkwrite], .refused(.EFAULT)), rule([.umemAsksForP2PDMA], .refused(.EREMOTEIO)),
                rule([.gupAllowsLongtermP2PDMA], .refusedWithWarning(.EINVAL)), rule([.kernfsDropsPageMkwrite], .refused(.EFAULT)),
                rule([], .succeeds),
            ],
            why: "mprotect() leaves the PTEs read-only (write-notify, or not yet dirty), so gup-fast gives up on FOLL_WRITE and check_vma_flags() decides"),
        Expectation(
            operation: .forkChildWritesP2PMem, device: nil,
            rules: [rule([], .succeeds)],
            why: "p2pmem_alloc_mmap() inserts writable PTEs at mmap time and fork copies them (VM_MIXEDMAP), so the child's stores need no fault on any kernel"),
    ]

    /// The outcome of the module's writable UMEM on p2pmem (`umemGet(writable: true)`).
    static var umemRules: [ExpectationRule] {
        [
            rule([.umemAsksForP2PDMA, .kernfsDropsPageMkwrite], .refused(.EFAULT)), rule([.umemAsksForP2PDMA], .refused(.EREMOTEIO)),
            rule([.gupAllowsLongtermP2PDMA], .refusedWithWarning(.EINVAL)), rule([.kernfsDropsPageMkwrite, .gupFastAcceptsZoneDevice], .refused(.EFAULT)),
            rule([], .succeeds),
        ]
    }

    /// The outcome of a read-only LONGTERM|P2PDMA pin of p2pmem.
    static var longtermReadOnlyRules: [ExpectationRule] {
        [rule([.gupAllowsLongtermP2PDMA], .refusedWithWarning(.EINVAL)), rule([], .succeeds)]
    }

    /// The row for an operation on a device kind: a device-specific row first, then a generic one.
    public static func expectation(for operation: KernelOperation, device: DeviceKind? = nil) -> Expectation? {
        rows.first { $0.operation == operation && $0.device == device && device != nil }
            ?? rows.first { $0.operation == operation && $0.device == nil }
    }

    /// The outcome of `operation` on a kernel carrying `kernel`'s effects.
    public static func outcome(for operation: KernelOperation, device: DeviceKind? = nil, on kernel: KernelEffects) -> Outcome? {
        expectation(for: operation, device: device)?.outcome(on: kernel)
    }
}
