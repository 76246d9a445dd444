/// How the kernel can use a piece of memory for DMA: decided from sysfs, see `Sysfs.rdmaDeviceInfo`.
public enum DeviceKind: String, Sendable, Hashable, CaseIterable, Codable {
    /// Software RDMA (rxe, siw): no DMA device, `ib_uses_virt_dma()`; patch 4 never asks for P2PDMA.
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
public enum Operation: Sendable, Hashable, CustomStringConvertible {
    /// The module's PIN ioctl on a range of `memory` with `flags` (HOLD does not change the verdict).
    case pin(MemoryKind, PinFlags)
    /// `ibv_reg_mr` of `memory`, writable (LOCAL_WRITE|REMOTE_WRITE) or read-only.
    case registerMR(MemoryKind, writable: Bool)
    /// The module's UMEM ioctl: `ib_umem_get()` with a P2P-capable PCI dma_device on p2pmem.
    case umemGet(writable: Bool)
    /// A LONGTERM|P2PDMA|WRITE|FAST pin of p2pmem was served by gup-fast alone (patch 2).
    case fastPathServed
    /// mmap of the module's sysfs attribute whose vm_ops has ->page_mkwrite.
    case mmapPageMkwriteAttribute
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

    public var description: String {
        switch self {
        case .pin(let memory, let flags): "pin \(memory.rawValue) \(flags)"
        case .registerMR(let memory, let writable): "ibv_reg_mr \(memory.rawValue) \(writable ? "writable" : "read-only")"
        case .umemGet(let writable): "ib_umem_get p2pmem \(writable ? "writable" : "read-only")"
        case .fastPathServed: "gup-fast serves LONGTERM|P2PDMA|WRITE|FAST on p2pmem"
        case .mmapPageMkwriteAttribute: "mmap of a kernfs file with ->page_mkwrite"
        case .writeFaultUpdatesMtime: "write fault on a sysfs bin mmap updates mtime"
        case .mmapResource: "mmap resource0 and p2pmem/allocate"
        case .gupTestLongtermP2PDMA: "gup_test PIN_LONGTERM_BENCHMARK FOLL_PCI_P2PDMA on p2pmem"
        case .unbindWaitsForPin: "unbind waits for a held pin"
        case .exitReleases: "exit releases p2pmem"
        }
    }
}

/// What an operation should do on a given kernel.
public enum Outcome: Sendable, Hashable, CustomStringConvertible {
    /// Pinned, registered, mapped, or the property held.
    case succeeds
    /// Refused with this errno.
    case refused(Errno)
    /// Refused with this errno, and the kernel prints a WARNING (a check fails on the splat too).
    case refusedWithWarning(Errno)
    /// Pinned, but gup-fast gave up and the slow path did the work.
    case fellBackToSlowPath

    public var description: String {
        switch self {
        case .succeeds: "succeeds"
        case .refused(let errno): errno.name
        case .refusedWithWarning(let errno): "\(errno.name) + WARNING"
        case .fellBackToSlowPath: "pinned by the slow path"
        }
    }

    /// The errno this outcome carries, if any.
    public var errno: Errno? {
        switch self {
        case .refused(let errno), .refusedWithWarning(let errno): errno
        case .succeeds, .fellBackToSlowPath: nil
        }
    }
}

/// What a check saw an operation do.
public enum Observation: Sendable, Hashable, CustomStringConvertible {
    case succeeded
    /// Refused; nil when the interface does not say why (gup_test only reports how much it pinned).
    case refused(Errno?)
    case fellBackToSlowPath

    public var description: String {
        switch self {
        case .succeeded: "succeeds"
        case .refused(let errno?): errno.name
        case .refused(nil): "refused"
        case .fellBackToSlowPath: "pinned by the slow path"
        }
    }

    /// Whether this is what `outcome` predicts. A WARNING is judged by the kernel-log scan, not here.
    public func matches(_ outcome: Outcome) -> Bool {
        switch (self, outcome) {
        case (.succeeded, .succeeds), (.fellBackToSlowPath, .fellBackToSlowPath): true
        case (.refused(let seen), .refused(let want)), (.refused(let seen), .refusedWithWarning(let want)):
            seen == nil || seen == want
        default: false
        }
    }
}

/// One rule of an expectation: when every patch in `missing` is absent, the outcome is `outcome`.
/// An empty `missing` is the whole-series default.
public struct ExpectationRule: Sendable, Hashable {
    public var missing: Set<SeriesPatch>
    public var outcome: Outcome

    public init(missing: Set<SeriesPatch>, _ outcome: Outcome) {
        self.missing = missing
        self.outcome = outcome
    }
}

/// What an operation does, per kernel (which patches are applied) and per device kind.
public struct Expectation: Sendable, Hashable {
    public var operation: Operation
    /// nil: the same on every device kind.
    public var device: DeviceKind?
    /// Tried in order; the first whose missing patches are all absent wins.
    public var rules: [ExpectationRule]
    /// Why, for the reader of the table and of `--list`.
    public var why: String

    /// The outcome on a kernel carrying `applied`.
    public func outcome(applied: Set<SeriesPatch>) -> Outcome {
        for rule in rules where rule.missing.isDisjoint(with: applied) && !rule.missing.isEmpty {
            return rule.outcome
        }
        return rules.first { $0.missing.isEmpty }?.outcome ?? .succeeds
    }

    /// Patches whose absence changes the outcome (the rules' missing sets).
    public var patches: Set<SeriesPatch> {
        rules.reduce(into: Set<SeriesPatch>()) { $0.formUnion($1.missing) }
    }
}

/// The expectations of the suite, as data: the issue's table plus what the series' commit messages
/// and mm/gup.c of 6.12 imply for the cases the table leaves out.
public enum ExpectationTable {
    private static func rule(_ missing: Set<SeriesPatch>, _ outcome: Outcome) -> ExpectationRule {
        ExpectationRule(missing: missing, outcome)
    }

    /// Every row. Rule order matters: is_valid_gup_args() (patch 3) refuses before check_vma_flags()
    /// looks at dirty tracking (patch 1), which comes before the per-page P2PDMA test (EREMOTEIO).
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
        Expectation(
            operation: .pin(.p2pmem, [.longterm]), device: nil,
            rules: [rule([], .refused(.EREMOTEIO))],
            why: "read-only long-term pin without FOLL_PCI_P2PDMA: no dirty tracking involved, the page test refuses"),
        Expectation(
            operation: .pin(.p2pmem, [.longterm, .write]), device: nil,
            rules: [rule([.kernfs], .refused(.EFAULT)), rule([], .refused(.EREMOTEIO))],
            why: "without patch 1 kernfs' page_mkwrite makes the VMA need dirty tracking (EFAULT) before the page test"),
        Expectation(
            operation: .pin(.p2pmem, [.longterm, .p2pdma]), device: nil,
            rules: [rule([.longtermP2PDMA], .refusedWithWarning(.EINVAL)), rule([], .succeeds)],
            why: "patch 3 removes the WARN_ON_ONCE in is_valid_gup_args()"),
        Expectation(
            operation: .pin(.p2pmem, [.longterm, .p2pdma, .write]), device: nil,
            rules: [
                rule([.longtermP2PDMA], .refusedWithWarning(.EINVAL)), rule([.kernfs], .refused(.EFAULT)),
                rule([], .succeeds),
            ],
            why: "needs patch 3 (flag combination) and patch 1 (no dirty tracking on kernfs)"),
        // Fast pins never meet kernfs' dirty tracking once patch 2 is in: p2pmem's mmap inserts its PTEs
        // (vm_insert_page) before mmap_region() write-protects vm_page_prot for ->page_mkwrite, so they
        // are writable from the start, and gup_fast_folio_allowed() lets ZONE_DEVICE folios through
        // before it looks at any mapping. Without patch 1 a fast pin therefore still succeeds when patch
        // 2 is there; only with both missing does it fall back to the slow path and get EFAULT.
        // (Measured by p2plab test --ablate: without-1 pins fast, EFAULTs slow.)
        Expectation(
            operation: .pin(.p2pmem, [.longterm, .p2pdma, .write, .fast]), device: nil,
            rules: [
                rule([.longtermP2PDMA], .refusedWithWarning(.EINVAL)), rule([.kernfs, .gupFastZoneDevice], .refused(.EFAULT)),
                rule([], .succeeds),
            ],
            why: "gup-fast serves it with patch 2, whatever kernfs does; without 1 and 2 the slow path meets dirty tracking"),
        Expectation(
            operation: .pin(.p2pmem, [.longterm, .p2pdma, .fast]), device: nil,
            rules: [rule([.longtermP2PDMA], .refusedWithWarning(.EINVAL)), rule([], .succeeds)],
            why: "read-only: no dirty tracking, so only patch 3 matters"),
        Expectation(
            operation: .fastPathServed, device: nil,
            rules: [
                rule([.longtermP2PDMA], .refusedWithWarning(.EINVAL)), rule([.kernfs, .gupFastZoneDevice], .refused(.EFAULT)),
                rule([.gupFastZoneDevice], .fellBackToSlowPath), rule([], .succeeds),
            ],
            why: "without patch 2 gup_fast_folio_allowed() reads the NULL mapping of the ZONE_DEVICE folio and gives up"),

        // Real-filesystem and shmem pages (seeds 003/004): long-term writable pins of ext4 stay refused.
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
            rules: [rule([.kernfs], .refused(.EFAULT)), rule([], .refused(.EREMOTEIO))],
            why: "rxe/siw never get FOLL_PCI_P2PDMA (patch 4 asks the DMA device, and they have none)"),
        Expectation(
            operation: .registerMR(.p2pmem, writable: false), device: .virtualDMA,
            rules: [rule([], .refused(.EREMOTEIO))],
            why: "read-only: no dirty tracking, the page test refuses on every kernel"),
        Expectation(
            operation: .registerMR(.p2pmem, writable: true), device: .p2pCapablePCI,
            rules: [
                rule([.umemP2P, .kernfs], .refused(.EFAULT)), rule([.umemP2P], .refused(.EREMOTEIO)),
                rule([.longtermP2PDMA], .refusedWithWarning(.EINVAL)), rule([.kernfs, .gupFastZoneDevice], .refused(.EFAULT)),
                rule([], .succeeds),
            ],
            why: "needs patch 4 to ask for FOLL_PCI_P2PDMA, patch 3 to allow it long-term, patch 1 for kernfs"),
        Expectation(
            operation: .registerMR(.p2pmem, writable: false), device: .p2pCapablePCI,
            rules: [
                rule([.umemP2P], .refused(.EREMOTEIO)), rule([.longtermP2PDMA], .refusedWithWarning(.EINVAL)),
                rule([], .succeeds),
            ],
            why: "read-only: patch 1 does not matter"),
        Expectation(
            operation: .registerMR(.anonymous, writable: true), device: nil,
            rules: [rule([], .succeeds)], why: "ordinary memory"),
        Expectation(
            operation: .registerMR(.ext4Shared, writable: true), device: nil,
            rules: [rule([], .refused(.EFAULT))],
            why: "seeds 003/004: no long-term writable pins of real-filesystem pages"),
        Expectation(
            operation: .registerMR(.tmpfsShared, writable: true), device: nil,
            rules: [rule([], .succeeds)], why: "shmem"),
        Expectation(
            // Always the module's stand-in: a PCI function with direct DMA, whatever RDMA device is present.
            operation: .umemGet(writable: true), device: nil,
            rules: [
                rule([.umemP2P, .kernfs], .refused(.EFAULT)), rule([.umemP2P], .refused(.EREMOTEIO)),
                rule([.longtermP2PDMA], .refusedWithWarning(.EINVAL)), rule([.kernfs, .gupFastZoneDevice], .refused(.EFAULT)),
                rule([], .succeeds),
            ],
            why: "the module's stand-in HCA takes the same ib_umem_get() path (pin_user_pages_fast) as a real one"),

        // kernfs (patch 1).
        Expectation(
            operation: .mmapPageMkwriteAttribute, device: nil,
            rules: [rule([.kernfs], .succeeds), rule([], .refused(.EINVAL))],
            why: "patch 1: kernfs_fop_mmap() refuses vm_ops with ->page_mkwrite"),
        Expectation(
            operation: .writeFaultUpdatesMtime, device: nil,
            rules: [rule([], .succeeds)],
            why: "patch 1 relies on fault_dirty_shared_page() calling file_update_time()"),
        Expectation(
            operation: .mmapResource, device: nil,
            rules: [rule([], .succeeds)], why: "other kernfs mmap users must keep working"),

        // The kernel's own view, and the device lifecycle.
        Expectation(
            operation: .gupTestLongtermP2PDMA, device: nil,
            rules: [rule([.longtermP2PDMA], .refusedWithWarning(.EINVAL)), rule([], .succeeds)],
            why: "gup_test calls pin_user_pages(FOLL_LONGTERM|FOLL_PCI_P2PDMA) directly"),
        Expectation(
            operation: .unbindWaitsForPin, device: nil,
            rules: [rule([.longtermP2PDMA], .refusedWithWarning(.EINVAL)), rule([], .succeeds)],
            why: "the pin the unbind has to wait for is a long-term P2PDMA pin (read-only: only patch 3 matters)"),
        Expectation(
            operation: .exitReleases, device: nil,
            rules: [rule([], .succeeds)], why: "the child holds only what every kernel allows"),
    ]

    /// The row for an operation on a device kind: a device-specific row first, then a generic one.
    public static func expectation(for operation: Operation, device: DeviceKind? = nil) -> Expectation? {
        rows.first { $0.operation == operation && $0.device == device && device != nil }
            ?? rows.first { $0.operation == operation && $0.device == nil }
    }

    /// The outcome of `operation` on a kernel carrying `applied` (the whole series by default).
    public static func outcome(
        for operation: Operation, device: DeviceKind? = nil, applied: Set<SeriesPatch> = .wholeSeries
    ) -> Outcome? {
        expectation(for: operation, device: device)?.outcome(applied: applied)
    }
}
