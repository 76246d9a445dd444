import Foundation

/// Something a check needs before it can run; a missing one makes the check SKIP with its reason.
public enum Requirement: String, Sendable, Hashable, CaseIterable, Codable {
    case provider
    case rdmaDevice
    case module
    /// The kernel's own mm selftests, built from the tree under test (the lab builds them only for
    /// a run whose checks need them).
    case selftests
}

/// One check of the suite as the host knows it: its name, what it asserts, what it needs, and the
/// operations whose expected outcomes decide its verdict. The body lives in the Checks target.
public struct CheckInfo: Sendable, Hashable {
    /// Stable dotted name (`pin.fast_path`).
    public var name: String
    /// One line: what the check asserts.
    public var summary: String
    /// The expectation-table rows the check compares against.
    public var operations: [KernelOperation]
    public var requirements: [Requirement]
    /// Kernel code (path prefixes) the check depends on besides its operations' (for checks with no
    /// operations, or that look at more than their operations).
    public var extraCode: [String]
    /// A check that runs only when named exactly (`--check control.oops`), never by default or by a
    /// glob: the deliberate crashes that prove the lab survives one.
    public var optIn: Bool
    /// The check this one runs beside while that one only waits for the kernel (a hung-task
    /// detector's timeout, a hot-unplug in QEMU), when both are chosen: it leaves the p2pmem provider
    /// alone and provokes no kernel report, so the two do not disturb each other; what the kernel
    /// says while both run counts against both. Not a check that uses the RDMA device beside the
    /// hot-unplug: perftest.tmpfs failed there in 1 of 10 runs (ib_read_bw's MR refused with ENOSPC,
    /// its connection lost), so none does until that is understood.
    public var beside: String?

    public init(
        _ name: String, _ summary: String, operations: [KernelOperation] = [], requires requirements: [Requirement] = [],
        code extraCode: [String] = [], optIn: Bool = false, beside: String? = nil
    ) {
        self.name = name
        self.summary = summary
        self.operations = operations
        self.requirements = requirements
        self.extraCode = extraCode
        self.optIn = optIn
        self.beside = beside
    }

    /// Whether `filters` choose this check: every check but the opt-in ones when there are none;
    /// else a glob that matches it, or for an opt-in check its exact name.
    public func selected(by filters: [String]) -> Bool {
        if optIn { return filters.contains(name) }
        return filters.isEmpty || filters.contains { globMatches($0, name) }
    }

    /// Effect kinds whose presence or absence can change the verdict, on any device kind.
    public var kinds: Set<EffectKind> {
        var kinds = Set<EffectKind>()
        for operation in operations {
            for device in DeviceKind.allCases {
                if let row = ExpectationTable.expectation(for: operation, device: device) { kinds.formUnion(row.kinds) }
            }
        }
        return kinds
    }

    /// Every path prefix the check's verdict depends on.
    public var code: [String] {
        var seen = Set<String>()
        return (operations.flatMap(\.code) + extraCode).filter { seen.insert($0).inserted }
    }

    /// The unknown changes among `changes` that touch code this check depends on.
    public func affected(by changes: [UnknownChange]) -> [UnknownChange] {
        let prefixes = code
        return changes.filter { change in change.files.contains { file in prefixes.contains { file.hasPrefix($0) } } }
    }

    /// Whether the check should pass on a kernel carrying `kernel`'s effects when it asserts what a
    /// kernel with `reference`'s effects does (the whole series under test): every operation must
    /// do what it does there, WARNINGs included. A change with no known effect on code the check
    /// depends on leaves it unpredicted.
    ///
    /// With `panicOnWarn` (the kernel booted with panic_on_warn=1), a check that makes `kernel` print
    /// a WARNING (any of its operations' outcomes carries one) is predicted to crash.
    public func prediction(on kernel: KernelEffects, reference: KernelEffects, device: DeviceKind = .virtualDMA, panicOnWarn: Bool = false) -> Prediction {
        let unknown = affected(by: kernel.unknown + reference.unknown.filter { !kernel.unknown.contains($0) })
        if !unknown.isEmpty { return .notPredicted(because: unknown) }
        if panicOnWarn, operations.contains(where: { ExpectationTable.expectation(for: $0, device: device)?.outcome(on: kernel).warning != nil }) {
            return .crash
        }
        let same = operations.allSatisfy { operation in
            guard let row = ExpectationTable.expectation(for: operation, device: device) else { return true }
            return row.outcome(on: kernel) == row.outcome(on: reference)
        }
        return same ? .pass : .fail
    }
}

/// What the expectation table says a check will do on a kernel.
public enum Prediction: Sendable, Hashable, CustomStringConvertible {
    case pass
    case fail
    /// The kernel WARNs doing what the check does, and runs with panic_on_warn=1: the check is CRASHED.
    case crash
    /// A change with no known effect touches code the check depends on.
    case notPredicted(because: [UnknownChange])

    /// Whether a check that ended with `status` (`pass`, `fail`, `crashed`, … as TestStatus names
    /// them) did what this predicts: nil when there is nothing to compare.
    public func agrees(withStatus status: String) -> Bool? {
        switch self {
        case .pass: status == "pass"
        case .fail: status != "pass"
        case .crash: status == "crashed"
        case .notPredicted: nil
        }
    }

    public var description: String {
        switch self {
        case .pass: "pass"
        case .fail: "fail"
        case .crash: "CRASHED"
        case .notPredicted: "not predicted"
        }
    }

    /// true for pass, false for fail or a crash, nil when not predicted.
    public var passes: Bool? {
        switch self {
        case .pass: true
        case .fail, .crash: false
        case .notPredicted: nil
        }
    }
}

/// The suite as data: names, descriptions, needs and operations of every check, in suite order.
public enum SuiteCatalog {
    public static let checks: [CheckInfo] = [
        CheckInfo("env.p2pmem_provider", "a PCI function publishes p2pmem (the NVMe CMB)",
                  code: ["drivers/pci/p2pdma.c", "drivers/nvme/"]),
        CheckInfo("env.rdma_device", "an RDMA device is present (libibverbs)", code: ["drivers/infiniband/"]),
        CheckInfo("env.module", "the p2plab_test module is loaded and its debugfs file opens"),
        CheckInfo(
            "regmr.anon", "anonymous MRs of 4 KiB…16 MiB register and deregister; RC loopback RDMA WRITE moves the bytes intact",
            operations: [.registerMR(.anonymous, writable: true)], requires: [.rdmaDevice]),
        CheckInfo(
            "regmr.p2pmem",
            "ibv_reg_mr of p2pmem: refused with EREMOTEIO on a virtual-DMA device (rxe); registered and written intact by RDMA WRITE on a P2P-capable HCA",
            operations: [.registerMR(.p2pmem, writable: true), .registerMR(.p2pmem, writable: false)],
            requires: [.rdmaDevice, .provider]),
        CheckInfo(
            "pin.longterm_p2pdma.fast",
            "pin_user_pages_fast(LONGTERM|P2PDMA[|WRITE]) of p2pmem pins every page as a P2PDMA page, no WARN",
            operations: [.pin(.p2pmem, [.longterm, .p2pdma, .write, .fast]), .pin(.p2pmem, [.longterm, .p2pdma, .fast])],
            requires: [.module, .provider]),
        CheckInfo(
            "pin.longterm_p2pdma.slow",
            "pin_user_pages(LONGTERM|P2PDMA[|WRITE]) of p2pmem pins every page as a P2PDMA page, no WARN",
            operations: [.pin(.p2pmem, [.longterm, .p2pdma, .write]), .pin(.p2pmem, [.longterm, .p2pdma])],
            requires: [.module, .provider]),
        CheckInfo(
            "pin.fast_path",
            "which path serves a LONGTERM|WRITE|P2PDMA fast pin of p2pmem: gup-fast alone when it accepts ZONE_DEVICE folios, else the slow path, counted by the module's kprobe on __get_user_pages, which must count >= 1 for a slow pin in the same check (a disarmed or missing probe is an ERROR)",
            operations: [.fastPathServed], requires: [.module, .provider]),
        CheckInfo(
            "pin.longterm_without_p2pdma_flag",
            "long-term pins of p2pmem without FOLL_PCI_P2PDMA are refused with EREMOTEIO; short-term P2PDMA pins still work",
            operations: [
                .pin(.p2pmem, [.longterm]), .pin(.p2pmem, [.longterm, .write]), .pin(.p2pmem, [.write]),
                .pin(.p2pmem, [.write, .p2pdma]),
            ],
            requires: [.module, .provider]),
        CheckInfo(
            "umem.p2p_capable_device",
            "ib_umem_get() with a P2P-capable PCI dma_device (the module's stand-in HCA: the CMB NVMe, or an NVMe behind the same switch) maps p2pmem with bus addresses",
            operations: [.umemGet(writable: true)], requires: [.module, .provider]),
        CheckInfo(
            "kernfs.page_mkwrite_attribute",
            "mmap of a sysfs attribute whose vm_ops has ->page_mkwrite: mapped (6.12), refused with EINVAL, WARNed and mapped, or WARNed and refused, as the kernel's kernfs says; the WARNING is demanded exactly when expected",
            operations: [.mmapPageMkwriteAttribute], requires: [.module]),
        CheckInfo(
            "kernfs.close_attribute",
            "mmap of a sysfs attribute whose vm_ops has ->close is refused with EINVAL, with a WARNING only where kernfs WARNs on ->close",
            operations: [.mmapCloseAttribute], requires: [.module]),
        CheckInfo(
            "kernfs.mtime_on_write_fault",
            "mtime of a sysfs bin file mapped MAP_SHARED (held open across both stats): a write to an untouched page updates it on every kernel; a write to a page read first updates it only while kernfs wraps ->page_mkwrite: once kernfs drops it, the read maps the page writable, the write never faults and mtime stays (a behaviour change the series does not mention)",
            operations: [.writeFaultUpdatesMtime, .writeAfterReadUpdatesMtime], requires: [.module]),
        CheckInfo(
            "kernfs.mmap_resource",
            "mmap of the NVMe's resource0 (read a register) and of p2pmem/allocate (write and read a pattern) work, no oops",
            operations: [.mmapResource], requires: [.provider]),
        CheckInfo(
            "fs.longterm_real_fs_refused",
            "long-term writable pins and ibv_reg_mr of MAP_SHARED ext4 pages stay refused; the same on tmpfs is allowed",
            operations: [
                .pin(.ext4Shared, [.longterm, .write]), .pin(.ext4Shared, [.longterm, .write, .fast]),
                .registerMR(.ext4Shared, writable: true), .pin(.tmpfsShared, [.longterm, .write]),
                .pin(.tmpfsShared, [.longterm, .write, .fast]), .registerMR(.tmpfsShared, writable: true),
            ],
            requires: [.module]),
        CheckInfo(
            "oracle.gup_test",
            "the kernel's gup_test PIN_LONGTERM_BENCHMARK with FOLL_PCI_P2PDMA on p2pmem agrees with the module's LONGTERM|P2PDMA pin",
            operations: [.gupTestLongtermP2PDMA], requires: [.module, .provider]),
        CheckInfo(
            "selftest.gup_longterm",
            "the kernel's gup_longterm selftest (its cases nested): long-term R/W and R/O pins, GUP and GUP-fast, of memfd, tmpfs and ext4 mappings (hugetlb where the kernel has it); every case passes (ext4 R/W MAP_SHARED pins must be refused)",
            operations: [.gupLongtermCases], requires: [.selftests], code: ["tools/testing/selftests/mm/"],
            beside: "teardown.hot_unplug_while_pinned"),
        CheckInfo(
            "selftest.gup_test",
            "the kernel's gup_test on p2pmem (-L PIN_LONGTERM_BENCHMARK and -a PIN_FAST_BENCHMARK, with and without FOLL_PCI_P2PDMA) and PIN_LONGTERM_TEST_START/READ (each run nested) agree with the module's pins of the same flags",
            operations: selftestGupTestOperations, requires: [.module, .provider, .selftests],
            code: ["mm/gup_test.c", "tools/testing/selftests/mm/"]),
        CheckInfo(
            "perftest.p2pmem",
            "the series' own test: ib_write_bw and ib_read_bw loopback with --mmap=p2pmem/allocate; on a virtual-DMA device (rxe) the MR is refused (perftest's message and the errno shown: EREMOTEIO with the series, EFAULT without); on a P2P-capable HCA data moves and the bandwidth is reported",
            operations: [.registerMR(.p2pmem, writable: true)], requires: [.rdmaDevice, .provider]),
        CheckInfo(
            "perftest.tmpfs",
            "ib_write_bw and ib_read_bw loopback with --mmap of a tmpfs file register their MRs and move data; the bandwidth is reported",
            operations: [.registerMR(.tmpfsShared, writable: true)], requires: [.rdmaDevice], beside: "teardown.hung_task_reported"),
        CheckInfo(
            "lifecycle.exit_releases",
            "a process that exits holding p2pmem mappings, short- and long-term P2PDMA pins, a held umem and an MR gives everything back (p2pmem available returns to its start); anything the child could not take fails the check",
            operations: [.exitReleases], requires: [.provider]),
        CheckInfo(
            "lifecycle.unbind_while_pinned",
            "with a long-term P2PDMA pin held, unbinding the NVMe blocks until RELEASE, then completes; rebinding publishes p2pmem again",
            operations: [.unbindWaitsForPin], requires: [.module, .provider]),
    ] + teardown

    /// The opt-in controls and the default suite: every check a filter can name. The controls come
    /// first, so the checks named with them show the run going on after the crash.
    public static var all: [CheckInfo] { controls + checks }

    /// Positive controls of the lab itself, never in the default suite: each makes the kernel fail on
    /// purpose (the test module refuses unless its `allow_crash` parameter is set, which only these
    /// checks do) so a run shows that a crash or a hang costs one check, not the suite.
    static let controls: [CheckInfo] = [
        CheckInfo(
            "control.oops",
            "a deliberate oops: the test module BUG()s in p2plab_control_oops(); the kernel panics (oops=panic), the check is CRASHED with its trace, and the lab boots again and goes on with the next check",
            requires: [.module], optIn: true),
        CheckInfo(
            "control.hang",
            "a deliberate hang: a child process blocks in D state in the test module (p2plab_control_hang()) and the check returns; the hung-task detector (timeout 1 s, panic on) reports the child while a later check runs, and the report is attributed to this check, not to the one running",
            requires: [.module], optIn: true),
        CheckInfo(
            "control.hang_brief",
            "a deliberate hang that ends: a child process blocks in D state in the test module for 8 s (p2plab_control_hang_brief()) and the check returns; the hung-task detector (timeout 1 s, panic off) reports the child while a later check runs; the report is attributed to this check by the child's PID (as provoked: it passes) and the check that was running keeps its own verdict",
            requires: [.module], optIn: true),
    ]

    /// Teardown while pinned: what the reviewers' objection (a long-term pin blocks unbind, and the
    /// holder cannot be made to let go) looks like on a running kernel.
    static let teardown: [CheckInfo] = [
        CheckInfo(
            "teardown.unbind_umem_held",
            "with an MR's umem (the module's held ib_umem_get) on p2pmem, unbinding the NVMe blocks (its task in D state in memunmap_pages, still there 0.5 s later); releasing the umem completes it; rebinding publishes p2pmem again; the blocking time is reported",
            operations: [.umemGet(writable: true), .unbindWaitsForUmem], requires: [.module, .provider]),
        CheckInfo(
            "teardown.unbind_holder_killed",
            "a child process holds an MR's umem on p2pmem; unbind blocks until the child is SIGKILLed, then completes within 30 s",
            operations: [.umemGet(writable: true), .unbindCompletesWhenHolderKilled], requires: [.module, .provider]),
        CheckInfo(
            "teardown.hung_task_reported",
            "with the umem held past hung_task_timeout_secs (1 s for the check, set once the unbinding task waits in memunmap_pages; hung-task panic off), the hung-task detector reports the unbinding task with its trace: the wait the reviewers objected to",
            operations: [.umemGet(writable: true), .hungTaskReportsUnbind], requires: [.module, .provider]),
        CheckInfo(
            "teardown.remove_while_pinned",
            "with an MR's umem on p2pmem, `remove` of the NVMe through sysfs blocks without an oops; after the release the device goes away, and a rescan brings it and its p2pmem back",
            operations: [.umemGet(writable: true), .removeWaitsForUmem], requires: [.module, .provider]),
        CheckInfo(
            "teardown.no_reuse_while_pinned",
            "pin p2pmem long-term and munmap it: the pool does not hand those pages out again (mapping the whole free pool fails with ENOMEM, the rest has other PFNs) until the pin is released",
            operations: [.pin(.p2pmem, [.longterm, .p2pdma]), .poolNotReusedWhilePinned], requires: [.module, .provider]),
        CheckInfo(
            "teardown.fork_while_pinned",
            "fork() with a long-term pinned shared p2pmem mapping: the child maps the same PFNs and its writes reach the parent (no COW); with MADV_DONTFORK, as rdma-core sets it, the child has no mapping",
            operations: [.pin(.p2pmem, [.longterm, .p2pdma]), .forkSharesPinnedPages], requires: [.module, .provider]),
        CheckInfo(
            "teardown.remap_while_pinned",
            "mremap moves a long-term pinned p2pmem mapping with its PFNs and data; after munmap the pages stay out of the pool until the pin is released",
            operations: [.pin(.p2pmem, [.longterm, .p2pdma]), .remapWhilePinned], requires: [.module, .provider]),
        CheckInfo(
            "teardown.mprotect_while_pinned",
            "p2pmem mapped PROT_READ with a P2PDMA pin held, then mprotect()ed writable: a CPU write completes and ib_umem_get() pins it writable long-term (while kernfs has page_mkwrite the write faults forever and GUP says EFAULT)",
            operations: [.pin(.p2pmem, [.p2pdma]), .cpuWriteAfterMprotect, .umemGetAfterMprotect], requires: [.module, .provider]),
        // Last: it takes the provider away and brings it back, so a failure to bring it back costs no other check.
        CheckInfo(
            "teardown.hot_unplug_while_pinned",
            "in the lab machine, with an MR's umem on p2pmem, a hot-unplug of the NVMe from QEMU's monitor (device_del) starts the guest's hotplug removal (ACPI hotplug on the lab's q35), which waits in memunmap_pages with no DEVICE_DELETED and no oops; after the release the device goes away and QEMU reports DEVICE_DELETED, and device_add brings the NVMe and its p2pmem back; where no umem can be held, the same hot-unplug with nothing pinned must complete; the waits are reported",
            operations: [.umemGet(writable: true), .hotUnplugWaitsForUmem, .hotUnplugUnpinned], requires: [.module, .provider],
            code: ["drivers/pci/hotplug/"]),
    ]

    /// selftest.gup_test's operations: gup_test -L/-a with and without FOLL_PCI_P2PDMA (FOLL_WRITE
    /// unless -W), and PIN_LONGTERM_TEST_START (FOLL_LONGTERM[|FOLL_WRITE], GUP or GUP-fast), each
    /// as the module's pin of the same flags.
    public static let selftestGupTestOperations: [KernelOperation] = [
        .pin(.p2pmem, [.longterm, .p2pdma, .write]), .pin(.p2pmem, [.longterm, .p2pdma]), .pin(.p2pmem, [.longterm, .write]),
        .pin(.p2pmem, [.write, .p2pdma, .fast]), .pin(.p2pmem, [.write, .fast]),
        .pin(.p2pmem, [.longterm]), .pin(.p2pmem, [.longterm, .write]), .pin(.p2pmem, [.longterm, .fast]),
        .pin(.p2pmem, [.longterm, .write, .fast]),
    ]

    /// The check called `name`.
    public static func check(named name: String) -> CheckInfo? {
        all.first { $0.name == name }
    }

    public static var names: [String] { checks.map(\.name) }

    /// The checks `filters` choose (see ``CheckInfo/selected(by:)``), in the order the suite runs
    /// them (``runOrder(_:info:)``), the controls first.
    public static func select(filters: [String]) -> [CheckInfo] {
        runOrder(all.filter { $0.selected(by: filters) }, info: { $0 })
    }

    /// `items` (in suite order) in the order the runner takes them: a check that runs beside another
    /// (``CheckInfo/beside``) right after that one when both are among them, else in its own place.
    public static func runOrder<Item>(_ items: [Item], info: (Item) -> CheckInfo) -> [Item] {
        let names = Set(items.map { info($0).name })
        var ordered: [Item] = []
        for item in items where !(info(item).beside.map(names.contains) ?? false) {
            ordered.append(item)
            ordered += items.filter { info($0).beside == info(item).name }
        }
        return ordered
    }

    /// Whether the checks `filters` select need the kernel's mm selftests built.
    public static func needsSelftests(filters: [String]) -> Bool {
        select(filters: filters).contains { $0.requirements.contains(.selftests) }
    }
}

/// Glob matching for `--filter` (fnmatch(3) without flags: `*` crosses dots).
public func globMatches(_ pattern: String, _ name: String) -> Bool {
    fnmatch(pattern, name, 0) == 0
}
