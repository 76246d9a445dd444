import Testing
@testable import Checks

@Suite("Expectation table")
struct ExpectationTableTests {
    /// The issue's table, row by row: (operation, device, baseline 6.12, with the series).
    static let issueTable: [(Operation, DeviceKind?, Outcome, Outcome)] = [
        (.pin(.p2pmem, [.write]), nil, .refused(.EREMOTEIO), .refused(.EREMOTEIO)),
        (.pin(.p2pmem, [.write, .p2pdma]), nil, .succeeds, .succeeds),
        (.pin(.p2pmem, [.longterm, .write]), nil, .refused(.EFAULT), .refused(.EREMOTEIO)),
        (.pin(.p2pmem, [.longterm, .p2pdma]), nil, .refusedWithWarning(.EINVAL), .succeeds),
        (.pin(.p2pmem, [.longterm, .p2pdma, .write]), nil, .refusedWithWarning(.EINVAL), .succeeds),
        (.registerMR(.p2pmem, writable: true), .virtualDMA, .refused(.EFAULT), .refused(.EREMOTEIO)),
        (.registerMR(.p2pmem, writable: false), .virtualDMA, .refused(.EREMOTEIO), .refused(.EREMOTEIO)),
        (.umemGet(writable: true), .p2pCapablePCI, .refused(.EFAULT), .succeeds),
    ]

    @Test("baseline and series outcomes match the issue's table", arguments: 0..<issueTable.count)
    func issueRow(_ index: Int) {
        let (operation, device, baseline, series) = Self.issueTable[index]
        #expect(ExpectationTable.outcome(for: operation, device: device, applied: .baseline) == baseline)
        #expect(ExpectationTable.outcome(for: operation, device: device, applied: .wholeSeries) == series)
    }

    @Test("the brief's ablations: what leaving out one patch does")
    func ablations() {
        let without = { (patch: SeriesPatch) in Set<SeriesPatch>.wholeSeries.subtracting([patch]) }
        // Without 1 the writable long-term pin gets EFAULT.
        #expect(ExpectationTable.outcome(for: .pin(.p2pmem, [.longterm, .p2pdma, .write]), applied: without(.kernfs)) == .refused(.EFAULT))
        // Without 2 only the fast-path check notices.
        #expect(ExpectationTable.outcome(for: .fastPathServed, applied: without(.gupFastZoneDevice)) == .fellBackToSlowPath)
        #expect(ExpectationTable.outcome(for: .pin(.p2pmem, [.longterm, .p2pdma, .write, .fast]), applied: without(.gupFastZoneDevice)) == .succeeds)
        // Without 3: EINVAL and a WARNING.
        #expect(ExpectationTable.outcome(for: .pin(.p2pmem, [.longterm, .p2pdma]), applied: without(.longtermP2PDMA)) == .refusedWithWarning(.EINVAL))
        // Without 4 ib_umem_get on a P2P-capable device gets EREMOTEIO.
        #expect(ExpectationTable.outcome(for: .umemGet(writable: true), device: .p2pCapablePCI, applied: without(.umemP2P)) == .refused(.EREMOTEIO))
        #expect(ExpectationTable.outcome(for: .registerMR(.p2pmem, writable: true), device: .p2pCapablePCI, applied: without(.umemP2P)) == .refused(.EREMOTEIO))
    }

    @Test("real-filesystem pins stay refused on every kernel, tmpfs ones are allowed")
    func realFilesystem() {
        for applied in [Set<SeriesPatch>.baseline, .wholeSeries] {
            #expect(ExpectationTable.outcome(for: .pin(.ext4Shared, [.longterm, .write]), applied: applied) == .refused(.EFAULT))
            #expect(ExpectationTable.outcome(for: .registerMR(.ext4Shared, writable: true), applied: applied) == .refused(.EFAULT))
            #expect(ExpectationTable.outcome(for: .pin(.tmpfsShared, [.longterm, .write, .fast]), applied: applied) == .succeeds)
        }
    }

    @Test("every operation a check names has a row, and no row is duplicated")
    func coverage() {
        for check in Suite.checks {
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
    }

    @Test("each check's declared patches are exactly those the table says change its outcome", arguments: Suite.checks.map(\.name))
    func declaredPatches(_ name: String) throws {
        let check = try #require(Suite.check(named: name))
        var derived = Set<SeriesPatch>()
        for operation in check.operations {
            for device in DeviceKind.allCases {
                if let row = ExpectationTable.expectation(for: operation, device: device) { derived.formUnion(row.patches) }
            }
        }
        #expect(check.patches == derived)
    }

    @Test("the patch × check matrix an ablation predicts")
    func predictionMatrix() {
        func failing(without patch: SeriesPatch, device: DeviceKind = .virtualDMA) -> [String] {
            Suite.checks.filter { !$0.predictedToPass(applied: Set.wholeSeries.subtracting([patch]), device: device) }.map(\.name)
        }
        // Measured by p2plab test --ablate: without patch 1, gup-fast (patch 2) still pins writable
        // p2pmem long-term, so the fast pin, the fast-path check and ib_umem_get pass; slow pins fail.
        #expect(failing(without: .kernfs) == [
            "regmr.p2pmem", "pin.longterm_p2pdma.slow", "pin.longterm_without_p2pdma_flag", "kernfs.page_mkwrite_refused",
        ])
        #expect(failing(without: .gupFastZoneDevice) == ["pin.fast_path"])
        #expect(failing(without: .longtermP2PDMA) == [
            "pin.longterm_p2pdma.fast", "pin.longterm_p2pdma.slow", "pin.fast_path", "umem.p2p_capable_device",
            "oracle.gup_test", "lifecycle.unbind_while_pinned",
        ])
        #expect(failing(without: .umemP2P) == ["umem.p2p_capable_device"])
        #expect(failing(without: .umemP2P, device: .p2pCapablePCI) == ["regmr.p2pmem", "umem.p2p_capable_device"])
        #expect(Suite.checks.allSatisfy { $0.predictedToPass(applied: .wholeSeries) })
    }

    @Test("observations match outcomes; a WARNING outcome still matches its errno")
    func observationMatching() {
        #expect(Observation.refused(.EINVAL).matches(.refusedWithWarning(.EINVAL)))
        #expect(!Observation.refused(.EFAULT).matches(.refused(.EREMOTEIO)))
        #expect(Observation.refused(nil).matches(.refused(.EINVAL)))
        #expect(!Observation.succeeded.matches(.fellBackToSlowPath))
        #expect(Errno(name: "EREMOTEIO") == .EREMOTEIO)
        #expect(Errno.EREMOTEIO.name == "EREMOTEIO")
    }
}
