import Foundation

/// A PCI function address, `dddd:bb:ss.f`.
public struct PCIAddress: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var domain: UInt32
    public var bus: UInt32
    public var slot: UInt32
    public var function: UInt32

    /// Parses `0000:03:00.0` (the names of /sys/bus/pci/devices entries).
    public init?(_ text: String) {
        let parts = text.split(separator: ":")
        guard parts.count == 3, let domain = UInt32(parts[0], radix: 16), let bus = UInt32(parts[1], radix: 16)
        else { return nil }
        let devfn = parts[2].split(separator: ".")
        guard devfn.count == 2, let slot = UInt32(devfn[0], radix: 16), let function = UInt32(devfn[1], radix: 16),
            slot < 32, function < 8
        else { return nil }
        self.domain = domain
        self.bus = bus
        self.slot = slot
        self.function = function
    }

    /// PCI_DEVFN(slot, func), as the module's UMEM ioctl wants it.
    public var devfn: UInt32 { (slot << 3) | function }

    public var description: String {
        String(format: "%04x:%02x:%02x.%x", domain, bus, slot, function)
    }

    public static func < (lhs: PCIAddress, rhs: PCIAddress) -> Bool { lhs.description < rhs.description }
}

/// A PCI function that publishes (or at least registers) P2PDMA memory: `…/p2pmem/` exists.
public struct P2PMemProvider: Sendable, Hashable {
    public var address: PCIAddress
    /// `p2pmem/size`, bytes.
    public var size: UInt64
    /// `p2pmem/available`, bytes.
    public var available: UInt64
    /// `p2pmem/published`: whether userspace may allocate it.
    public var published: Bool
}

/// An NVMe controller as sysfs shows it.
public struct NVMeController: Sendable, Hashable {
    public var address: PCIAddress
    /// `nvme0`
    public var name: String
    /// Namespace block devices, `nvme0n1`, sorted.
    public var namespaces: [String]
    /// Whether the function registered a p2pmem (CMB) region.
    public var hasP2PMem: Bool
    /// The bound driver's name, nil when unbound.
    public var driver: String?
}

/// An RDMA device as sysfs shows it, with what the suite decides about its DMA.
public struct RDMADeviceInfo: Sendable, Hashable {
    public var name: String
    public var kind: DeviceKind
    /// The PCI function behind it, when there is one.
    public var pciAddress: PCIAddress?
    /// Why the kind was chosen, for diagnostics.
    public var reason: String
}

/// Reads the kernel's sysfs below an injectable root, so unit tests run over a fake tree.
public struct Sysfs: Sendable {
    /// `/sys`, or a temp directory holding a fake tree.
    public var root: URL

    public init(root: URL = URL(fileURLWithPath: "/sys")) {
        self.root = root
    }

    /// The path of `relative` below the root.
    public func path(_ relative: String) -> String {
        root.appendingPathComponent(relative).path
    }

    /// The trimmed contents of a sysfs attribute, or nil.
    public func read(_ relative: String) -> String? {
        guard let data = FileManager.default.contents(atPath: path(relative)),
            let text = String(data: data, encoding: .utf8)
        else { return nil }
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private func entries(_ relative: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path(relative))) ?? []).sorted()
    }

    private func exists(_ relative: String) -> Bool {
        FileManager.default.fileExists(atPath: path(relative))
    }

    /// The last path component a symlink points to (`nvme` for a `driver` link), or nil.
    private func linkTarget(_ relative: String) -> String? {
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: path(relative)) else {
            return nil
        }
        return URL(fileURLWithPath: target).lastPathComponent
    }

    /// The resolved path of a sysfs entry relative to the root: /sys/bus/pci/devices entries are
    /// links into /sys/devices, whose nesting is the PCI topology.
    public func resolved(_ relative: String) -> String {
        URL(fileURLWithPath: path(relative)).resolvingSymlinksInPath().path
    }

    // MARK: PCI and p2pmem

    /// Every p2pmem provider under bus/pci/devices, sorted by address.
    public func p2pmemProviders() -> [P2PMemProvider] {
        entries("bus/pci/devices").compactMap { name in
            guard let address = PCIAddress(name) else { return nil }
            return provider(address)
        }
    }

    /// The provider at `address`, or nil when that function has no p2pmem directory.
    public func provider(_ address: PCIAddress) -> P2PMemProvider? {
        let dir = "bus/pci/devices/\(address)/p2pmem"
        guard exists(dir) else { return nil }
        return P2PMemProvider(
            address: address,
            size: read("\(dir)/size").flatMap { UInt64($0) } ?? 0,
            available: read("\(dir)/available").flatMap { UInt64($0) } ?? 0,
            published: read("\(dir)/published") == "1")
    }

    /// The providers the suite can use, published first; `preferred` picks one by address.
    public func chooseProvider(preferred: PCIAddress? = nil) -> P2PMemProvider? {
        let all = p2pmemProviders()
        if let preferred { return all.first { $0.address == preferred } }
        return all.first { $0.published && $0.available > 0 } ?? all.first { $0.published }
    }

    /// Path of the allocator file userspace maps to get p2pmem.
    public func allocatePath(_ address: PCIAddress) -> String {
        path("bus/pci/devices/\(address)/p2pmem/allocate")
    }

    /// The NVMe controllers (PCI class 0x010802), sorted by address.
    public func nvmeControllers() -> [NVMeController] {
        entries("bus/pci/devices").compactMap { name in
            guard let address = PCIAddress(name) else { return nil }
            let dir = "bus/pci/devices/\(name)"
            guard read("\(dir)/class")?.lowercased().hasPrefix("0x010802") == true else { return nil }
            let controller = entries("\(dir)/nvme").first { $0.hasPrefix("nvme") }
            let namespaces: [String] = controller.map { ctrl -> [String] in
                let direct = entries("\(dir)/nvme/\(ctrl)").filter { isNamespace($0, of: ctrl) }
                return direct.isEmpty ? multipathHeads(of: entries("\(dir)/nvme/\(ctrl)")) : direct
            } ?? []
            return NVMeController(
                address: address, name: controller ?? "", namespaces: namespaces,
                hasP2PMem: exists("\(dir)/p2pmem"), driver: linkTarget("\(dir)/driver"))
        }
    }

    /// With CONFIG_NVME_MULTIPATH the controller holds hidden paths (`nvme0c0n1`) and the block
    /// device is the subsystem's head (`nvme0n1`, numbered by subsystem): find the heads whose
    /// `multipath/` directory lists one of `paths`.
    private func multipathHeads(of paths: [String]) -> [String] {
        let pathSet = Set(paths.filter { $0.contains("c") && $0.hasPrefix("nvme") })
        guard !pathSet.isEmpty else { return [] }
        return entries("block").filter { head in
            !Set(entries("block/\(head)/multipath")).isDisjoint(with: pathSet)
        }
    }

    /// `nvme0n1` is a namespace of `nvme0`; `nvme0n1p1` (a partition) and `nvme0c0n1` (a path) are not.
    private func isNamespace(_ name: String, of controller: String) -> Bool {
        guard name.hasPrefix(controller + "n") else { return false }
        return name.dropFirst(controller.count + 1).allSatisfy(\.isNumber)
    }

    /// The first namespace of an NVMe controller that has no p2pmem: scratch space for the
    /// real-filesystem check, found rather than assumed to be nvme1n1.
    public func scratchNamespace() -> (controller: NVMeController, namespace: String)? {
        for controller in nvmeControllers() where !controller.hasP2PMem {
            if let namespace = controller.namespaces.first {
                return (controller, namespace)
            }
        }
        return nil
    }

    /// Whether two PCI functions sit below the same PCIe switch: their downstream ports share the
    /// upstream port, which is what makes pci_p2pdma_distance() choose bus addresses.
    public func behindSameSwitch(_ a: PCIAddress, _ b: PCIAddress) -> Bool {
        let pa = URL(fileURLWithPath: resolved("bus/pci/devices/\(a)")).deletingLastPathComponent()
        let pb = URL(fileURLWithPath: resolved("bus/pci/devices/\(b)")).deletingLastPathComponent()
        // Parent of each function is its downstream port; the downstream ports' parent the upstream.
        let upA = pa.deletingLastPathComponent().path
        let upB = pb.deletingLastPathComponent().path
        return a != b && upA == upB && PCIAddress(URL(fileURLWithPath: upA).lastPathComponent) != nil
    }

    // MARK: RDMA

    /// What sysfs says about an RDMA device's DMA: software devices (rxe, siw) have no parent
    /// device at all; anything with a PCI parent is taken as a DMA-capable HCA.
    public func rdmaDeviceInfo(_ name: String) -> RDMADeviceInfo {
        let dir = "class/infiniband/\(name)"
        if exists("\(dir)/parent") && !exists("\(dir)/device") {
            // rxe exposes its netdev as `parent`; it is never the ib_device's parent device.
            return RDMADeviceInfo(name: name, kind: .virtualDMA, pciAddress: nil,
                                  reason: "no parent device (software RoCE over \(read("\(dir)/parent") ?? "?"))")
        }
        guard exists("\(dir)/device") else {
            return RDMADeviceInfo(name: name, kind: .virtualDMA, pciAddress: nil, reason: "no parent device")
        }
        let driver = linkTarget("\(dir)/device/driver")
        if let driver, driver == "rdma_rxe" || driver == "siw" || driver == "rxe" {
            return RDMADeviceInfo(name: name, kind: .virtualDMA, pciAddress: nil, reason: "driver \(driver)")
        }
        let subsystem = linkTarget("\(dir)/device/subsystem")
        let address = PCIAddress(URL(fileURLWithPath: resolved("\(dir)/device")).lastPathComponent)
        if subsystem == "pci", let address {
            return RDMADeviceInfo(name: name, kind: .p2pCapablePCI, pciAddress: address,
                                  reason: "PCI function \(address), driver \(driver ?? "none")")
        }
        return RDMADeviceInfo(name: name, kind: .virtualDMA, pciAddress: nil,
                              reason: "parent device is not PCI (\(subsystem ?? "no subsystem"))")
    }

    /// RDMA device names in sysfs (libibverbs sees the same ones when its providers are installed).
    public func rdmaDeviceNames() -> [String] {
        entries("class/infiniband")
    }

    /// Whether the nvme driver still lists `address` as bound.
    public func isBound(_ address: PCIAddress) -> Bool {
        exists("bus/pci/devices/\(address)/driver")
    }
}
