import Catalog
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
    /// The route to the provider the suite uses, for a PCI device.
    public var route: P2PRoute? = nil
    /// Why this device cannot do P2PDMA with the provider although it is a PCI function with direct
    /// DMA: checks of the P2P success path skip with this reason.
    public var p2pProblem: String? = nil
}

/// How the kernel would map p2pmem of a provider for a client (`enum pci_p2pdma_map_type`).
public struct P2PRoute: Sendable, Hashable {
    public enum Mapping: String, Sendable, Hashable {
        /// PCI_P2PDMA_MAP_BUS_ADDR: the TLPs turn around at a common switch.
        case busAddress = "bus address"
        /// PCI_P2PDMA_MAP_THRU_HOST_BRIDGE: allowed by the CPU or the host bridge whitelist.
        case throughHostBridge = "through the host bridge"
        /// PCI_P2PDMA_MAP_NOT_SUPPORTED: pci_p2pdma_distance() is -1, DMA mapping fails with EREMOTEIO.
        case notSupported = "not supported"
    }

    public var mapping: Mapping
    /// The kernel's distance (hops up to the common bridge and down again), when there is a path.
    public var distance: Int?
    public var reason: String
}

/// Reads the kernel's sysfs below an injectable root, so unit tests run over a fake tree.
public struct Sysfs: Sendable {
    /// `/sys`, or a temp directory holding a fake tree.
    public var root: URL
    /// cpu_supports_p2pdma() of this machine (fake trees choose it).
    public var cpuSupportsP2PDMA: Bool

    public init(root: URL = URL(fileURLWithPath: "/sys"), cpuSupportsP2PDMA: Bool = Sysfs.cpuSupportsP2PDMA()) {
        self.root = root
        self.cpuSupportsP2PDMA = cpuSupportsP2PDMA
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

    // MARK: P2PDMA routes

    /// The route between a p2pmem provider and a DMA client as `calc_map_type_and_dist()`
    /// (drivers/pci/p2pdma.c) decides it: over a common upstream bridge by bus address, or through
    /// the host bridge only when the CPU (AMD Zen or newer) or a whitelisted host bridge allows it.
    /// ACS redirection is not in sysfs; the kernel's "ACS redirect is set" message for the client
    /// (`kernelMessages`) turns a bus-address route into one through the host bridge, as the kernel does.
    /// The messages are asked for only once both ends are PCI functions in sysfs (reading the whole
    /// kernel log is the dearest part of the suite's start under TCG).
    public func p2pRoute(
        provider: PCIAddress, client: PCIAddress, kernelMessages: @autoclosure () -> [String] = [], cpuSupportsP2PDMA: Bool? = nil
    ) -> P2PRoute {
        let cpu = cpuSupportsP2PDMA ?? self.cpuSupportsP2PDMA
        let up = pciAncestry(provider), down = pciAncestry(client)
        guard !up.isEmpty, !down.isEmpty else {
            return P2PRoute(mapping: .notSupported, distance: nil,
                            reason: "\(up.isEmpty ? provider : client) is not a PCI function in sysfs")
        }
        let acs = kernelMessages().contains { $0.contains(client.description) && $0.contains("ACS redirect is set") }
        if let common = up.firstIndex(where: { down.contains($0) }) {
            let distance = common + down.firstIndex(of: up[common])!
            if !acs {
                return P2PRoute(mapping: .busAddress, distance: distance,
                                reason: distance == 0 ? "same PCI function" : "common upstream bridge \(up[common]), distance \(distance)")
            }
            return throughHostBridge(provider, client, distance: distance, sameHost: true, acs: true, cpu: cpu)
        }
        let distance = up.count + down.count
        let sameHost = hostBridge(provider) == hostBridge(client)
        return throughHostBridge(provider, client, distance: distance, sameHost: sameHost, acs: acs, cpu: cpu)
    }

    private func throughHostBridge(
        _ provider: PCIAddress, _ client: PCIAddress, distance: Int, sameHost: Bool, acs: Bool, cpu: Bool
    ) -> P2PRoute {
        let why = acs ? "ACS redirect is set between \(client) and \(provider)" : "no common upstream bridge"
        if cpu {
            return P2PRoute(mapping: .throughHostBridge, distance: distance, reason: "\(why); the CPU (AMD Zen or newer) routes P2P")
        }
        let bridges = [hostBridgeDevice(provider), hostBridgeDevice(client)]
        let ids = bridges.map { $0.map { "\($0.vendor):\($0.device)" } ?? "none" }
        let allowed: Bool
        if sameHost {
            allowed = bridges[0].flatMap { Sysfs.whitelisted($0, sameHostBridge: true) } ?? false
        } else {
            allowed = bridges.allSatisfy { $0.flatMap { Sysfs.whitelisted($0, sameHostBridge: false) } ?? false }
        }
        if allowed {
            return P2PRoute(mapping: .throughHostBridge, distance: distance, reason: "\(why); host bridge \(ids[0]) is whitelisted")
        }
        return P2PRoute(mapping: .notSupported, distance: distance,
                        reason: "\(why), and host bridge \(sameHost ? ids[0] : ids.joined(separator: " / ")) is not in the kernel's P2PDMA whitelist: put both under one PCIe switch")
    }

    /// The function itself, then each upstream bridge, nearest first (the kernel's pci_upstream_bridge chain).
    func pciAncestry(_ address: PCIAddress) -> [PCIAddress] {
        let resolved = resolved("bus/pci/devices/\(address)")
        guard FileManager.default.fileExists(atPath: resolved) else { return [] }
        return URL(fileURLWithPath: resolved).pathComponents.reversed().prefix { PCIAddress($0) != nil }.compactMap(PCIAddress.init)
    }

    /// `pci0000:00`: the host bridge directory a function sits below.
    private func hostBridge(_ address: PCIAddress) -> String? {
        URL(fileURLWithPath: resolved("bus/pci/devices/\(address)")).pathComponents.first { $0.hasPrefix("pci") && $0.contains(":") }
    }

    /// The device the whitelist is matched against: devfn 00.0 of the root bus, else its first root port
    /// (pci_host_bridge_dev()).
    private func hostBridgeDevice(_ address: PCIAddress) -> (vendor: String, device: String)? {
        guard let host = hostBridge(address), let top = pciAncestry(address).last else { return nil }
        let rootBus = entries("devices/\(host)").compactMap(PCIAddress.init).filter { $0.bus == top.bus }.sorted()
        guard let first = rootBus.first else { return nil }
        let isRootPort = read("devices/\(host)/\(first)/class")?.lowercased().hasPrefix("0x0604") == true
        guard first.slot == 0 && first.function == 0 || isRootPort else { return nil }
        guard let vendor = read("devices/\(host)/\(first)/vendor"), let device = read("devices/\(host)/\(first)/device") else { return nil }
        return (vendor.lowercased().replacingOccurrences(of: "0x", with: ""), device.lowercased().replacingOccurrences(of: "0x", with: ""))
    }

    /// drivers/pci/p2pdma.c's pci_p2pdma_whitelist[] (6.12): Intel host bridges, some only when both
    /// functions sit below the same one.
    static let hostBridgeWhitelist: [(device: String, sameHostBridgeOnly: Bool)] = [
        ("3c00", true), ("3c01", true), ("2f00", true), ("2f01", true),
        ("2030", false), ("2031", false), ("2032", false), ("2033", false), ("2020", false), ("09a2", false),
    ]

    static func whitelisted(_ bridge: (vendor: String, device: String), sameHostBridge: Bool) -> Bool {
        guard bridge.vendor == "8086", let entry = hostBridgeWhitelist.first(where: { $0.device == bridge.device }) else { return false }
        return sameHostBridge || !entry.sameHostBridgeOnly
    }

    /// cpu_supports_p2pdma(): an AMD CPU of family 0x17 (Zen) or newer, read from /proc/cpuinfo.
    public static func cpuSupportsP2PDMA(cpuinfo: String? = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) -> Bool {
        guard let cpuinfo else { return false }
        var vendor = "", family = 0
        for line in cpuinfo.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { continue }
            if parts[0] == "vendor_id" { vendor = parts[1] }
            if parts[0] == "cpu family" { family = Int(parts[1]) ?? 0 }
            if !vendor.isEmpty && family > 0 { break }
        }
        return vendor == "AuthenticAMD" && family >= 0x17
    }

    // MARK: RDMA

    /// What the kernel decides about an RDMA device's DMA, from sysfs: software devices (rxe, siw)
    /// have no DMA device (`ib_uses_virt_dma()`), so `ib_umem_get()` never asks for P2PDMA; a PCI
    /// function is P2P-capable for `provider` only when its route to it is one
    /// `pci_p2pdma_distance()` accepts (a PCI parent alone says nothing: behind a host bridge that
    /// is not whitelisted the kernel refuses the mapping with EREMOTEIO). Under Xen the DMA device
    /// has dma_map_ops, which `dma_pci_p2pdma_supported()` refuses. `kernelMessages` is read only for
    /// a PCI function with a provider (see ``p2pRoute(provider:client:kernelMessages:cpuSupportsP2PDMA:)``).
    public func rdmaDeviceInfo(_ name: String, provider: PCIAddress? = nil, kernelMessages: @autoclosure () -> [String] = []) -> RDMADeviceInfo {
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
        guard subsystem == "pci", let address = PCIAddress(URL(fileURLWithPath: resolved("\(dir)/device")).lastPathComponent) else {
            return RDMADeviceInfo(name: name, kind: .virtualDMA, pciAddress: nil,
                                  reason: "parent device is not PCI (\(subsystem ?? "no subsystem"))")
        }
        var info = RDMADeviceInfo(name: name, kind: .p2pCapablePCI, pciAddress: address,
                                  reason: "PCI function \(address), driver \(driver ?? "none")")
        if read("hypervisor/type") == "xen" {
            // ib_umem_get() then never asks for FOLL_PCI_P2PDMA: the virtual-DMA outcomes apply.
            info.kind = .virtualDMA
            info.reason += "; Xen's dma_map_ops do not support P2PDMA"
            return info
        }
        guard let provider else { return info }
        let route = p2pRoute(provider: provider, client: address, kernelMessages: kernelMessages())
        info.route = route
        info.reason += "; to provider \(provider): \(route.reason)"
        if route.mapping == .notSupported {
            info.p2pProblem = "\(name) (\(address)) has no P2P route to the provider \(provider): \(route.reason); the kernel refuses its p2pmem mappings (EREMOTEIO)"
        }
        return info
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
