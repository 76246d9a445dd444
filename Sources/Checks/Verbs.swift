import Catalog
import CIBVerbs

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Thin wrappers over libibverbs: an internal layer returns `Result<_, Errno>`, the public API
/// throws, as swift-system does for file operations.
public enum Verbs {
    /// Names of the RDMA devices libibverbs finds. The corresponding C function is `ibv_get_device_list`.
    public static func deviceNames() -> [String] {
        var count: Int32 = 0
        guard let list = ibv_get_device_list(&count) else { return [] }
        defer { ibv_free_device_list(list) }
        return (0..<Int(count)).compactMap { index in
            list[index].flatMap { ibv_get_device_name($0) }.map { String(cString: $0) }
        }
    }

    /// Opens a device by name. The corresponding C functions are `ibv_get_device_list` and `ibv_open_device`.
    public static func open(_ name: String) throws(Errno) -> VerbsContext {
        try _open(name).get()
    }

    static func _open(_ name: String) -> Result<VerbsContext, Errno> {
        var count: Int32 = 0
        guard let list = ibv_get_device_list(&count) else { return .failure(.current) }
        defer { ibv_free_device_list(list) }
        for index in 0..<Int(count) {
            guard let device = list[index], String(cString: ibv_get_device_name(device)) == name else { continue }
            guard let context = ibv_open_device(device) else { return .failure(.current) }
            return .success(VerbsContext(context: context, name: name))
        }
        return .failure(.ENODEV)
    }
}

/// An open RDMA device with one protection domain and one completion queue.
public final class VerbsContext: @unchecked Sendable {
    let context: UnsafeMutablePointer<ibv_context>
    public let name: String
    private var pd: UnsafeMutablePointer<ibv_pd>?
    private var cq: UnsafeMutablePointer<ibv_cq>?

    init(context: UnsafeMutablePointer<ibv_context>, name: String) {
        self.context = context
        self.name = name
    }

    deinit {
        if let cq { ibv_destroy_cq(cq) }
        if let pd { ibv_dealloc_pd(pd) }
        ibv_close_device(context)
    }

    /// The protection domain, allocated on first use. The corresponding C function is `ibv_alloc_pd`.
    func protectionDomain() -> Result<UnsafeMutablePointer<ibv_pd>, Errno> {
        if let pd { return .success(pd) }
        guard let created = ibv_alloc_pd(context) else { return .failure(.current) }
        pd = created
        return .success(created)
    }

    /// The completion queue, created on first use. The corresponding C function is `ibv_create_cq`.
    func completionQueue() -> Result<UnsafeMutablePointer<ibv_cq>, Errno> {
        if let cq { return .success(cq) }
        guard let created = ibv_create_cq(context, 16, nil, nil, 0) else { return .failure(.current) }
        cq = created
        return .success(created)
    }

    func _registerMR(address: UnsafeMutableRawPointer, length: Int, access: Int32) -> Result<MemoryRegion, Errno> {
        protectionDomain().flatMap { pd in
            guard let mr = ibv_reg_mr(pd, address, length, access) else { return .failure(.current) }
            return .success(MemoryRegion(mr: mr))
        }
    }

    /// Access flags of a writable MR (local write, remote write and read): what perftest asks for.
    public static let writableAccess = Int32(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue
        | IBV_ACCESS_REMOTE_READ.rawValue)
    /// Read-only MR access: remote read needs no FOLL_WRITE.
    public static let readOnlyAccess = Int32(IBV_ACCESS_REMOTE_READ.rawValue)

    /// Registers a memory region. The corresponding C function is `ibv_reg_mr`.
    public func registerMR(address: UnsafeMutableRawPointer, length: Int, writable: Bool) throws(Errno) -> MemoryRegion {
        try _registerMR(address: address, length: length, access: writable ? Self.writableAccess : Self.readOnlyAccess).get()
    }

    /// `ibv_reg_mr` as a `Result`, for checks that compare errnos.
    public func registerMRResult(address: UnsafeMutableRawPointer, length: Int, writable: Bool) -> Result<MemoryRegion, Errno> {
        _registerMR(address: address, length: length, access: writable ? Self.writableAccess : Self.readOnlyAccess)
    }

    /// Port 1's attributes. The corresponding C function is `ibv_query_port`.
    func portAttributes(port: UInt8 = 1) -> Result<ibv_port_attr, Errno> {
        var attr = ibv_port_attr()
        let rc = ___ibv_query_port(context, port, &attr)
        return rc == 0 ? .success(attr) : .failure(Errno(rawValue: rc))
    }

    /// GID `index` of `port`. The corresponding C function is `ibv_query_gid`.
    func gid(port: UInt8 = 1, index: Int32 = 0) -> Result<ibv_gid, Errno> {
        var gid = ibv_gid()
        let rc = ibv_query_gid(context, port, index, &gid)
        return rc == 0 ? .success(gid) : .failure(.current)
    }

    /// The GID index the loopback pair addresses on a RoCE port: the first IPv4-mapped GID
    /// (`::ffff:a.b.c.d`, RoCE v2 over IPv4), else 0 (the link-local GID from the MAC, which rxe can
    /// send to only through IPv6 routing, absent from a kernel without CONFIG_IPV6).
    func roceGIDIndex(port: UInt8 = 1, tableLength: Int32) -> Int32 {
        for index in 0..<min(tableLength, 64) {
            guard case .success(let gid) = gid(port: port, index: index) else { continue }
            if Self.isIPv4Mapped(withUnsafeBytes(of: gid.raw) { Array($0) }) { return index }
        }
        return 0
    }

    /// `::ffff:a.b.c.d`: ten zero bytes, then 0xff 0xff.
    static func isIPv4Mapped(_ raw: [UInt8]) -> Bool {
        raw.count == 16 && raw[0..<10].allSatisfy { $0 == 0 } && raw[10] == 0xff && raw[11] == 0xff
    }
}

/// A registered memory region, deregistered on deinit.
public final class MemoryRegion: @unchecked Sendable {
    let mr: UnsafeMutablePointer<ibv_mr>
    private var registered = true

    init(mr: UnsafeMutablePointer<ibv_mr>) { self.mr = mr }

    deinit { _ = deregister() }

    public var lkey: UInt32 { mr.pointee.lkey }
    public var rkey: UInt32 { mr.pointee.rkey }
    public var address: UInt64 { UInt64(UInt(bitPattern: mr.pointee.addr)) }
    public var length: Int { mr.pointee.length }

    /// Deregisters now. The corresponding C function is `ibv_dereg_mr`.
    @discardableResult
    public func deregister() -> Result<Void, Errno> {
        guard registered else { return .success(()) }
        registered = false
        let rc = ibv_dereg_mr(mr)
        return rc == 0 ? .success(()) : .failure(Errno(rawValue: rc))
    }
}

/// Two RC queue pairs on one device connected to each other, for loopback RDMA WRITE.
public final class LoopbackPair: @unchecked Sendable {
    private let context: VerbsContext
    private let a: UnsafeMutablePointer<ibv_qp>
    private let b: UnsafeMutablePointer<ibv_qp>
    private let cq: UnsafeMutablePointer<ibv_cq>
    /// How the pair addresses its port: `RoCE (GRH, GID index 1)` or `IB (LID n)`.
    public let addressing: String

    /// Creates and connects the pair. The corresponding C functions are `ibv_create_qp` and
    /// `ibv_modify_qp` (RESET→INIT→RTR→RTS).
    public init(context: VerbsContext) throws(Errno) {
        self.context = context
        let pd = try context.protectionDomain().get()
        cq = try context.completionQueue().get()
        let port = try context.portAttributes().get()
        var initAttr = ibv_qp_init_attr()
        initAttr.send_cq = cq
        initAttr.recv_cq = cq
        initAttr.qp_type = IBV_QPT_RC
        initAttr.cap.max_send_wr = 8
        initAttr.cap.max_recv_wr = 8
        initAttr.cap.max_send_sge = 1
        initAttr.cap.max_recv_sge = 1
        guard let qa = ibv_create_qp(pd, &initAttr) else { throw .current }
        guard let qb = ibv_create_qp(pd, &initAttr) else {
            let error = Errno.current
            ibv_destroy_qp(qa)
            throw error
        }
        a = qa
        b = qb
        // rxe and every RoCE port need a GRH: address the port by its IPv4 GID when it has one.
        let ethernet = port.link_layer == UInt8(IBV_LINK_LAYER_ETHERNET)
        let gidIndex = ethernet ? context.roceGIDIndex(tableLength: port.gid_tbl_len) : 0
        let gid: ibv_gid? = ethernet ? try context.gid(index: gidIndex).get() : nil
        addressing = ethernet ? "RoCE (GRH, GID index \(gidIndex))" : "IB (LID \(port.lid))"
        // Every stored property is set: from here on a throw runs deinit, which destroys both QPs
        // (destroying them here too was a double ibv_destroy_qp, a crash in libibverbs when the
        // connection failed, e.g. on GID 0 of rxe without IPv6).
        try Self.connect(qa, to: qb.pointee.qp_num, port: port, gid: gid, gidIndex: UInt8(gidIndex)).get()
        try Self.connect(qb, to: qa.pointee.qp_num, port: port, gid: gid, gidIndex: UInt8(gidIndex)).get()
    }

    deinit {
        ibv_destroy_qp(a)
        ibv_destroy_qp(b)
    }

    private static func modify(_ qp: UnsafeMutablePointer<ibv_qp>, _ attr: inout ibv_qp_attr, _ mask: ibv_qp_attr_mask) -> Result<Void, Errno> {
        let rc = ibv_modify_qp(qp, &attr, Int32(bitPattern: mask.rawValue))
        return rc == 0 ? .success(()) : .failure(Errno(rawValue: rc))
    }

    private static func connect(_ qp: UnsafeMutablePointer<ibv_qp>, to remote: UInt32, port: ibv_port_attr, gid: ibv_gid?, gidIndex: UInt8) -> Result<Void, Errno> {
        var attr = ibv_qp_attr()
        attr.qp_state = IBV_QPS_INIT
        attr.pkey_index = 0
        attr.port_num = 1
        attr.qp_access_flags = UInt32(VerbsContext.writableAccess)
        let initMask = ibv_qp_attr_mask(IBV_QP_STATE.rawValue | IBV_QP_PKEY_INDEX.rawValue | IBV_QP_PORT.rawValue
            | IBV_QP_ACCESS_FLAGS.rawValue)
        if case .failure(let e) = modify(qp, &attr, initMask) { return .failure(e) }

        attr = ibv_qp_attr()
        attr.qp_state = IBV_QPS_RTR
        attr.path_mtu = port.active_mtu
        attr.dest_qp_num = remote
        attr.rq_psn = 0
        attr.max_dest_rd_atomic = 1
        attr.min_rnr_timer = 12
        attr.ah_attr.port_num = 1
        if let gid {
            attr.ah_attr.is_global = 1
            attr.ah_attr.grh.dgid = gid
            attr.ah_attr.grh.sgid_index = gidIndex
            attr.ah_attr.grh.hop_limit = 64
        } else {
            attr.ah_attr.dlid = port.lid
        }
        let rtrMask = ibv_qp_attr_mask(IBV_QP_STATE.rawValue | IBV_QP_AV.rawValue | IBV_QP_PATH_MTU.rawValue
            | IBV_QP_DEST_QPN.rawValue | IBV_QP_RQ_PSN.rawValue | IBV_QP_MAX_DEST_RD_ATOMIC.rawValue
            | IBV_QP_MIN_RNR_TIMER.rawValue)
        if case .failure(let e) = modify(qp, &attr, rtrMask) { return .failure(e) }

        attr = ibv_qp_attr()
        attr.qp_state = IBV_QPS_RTS
        attr.sq_psn = 0
        attr.timeout = 14
        attr.retry_cnt = 7
        attr.rnr_retry = 7
        attr.max_rd_atomic = 1
        let rtsMask = ibv_qp_attr_mask(IBV_QP_STATE.rawValue | IBV_QP_SQ_PSN.rawValue | IBV_QP_TIMEOUT.rawValue
            | IBV_QP_RETRY_CNT.rawValue | IBV_QP_RNR_RETRY.rawValue | IBV_QP_MAX_QP_RD_ATOMIC.rawValue)
        return modify(qp, &attr, rtsMask)
    }

    /// RDMA WRITE of `source` (registered as `sourceMR`) into `destination` through QP a → b, and
    /// waits for its completion. The corresponding C functions are `ibv_post_send` and `ibv_poll_cq`.
    public func rdmaWrite(
        source: MappedRegion, sourceMR: MemoryRegion, destinationAddress: UInt64, destinationMR: MemoryRegion,
        length: Int, timeoutSeconds: Double = 10
    ) throws(Errno) {
        try _rdmaWrite(source: source, sourceMR: sourceMR, destinationAddress: destinationAddress,
                       destinationMR: destinationMR, length: length, timeoutSeconds: timeoutSeconds).get()
    }

    func _rdmaWrite(
        source: MappedRegion, sourceMR: MemoryRegion, destinationAddress: UInt64, destinationMR: MemoryRegion,
        length: Int, timeoutSeconds: Double
    ) -> Result<Void, Errno> {
        var sge = ibv_sge(addr: source.address, length: UInt32(length), lkey: sourceMR.lkey)
        var wr = ibv_send_wr()
        var bad: UnsafeMutablePointer<ibv_send_wr>?
        let rc = withUnsafeMutablePointer(to: &sge) { sgePointer in
            wr.wr_id = 0x7032_706c_6162
            wr.sg_list = sgePointer
            wr.num_sge = 1
            wr.opcode = IBV_WR_RDMA_WRITE
            wr.send_flags = UInt32(IBV_SEND_SIGNALED.rawValue)
            wr.wr.rdma.remote_addr = destinationAddress
            wr.wr.rdma.rkey = destinationMR.rkey
            return ibv_post_send(a, &wr, &bad)
        }
        guard rc == 0 else { return .failure(Errno(rawValue: rc)) }
        var completion = ibv_wc()
        let deadline = monotonicSeconds() + timeoutSeconds
        while monotonicSeconds() < deadline {
            let polled = ibv_poll_cq(cq, 1, &completion)
            if polled < 0 { return .failure(.EIO) }
            if polled == 1 {
                return completion.status == IBV_WC_SUCCESS ? .success(()) : .failure(.EIO)
            }
            usleep(1000)
        }
        return .failure(.ETIMEDOUT)
    }
}

/// Seconds on the monotonic clock.
func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}
