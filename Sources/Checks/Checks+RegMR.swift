import Catalog
extension Suite {
    /// MR sizes of regmr.anon: 4 KiB to 16 MiB. 16 MiB already takes ib_umem_get through eight
    /// pin_user_pages_fast chunks of 512 pages; 64 MiB took no other path but cost 0.36 s under TCG
    /// in the kernel zeroing its pages (MAP_POPULATE), a third of the check's time. `p2plab bench`
    /// still registers up to 64 MiB (kernel.regmr_latency).
    static let anonMRSizes = [4 << 10, 64 << 10, 1 << 20, 16 << 20]

    static let regMRChecks: [CheckDefinition] = [
        CheckDefinition("regmr.anon") { ctx, rec in
            let device = try ctx.requireRDMA()
            let verbs = try openVerbs(device.name)
            for size in anonMRSizes {
                let region = try MappedRegion.anonymous(length: size)
                let start = monotonicSeconds()
                let result = verbs.registerMRResult(address: region.base, length: size, writable: true)
                let registered = monotonicSeconds()
                var detail = "\(byteCount(size)): ibv_reg_mr \(String(format: "%.2f", (registered - start) * 1000)) ms"
                if case .success(let mr) = result {
                    let dereg = mr.deregister()
                    detail += ", ibv_dereg_mr \(String(format: "%.2f", (monotonicSeconds() - registered) * 1000)) ms"
                    if case .failure(let errno) = dereg { rec.fail("ibv_dereg_mr of \(byteCount(size)) failed: \(errno)") }
                }
                rec.expect(.registerMR(.anonymous, writable: true), observed: CheckRecorder.observation(result), detail: detail)
            }
            let source = try MappedRegion.anonymous(length: 64 << 10)
            let destination = try MappedRegion.anonymous(length: 64 << 10)
            source.fill(seed: 1)
            try loopbackWrite(verbs: verbs, source: source, destination: destination, destinationMR: nil, recorder: rec)
            if let offset = destination.firstMismatch(seed: 1) {
                rec.fail("RDMA WRITE loopback: destination differs from the source at byte \(offset)")
            } else {
                rec.note("RDMA WRITE loopback of 64 KiB between two RC QPs: bytes intact")
            }
        },
        CheckDefinition("regmr.p2pmem") { ctx, rec in
            let device = try ctx.requireRDMA()
            rec.note("\(device.name) is \(device.kind.rawValue): \(device.reason)")
            // A real HCA the provider cannot reach peer to peer shows neither the series' success
            // path nor the rxe refusal the table predicts: say why instead of failing.
            if let problem = device.p2pProblem { throw CheckSkip(problem) }
            let verbs = try openVerbs(device.name)
            let pages = 16
            let region = try ctx.mapP2PMem(pages: pages)
            let writable = verbs.registerMRResult(address: region.base, length: region.length, writable: true)
            rec.expect(.registerMR(.p2pmem, writable: true), observed: CheckRecorder.observation(writable), device: device.kind)
            if case .success(let mr) = writable {
                // Registered: prove the HCA really writes into the CMB.
                let source = try MappedRegion.anonymous(length: region.length)
                source.fill(seed: 2)
                try loopbackWrite(verbs: verbs, source: source, destination: region, destinationMR: mr, recorder: rec)
                if let offset = region.firstMismatch(seed: 2) {
                    rec.fail("RDMA WRITE into p2pmem: read back differs at byte \(offset)")
                } else {
                    rec.note("RDMA WRITE of \(byteCount(region.length)) into the p2pmem MR read back intact")
                }
                mr.deregister()
            }
            let readOnlyRegion = try ctx.mapP2PMem(pages: pages)
            let readOnly = verbs.registerMRResult(address: readOnlyRegion.base, length: readOnlyRegion.length, writable: false)
            rec.expect(.registerMR(.p2pmem, writable: false), observed: CheckRecorder.observation(readOnly), device: device.kind)
        },
    ]

    static func openVerbs(_ name: String) throws -> VerbsContext {
        do {
            return try Verbs.open(name)
        } catch {
            throw CheckFailure("ibv_open_device(\(name)) failed: \(error)")
        }
    }

    /// RDMA WRITE of `source` into `destination` through a loopback QP pair; registers what is not
    /// registered yet.
    static func loopbackWrite(
        verbs: VerbsContext, source: MappedRegion, destination: MappedRegion, destinationMR: MemoryRegion?,
        recorder: CheckRecorder
    ) throws {
        do {
            let sourceMR = try verbs.registerMR(address: source.base, length: source.length, writable: true)
            let targetMR = try destinationMR
                ?? verbs.registerMR(address: destination.base, length: destination.length, writable: true)
            let pair = try LoopbackPair(context: verbs)
            recorder.note("loopback QP pair on \(verbs.name): \(pair.addressing)")
            try pair.rdmaWrite(
                source: source, sourceMR: sourceMR, destinationAddress: destination.address, destinationMR: targetMR,
                length: source.length)
        } catch {
            throw CheckFailure("RDMA WRITE loopback on \(verbs.name) failed: \(error)")
        }
    }
}
