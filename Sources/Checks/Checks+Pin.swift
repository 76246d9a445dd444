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
            // The instrument first: a probe that cannot fire would read 0 and look like the fast path.
            if let problem = kprobeProblem(debugfs: ctx.debugfs, symbol: "__get_user_pages") { throw CheckError(problem) }
            let anonymous = try MappedRegion.anonymous(length: pages * pageSize)
            let control = module.pinResult(address: anonymous.address, pages: pages, flags: [.write])
            guard case .success(let controlReport) = control else {
                throw CheckError("positive control: pin_user_pages(WRITE) of \(pages) anonymous pages failed (\(control)); the counter cannot be checked")
            }
            guard let controlCalls = controlReport.slowPathCalls else {
                throw CheckError("the module has no kprobe on __get_user_pages (CONFIG_KPROBES off, or the symbol cannot be probed; its load message in the kernel log says why): slow-path entries cannot be counted")
            }
            rec.note("positive control: pin_user_pages(WRITE) of \(pages) anonymous pages entered __get_user_pages \(controlCalls) time(s)")
            if controlCalls == 0 {
                throw CheckError("the slow-path counter does not count: a slow pin of anonymous memory entered __get_user_pages 0 times (kprobe disarmed?)")
            }
            let flags: PinFlags = [.longterm, .p2pdma, .write, .fast]
            let region = try ctx.mapP2PMem(pages: pages)
            let first = module.pinResult(address: region.address, pages: pages, flags: flags)
            guard case .success(let report) = first else {
                rec.expect(.fastPathServed, observed: CheckRecorder.observation(first))
                return
            }
            rec.note("fast pin: \(report.summary)")
            guard let calls = report.slowPathCalls else { throw CheckError("the slow-path count of the fast pin is unknown although the control counted") }
            // Throughput, for the reader: repeat on the same pages.
            let fast = bestTime(module, region, pages, flags)
            let slow = bestTime(module, region, pages, [.longterm, .p2pdma, .write])
            let anon = bestTime(module, anonymous, pages, [.longterm, .write, .fast])
            rec.note("pages/s: p2pmem fast \(pagesPerSecond(pages, fast ?? 0)), p2pmem slow \(pagesPerSecond(pages, slow ?? 0)), anonymous fast \(pagesPerSecond(pages, anon ?? 0))")
            rec.note("slow_path_calls during the fast pin: \(calls)")
            rec.expect(.fastPathServed, observed: calls == 0 ? .succeeded : .fellBackToSlowPath)
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

    /// Why a kprobe on `symbol` cannot count, from debugfs: kprobes disarmed system-wide
    /// (`kprobes/enabled` is 0) or this probe disabled (`[DISABLED]` or `[GONE]` in `kprobes/list`).
    /// nil when nothing says it is broken (the positive control has the last word).
    static func kprobeProblem(debugfs: String, symbol: String) -> String? {
        let enabled = "\(debugfs)/kprobes/enabled"
        if let state = try? String(contentsOfFile: enabled, encoding: .utf8), state.trimmingCharacters(in: .whitespacesAndNewlines) == "0" {
            return "kprobes are disarmed (\(enabled) is 0), so the slow-path counter cannot count: echo 1 > \(enabled)"
        }
        let list = (try? String(contentsOfFile: "\(debugfs)/kprobes/list", encoding: .utf8)) ?? ""
        for line in list.split(separator: "\n") where line.contains(" \(symbol)+") || line.hasSuffix(" \(symbol)") {
            if line.contains("[DISABLED]") || line.contains("[GONE]") {
                return "the module's kprobe on \(symbol) is disabled (kprobes/list: \(line.trimmingCharacters(in: .whitespaces))): the slow-path counter cannot count"
            }
        }
        return nil
    }
}
