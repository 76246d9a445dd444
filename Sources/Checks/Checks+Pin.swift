import Catalog
extension Suite {
    /// Pages per pin in the pin checks: small, so TCG stays quick; the fast-path check uses more.
    static let pinPages = 16

    /// Pins fresh p2pmem with `flags` and compares with the table; also demands that every page
    /// pinned is a P2PDMA page.
    @discardableResult
    static func pinP2PMem(_ ctx: CheckContext, _ rec: CheckRecorder, flags: PinFlags, pages: Int = pinPages) throws -> PinReport? {
        let module = try ctx.requireModule()
        let region = try ctx.mapP2PMem(pages: pages)
        let result = module.pinResult(address: region.address, pages: pages, flags: flags)
        var detail: String?
        if case .success(let report) = result { detail = report.summary }
        rec.expect(.pin(.p2pmem, flags), observed: CheckRecorder.observation(result), detail: detail)
        guard case .success(let report) = result else { return nil }
        if report.pinned != pages { rec.fail("pinned \(report.pinned) of \(pages) pages") }
        if report.p2pdmaPages != report.pinned {
            rec.fail("only \(report.p2pdmaPages) of \(report.pinned) pinned pages are P2PDMA pages")
        }
        return report
    }

    static let pinChecks: [CheckDefinition] = [
        CheckDefinition("pin.longterm_p2pdma.fast") { ctx, rec in
            try pinP2PMem(ctx, rec, flags: [.longterm, .p2pdma, .write, .fast])
            try pinP2PMem(ctx, rec, flags: [.longterm, .p2pdma, .fast])
        },
        CheckDefinition("pin.longterm_p2pdma.slow") { ctx, rec in
            try pinP2PMem(ctx, rec, flags: [.longterm, .p2pdma, .write])
            try pinP2PMem(ctx, rec, flags: [.longterm, .p2pdma])
        },
        CheckDefinition("pin.fast_path") { ctx, rec in
            let module = try ctx.requireModule()
            let pages = 64
            let flags: PinFlags = [.longterm, .p2pdma, .write, .fast]
            let region = try ctx.mapP2PMem(pages: pages)
            let first = module.pinResult(address: region.address, pages: pages, flags: flags)
            guard case .success(let report) = first else {
                rec.expect(.fastPathServed, observed: CheckRecorder.observation(first))
                return
            }
            rec.note("fast pin: \(report.summary)")
            // Throughput, for the note and as the fallback judge: repeat on the same pages.
            let fast = bestTime(module, region, pages, flags)
            let slow = bestTime(module, region, pages, [.longterm, .p2pdma, .write])
            let anonymous = try MappedRegion.anonymous(length: pages * pageSize)
            let anon = bestTime(module, anonymous, pages, [.longterm, .write, .fast])
            rec.note("pages/s: p2pmem fast \(pagesPerSecond(pages, fast ?? 0)), p2pmem slow \(pagesPerSecond(pages, slow ?? 0)), anonymous fast \(pagesPerSecond(pages, anon ?? 0))")
            let observation: Observation
            if let calls = report.slowPathCalls {
                observation = calls == 0 ? .succeeded : .fellBackToSlowPath
                rec.note("slow_path_calls during the fast pin: \(calls)")
            } else if let fast, let slow, slow > 0 {
                // A fast pin that falls back does the fast walk and then the whole slow path: it
                // cannot be much quicker than the slow pin alone.
                let ratio = Double(fast) / Double(slow)
                observation = ratio < 0.7 ? .succeeded : .fellBackToSlowPath
                rec.note(String(format: "slow_path_calls unknown (the module could not count them): judged by throughput, fast/slow time ratio %.2f (fast path if < 0.70)", ratio))
            } else {
                throw CheckFailure("slow_path_calls unknown and the throughput runs failed")
            }
            rec.expect(.fastPathServed, observed: observation)
        },
        CheckDefinition("pin.longterm_without_p2pdma_flag") { ctx, rec in
            try pinP2PMem(ctx, rec, flags: [.longterm])
            try pinP2PMem(ctx, rec, flags: [.longterm, .write])
            try pinP2PMem(ctx, rec, flags: [.write])
            try pinP2PMem(ctx, rec, flags: [.write, .p2pdma])
        },
    ]

    /// The shortest of five pins of `region` with `flags`, in ns, or nil if any pin failed.
    static func bestTime(_ module: TestModule, _ region: MappedRegion, _ pages: Int, _ flags: PinFlags) -> UInt64? {
        var best: UInt64?
        for _ in 0..<5 {
            guard case .success(let report) = module.pinResult(address: region.address, pages: pages, flags: flags) else {
                return nil
            }
            best = min(best ?? .max, report.elapsedNanoseconds)
        }
        return best
    }

    static let umemChecks: [CheckDefinition] = [
        CheckDefinition("umem.p2p_capable_device") { ctx, rec in
            let module = try ctx.requireModule()
            let provider = try ctx.requireProvider()
            var candidates: [(PCIAddress, String)] = [(provider.address, "the CMB NVMe itself")]
            for controller in ctx.sysfs.nvmeControllers() where controller.address != provider.address {
                if ctx.sysfs.behindSameSwitch(controller.address, provider.address) {
                    candidates.append((controller.address, "an NVMe behind the same switch"))
                }
            }
            for (address, role) in candidates {
                let region = try ctx.mapP2PMem(pages: pinPages)
                let result = module.umem(address: region.address, length: region.length, writable: true, dmaDevice: address)
                var detail = "dma_device \(address) (\(role))"
                if case .success(let report) = result {
                    detail += String(format: ": %d entries, %d bus-address entries, %d pages, first DMA address 0x%llx, p2p_supported %d",
                                     report.mappedEntries, report.busAddressEntries, report.pages, report.firstDMAAddress,
                                     report.p2pSupported ? 1 : 0)
                }
                rec.expect(.umemGet(writable: true), observed: CheckRecorder.observation(result), device: .p2pCapablePCI, detail: detail)
                if case .success(let report) = result {
                    if report.mappedEntries == 0 || report.busAddressEntries != report.mappedEntries {
                        rec.fail("\(address): \(report.busAddressEntries) of \(report.mappedEntries) DMA entries are bus addresses")
                    }
                    if report.pages != pinPages { rec.fail("\(address): umem holds \(report.pages) pages, expected \(pinPages)") }
                }
            }
        },
    ]
}
