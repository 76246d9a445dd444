import Catalog
import Testing

extension KernelEffects {
    func without(_ kind: EffectKind) -> KernelEffects {
        KernelEffects(effects.filter { $0.kind != kind }, unknown: unknown)
    }
}

@Suite("Expectation table")
struct ExpectationTableTests {
    static let v2 = SeriesVersion.v2.effects

    /// The lab's table, row by row: (operation, device, baseline 6.12, with v2).
    static let table: [(KernelOperation, DeviceKind?, Outcome, Outcome)] = [
        (.pin(.p2pmem, [.write]), nil, .refused(.EREMOTEIO), .refused(.EREMOTEIO)),
        (.pin(.p2pmem, [.write, .p2pdma]), nil, .succeeds, .succeeds),
        (.pin(.p2pmem, [.longterm, .write]), nil, .refused(.EFAULT), .refused(.EREMOTEIO)),
        (.pin(.p2pmem, [.longterm, .p2pdma]), nil, .refusedWithWarning(.EINVAL), .succeeds),
        (.pin(.p2pmem, [.longterm, .p2pdma, .write]), nil, .refusedWithWarning(.EINVAL), .succeeds),
        (.registerMR(.p2pmem, writable: true), .virtualDMA, .refused(.EFAULT), .refused(.EREMOTEIO)),
        (.registerMR(.p2pmem, writable: false), .virtualDMA, .refused(.EREMOTEIO), .refused(.EREMOTEIO)),
        (.umemGet(writable: true), .p2pCapablePCI, .refused(.EFAULT), .succeeds),
        (.mmapPageMkwriteAttribute, nil, .succeeds, .refused(.EINVAL)),
        (.mmapCloseAttribute, nil, .refused(.EINVAL), .refused(.EINVAL)),
    ]

    @Test("baseline and v2 outcomes", arguments: 0..<table.count)
    func row(_ index: Int) {
        let (operation, device, baseline, series) = Self.table[index]
        #expect(ExpectationTable.outcome(for: operation, device: device, on: .baseline) == baseline)
        #expect(ExpectationTable.outcome(for: operation, device: device, on: Self.v2) == series)
    }

    @Test("what the versions do differently, from their effects")
    func versions() {
        let mkwrite = SeriesVersion.all.map { ExpectationTable.outcome(for: .mmapPageMkwriteAttribute, on: $0.effects) }
        #expect(mkwrite == [
            .refused(.EINVAL), .succeedsWithWarning(at: .kernfsMmap),
            .refusedWithWarning(.EINVAL, at: .kernfsMmap), .refusedWithWarning(.EINVAL, at: .kernfsMmap),
        ])
        let close = SeriesVersion.all.map { ExpectationTable.outcome(for: .mmapCloseAttribute, on: $0.effects) }
        #expect(close == [.refused(.EINVAL), .refused(.EINVAL), .refused(.EINVAL), .refusedWithWarning(.EINVAL, at: .kernfsMmap)])
        let fast = SeriesVersion.all.map { ExpectationTable.outcome(for: .fastPathServed, on: $0.effects) }
        #expect(fast == [.succeeds, .fellBackToSlowPath, .fellBackToSlowPath, .fellBackToSlowPath])
        // Without gup-fast's patch the fast pin still succeeds (the slow path serves it: kernfs dropped page_mkwrite).
        for version in SeriesVersion.all {
            #expect(ExpectationTable.outcome(for: .pin(.p2pmem, [.longterm, .p2pdma, .write, .fast]), on: version.effects) == .succeeds)
            #expect(ExpectationTable.outcome(for: .registerMR(.p2pmem, writable: true), device: .virtualDMA, on: version.effects) == .refused(.EREMOTEIO))
        }
    }

    @Test("leaving one effect out of v2")
    func ablations() {
        #expect(ExpectationTable.outcome(for: .pin(.p2pmem, [.longterm, .p2pdma, .write]), on: Self.v2.without(.kernfsDropsPageMkwrite)) == .refused(.EFAULT))
        #expect(ExpectationTable.outcome(for: .fastPathServed, on: Self.v2.without(.gupFastAcceptsZoneDevice)) == .fellBackToSlowPath)
        #expect(ExpectationTable.outcome(for: .pin(.p2pmem, [.longterm, .p2pdma, .write, .fast]), on: Self.v2.without(.gupFastAcceptsZoneDevice)) == .succeeds)
        #expect(ExpectationTable.outcome(for: .pin(.p2pmem, [.longterm, .p2pdma]), on: Self.v2.without(.gupAllowsLongtermP2PDMA)) == .refusedWithWarning(.EINVAL))
        #expect(ExpectationTable.outcome(for: .umemGet(writable: true), device: .p2pCapablePCI, on: Self.v2.without(.umemAsksForP2PDMA)) == .refused(.EREMOTEIO))
        #expect(ExpectationTable.outcome(for: .registerMR(.p2pmem, writable: true), device: .p2pCapablePCI, on: Self.v2.without(.umemAsksForP2PDMA)) == .refused(.EREMOTEIO))
        // v3 without kernfs' patch: gup-fast does not accept ZONE_DEVICE, so the fast pin meets dirty tracking too.
        #expect(ExpectationTable.outcome(for: .pin(.p2pmem, [.longterm, .p2pdma, .write, .fast]), on: SeriesVersion.v3.effects.without(.kernfsDropsPageMkwrite)) == .refused(.EFAULT))
    }

    @Test("real-filesystem pins stay refused on every kernel, tmpfs ones are allowed")
    func realFilesystem() {
        for kernel in [KernelEffects.baseline] + SeriesVersion.all.map(\.effects) {
            #expect(ExpectationTable.outcome(for: .pin(.ext4Shared, [.longterm, .write]), on: kernel) == .refused(.EFAULT))
            #expect(ExpectationTable.outcome(for: .registerMR(.ext4Shared, writable: true), on: kernel) == .refused(.EFAULT))
            #expect(ExpectationTable.outcome(for: .pin(.tmpfsShared, [.longterm, .write, .fast]), on: kernel) == .succeeds)
        }
    }

    @Test("every operation a check names has a row, and no row is duplicated")
    func coverage() {
        for check in SuiteCatalog.checks {
            for operation in check.operations {
                for device in DeviceKind.allCases {
                    #expect(ExpectationTable.expectation(for: operation, device: device) != nil, "\(check.name): \(operation)")
                }
            }
        }
        var seen = Set<String>()
        for row in ExpectationTable.rows {
            let key = "\(row.operation)|\(row.device?.rawValue ?? "any")"
            #expect(!seen.contains(key), "duplicate row \(key)")
            seen.insert(key)
        }
        #expect(Set(SuiteCatalog.names).count == SuiteCatalog.checks.count)
    }

    /// The checks predicted to fail on `version` without the patch of effect `kind`, on rxe.
    static func failing(_ version: SeriesVersion, without kind: EffectKind?, device: DeviceKind = .virtualDMA) -> [String] {
        let kernel = kind.map { version.effects.without($0) } ?? .baseline
        return SuiteCatalog.checks.filter { $0.prediction(on: kernel, reference: version.effects, device: device) == .fail }.map(\.name)
    }

    @Test("the leave-one-out predictions of every version")
    func predictionMatrix() {
        // gup_test -L with FOLL_PCI_P2PDMA and the exit holder's long-term pins need GUP to allow them.
        // The teardown checks that hold a umem need what ib_umem_get() needs; those that pin read-only
        // need only GUP's LONGTERM|P2PDMA; the mprotect cycle's read-only PTEs keep gup-fast out, so
        // kernfs' patch decides there even where gup-fast accepts ZONE_DEVICE.
        let umemHolders = [
            "teardown.unbind_umem_held", "teardown.unbind_holder_killed", "teardown.hung_task_reported",
            "teardown.remove_while_pinned",
        ]
        let longtermPinners = ["teardown.no_reuse_while_pinned", "teardown.fork_while_pinned", "teardown.remap_while_pinned"]
        let mprotect = "teardown.mprotect_while_pinned"
        // It holds a umem too, and comes last (it takes the provider away and brings it back).
        let hotUnplug = "teardown.hot_unplug_while_pinned"
        let longterm = [
            "pin.longterm_p2pdma.fast", "pin.longterm_p2pdma.slow", "pin.fast_path", "umem.p2p_capable_device",
            "oracle.gup_test", "selftest.gup_test", "lifecycle.exit_releases", "lifecycle.unbind_while_pinned",
        ] + umemHolders + longtermPinners + [mprotect, hotUnplug]
        // Without kernfs dropping page_mkwrite: a write after a read still updates mtime, slow long-term
        // writable pins (gup_test -L, the exit holder) and rxe's MR (perftest) meet dirty tracking.
        let kernfs = ["kernfs.mtime_on_write_fault", "selftest.gup_test", "perftest.p2pmem", "lifecycle.exit_releases"]
        // v2. Measured by p2plab test --ablate: without its kernfs patch, gup-fast still pins writable
        // p2pmem long-term, so the fast pin, the fast-path check and ib_umem_get pass; slow pins fail.
        #expect(Self.failing(.v2, without: .kernfsDropsPageMkwrite) == [
            "regmr.p2pmem", "pin.longterm_p2pdma.slow", "pin.longterm_without_p2pdma_flag", "kernfs.page_mkwrite_attribute",
        ] + kernfs + [mprotect])
        #expect(Self.failing(.v2, without: .gupFastAcceptsZoneDevice) == ["pin.fast_path"])
        #expect(Self.failing(.v2, without: .gupAllowsLongtermP2PDMA) == longterm)
        #expect(Self.failing(.v2, without: .umemAsksForP2PDMA) == ["umem.p2p_capable_device", "lifecycle.exit_releases"] + umemHolders + [mprotect, hotUnplug])
        #expect(Self.failing(.v2, without: .umemAsksForP2PDMA, device: .p2pCapablePCI) == [
            "regmr.p2pmem", "umem.p2p_capable_device", "perftest.p2pmem", "lifecycle.exit_releases",
        ] + umemHolders + [mprotect, hotUnplug])
        // v3…v5 have no gup-fast patch: without kernfs' patch the fast pins meet dirty tracking too.
        for version in [SeriesVersion.v3, .v4, .v5] {
            #expect(Self.failing(version, without: .kernfsDropsPageMkwrite) == [
                "regmr.p2pmem", "pin.longterm_p2pdma.fast", "pin.longterm_p2pdma.slow", "pin.fast_path",
                "pin.longterm_without_p2pdma_flag", "umem.p2p_capable_device", "kernfs.page_mkwrite_attribute",
            ] + kernfs + umemHolders + [mprotect, hotUnplug], "\(version.name)")
            #expect(Self.failing(version, without: .gupAllowsLongtermP2PDMA) == longterm, "\(version.name)")
            #expect(Self.failing(version, without: .umemAsksForP2PDMA) == ["umem.p2p_capable_device", "lifecycle.exit_releases"] + umemHolders + [mprotect, hotUnplug], "\(version.name)")
        }
        #expect(Self.failing(.v5, without: .kernfsWarnsOnClose) == ["kernfs.close_attribute"])
        for version in SeriesVersion.all {
            #expect(SuiteCatalog.checks.allSatisfy { $0.prediction(on: version.effects, reference: version.effects) == .pass })
        }
    }

    @Test("observations match outcomes; a WARNING outcome still matches its errno")
    func observationMatching() {
        #expect(Observation.refused(.EINVAL).matches(.refusedWithWarning(.EINVAL)))
        #expect(!Observation.refused(.EFAULT).matches(.refused(.EREMOTEIO)))
        #expect(Observation.refused(nil).matches(.refused(.EINVAL)))
        #expect(!Observation.succeeded.matches(.fellBackToSlowPath))
        #expect(Observation.succeeded.matches(.succeedsWithWarning(at: .kernfsMmap)))
        #expect(Errno(name: "EREMOTEIO") == .EREMOTEIO)
        #expect(Errno.EREMOTEIO.name == "EREMOTEIO")
    }

    @Test("a WARNING line is matched to its site")
    func warningSites() {
        #expect(WarningSite.kernfsMmap.matches("WARNING: CPU: 0 PID: 312 at fs/kernfs/file.c:466 kernfs_fop_mmap+0x1c4/0x1e0"))
        #expect(!WarningSite.kernfsMmap.matches("WARNING: CPU: 0 PID: 312 at mm/gup.c:2634 is_valid_gup_args+0x6a/0x90"))
        #expect(WarningSite.gupArguments.matches("WARNING: CPU: 0 PID: 312 at mm/gup.c:2634 is_valid_gup_args+0x6a/0x90"))
    }
}

@Suite("What a run's checks need built")
struct SelftestNeedTests {
    @Test("the kernel's selftests are built for the whole suite and the selftest checks, not for a bisect of pin.*")
    func selftests() {
        #expect(SuiteCatalog.needsSelftests(filters: []))
        #expect(SuiteCatalog.needsSelftests(filters: ["selftest.gup_test"]))
        #expect(!SuiteCatalog.needsSelftests(filters: ["pin.*"]))
        #expect(!SuiteCatalog.needsSelftests(filters: ["regmr.p2pmem", "teardown.*"]))
        #expect(SuiteCatalog.checks.filter { $0.requirements.contains(.selftests) }.map(\.name).allSatisfy { $0.hasPrefix("selftest.") })
    }
}
