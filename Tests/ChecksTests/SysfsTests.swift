import Foundation
import Testing
@testable import Checks

/// A fake sysfs in a temp dir: the lab machine's topology (a switch with the CMB NVMe and a
/// second NVMe below it) plus rxe0, laid out the way 6.12 lays it out.
final class FakeSysfs {
    let root: URL
    let fm = FileManager.default

    init() throws {
        root = fm.temporaryDirectory.appendingPathComponent("p2plab-sysfs-\(UUID().uuidString)")
        let switchUp = "devices/pci0000:00/0000:00:1c.0/0000:01:00.0"
        try addNVMe("0000:03:00.0", under: "\(switchUp)/0000:02:00.0", controller: "nvme0", namespace: "nvme0n1", cmb: true)
        try addNVMe("0000:04:00.0", under: "\(switchUp)/0000:02:01.0", controller: "nvme1", namespace: "nvme1n1", cmb: false)
        try dir("devices/pci0000:00/0000:00:02.0")
        try write("devices/pci0000:00/0000:00:02.0/class", "0x020000")
        try link("bus/pci/devices/0000:00:02.0", "../../../devices/pci0000:00/0000:00:02.0")
        try dir("devices/virtual/infiniband/rxe0")
        try write("devices/virtual/infiniband/rxe0/parent", "eth0")
        try link("class/infiniband/rxe0", "../../devices/virtual/infiniband/rxe0")
    }

    deinit { try? fm.removeItem(at: root) }

    /// An Intel-like machine: the CPU does not route P2P through the host bridge by itself.
    var sysfs: Sysfs { Sysfs(root: root, cpuSupportsP2PDMA: false) }

    func dir(_ path: String) throws {
        try fm.createDirectory(at: root.appendingPathComponent(path), withIntermediateDirectories: true)
    }

    func write(_ path: String, _ text: String) throws {
        try dir((path as NSString).deletingLastPathComponent)
        try (text + "\n").write(to: root.appendingPathComponent(path), atomically: true, encoding: .utf8)
    }

    func link(_ path: String, _ target: String) throws {
        try dir((path as NSString).deletingLastPathComponent)
        try fm.createSymbolicLink(atPath: root.appendingPathComponent(path).path, withDestinationPath: target)
    }

    func addNVMe(_ bdf: String, under parent: String, controller: String, namespace: String, cmb: Bool) throws {
        let device = "\(parent)/\(bdf)"
        try write("\(device)/class", "0x010802")
        try dir("\(device)/nvme/\(controller)/\(namespace)")
        try dir("\(device)/nvme/\(controller)/\(namespace)p1")  // a partition is not a namespace
        try link("\(device)/driver", "../../../../../../bus/pci/drivers/nvme")
        if cmb {
            try write("\(device)/p2pmem/size", "67108864")
            try write("\(device)/p2pmem/available", "67108864")
            try write("\(device)/p2pmem/published", "1")
        }
        try link("bus/pci/devices/\(bdf)", "../../../\(device)")
    }

    /// A PCI HCA (mlx5) as the RDMA device: on the root bus by default, or below `parent` (a
    /// directory under devices/, e.g. the switch's second downstream port).
    func addHCA(bdf: String = "0000:00:03.0", under parent: String = "devices/pci0000:00") throws {
        let device = "\(parent)/\(bdf)"
        let up = String(repeating: "../", count: device.split(separator: "/").count)
        try write("\(device)/class", "0x020700")
        try link("\(device)/subsystem", "\(up)bus/pci")
        try link("\(device)/driver", "\(up)bus/pci/drivers/mlx5_core")
        try dir("\(device)/infiniband/mlx5_0")
        try link("class/infiniband/mlx5_0", "../../\(device)/infiniband/mlx5_0")
        try link("\(device)/infiniband/mlx5_0/device", "../../../\(bdf)")
        try link("bus/pci/devices/\(bdf)", "../../../\(device)")
    }

    /// The root bus's devfn 00.0, which the kernel matches against its P2PDMA whitelist.
    func addHostBridge(vendor: String = "0x8086", device: String) throws {
        let path = "devices/pci0000:00/0000:00:00.0"
        try write("\(path)/class", "0x060000")
        try write("\(path)/vendor", vendor)
        try write("\(path)/device", device)
        try link("bus/pci/devices/0000:00:00.0", "../../../\(path)")
    }
}

@Suite("sysfs discovery over a fake tree")
struct SysfsTests {
    @Test func providers() throws {
        let fake = try FakeSysfs()
        let providers = fake.sysfs.p2pmemProviders()
        #expect(providers.map(\.address.description) == ["0000:03:00.0"])
        #expect(providers.first?.size == 64 << 20)
        #expect(providers.first?.published == true)
        #expect(fake.sysfs.chooseProvider()?.address == PCIAddress("0000:03:00.0"))
        let (none, why) = Discovery.provider(in: fake.sysfs, preferred: PCIAddress("0000:09:00.0"))
        #expect(none == nil)
        #expect(why?.contains("no p2pmem provider at 0000:09:00.0") == true)
    }

    @Test func unpublishedProviderIsExplained() throws {
        let fake = try FakeSysfs()
        try fake.write("devices/pci0000:00/0000:00:1c.0/0000:01:00.0/0000:02:00.0/0000:03:00.0/p2pmem/published", "0")
        let (provider, why) = Discovery.provider(in: fake.sysfs, preferred: nil)
        #expect(provider == nil)
        #expect(why == "p2pmem of 0000:03:00.0 is registered but not published")
    }

    @Test func noProviderSaysWhatToDo() throws {
        let empty = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-empty-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: empty.appendingPathComponent("bus/pci/devices"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: empty) }
        let (_, why) = Discovery.provider(in: Sysfs(root: empty), preferred: nil)
        #expect(why?.hasPrefix("no p2pmem provider published") == true)
        #expect(why?.contains("CONFIG_PCI_P2PDMA") == true)
    }

    @Test func nvmeControllersAndScratchNamespace() throws {
        let fake = try FakeSysfs()
        let controllers = fake.sysfs.nvmeControllers()
        #expect(controllers.map(\.name) == ["nvme0", "nvme1"])
        #expect(controllers.map(\.namespaces) == [["nvme0n1"], ["nvme1n1"]])
        #expect(controllers.map(\.hasP2PMem) == [true, false])
        #expect(controllers.first?.driver == "nvme")
        let scratch = try #require(fake.sysfs.scratchNamespace())
        #expect(scratch.namespace == "nvme1n1")
        #expect(scratch.controller.address == PCIAddress("0000:04:00.0"))
    }

    @Test func multipathHeadsAreFound() throws {
        let fake = try FakeSysfs()
        let device = "devices/pci0000:00/0000:00:1c.0/0000:01:00.0/0000:02:01.0/0000:04:00.0"
        try FileManager.default.removeItem(at: fake.root.appendingPathComponent("\(device)/nvme/nvme1/nvme1n1"))
        try fake.dir("\(device)/nvme/nvme1/nvme1c1n1")
        try fake.dir("devices/virtual/nvme-subsystem/nvme-subsys1/nvme1n1/multipath")
        try fake.link("devices/virtual/nvme-subsystem/nvme-subsys1/nvme1n1/multipath/nvme1c1n1", "../../../../../pci0000:00")
        try fake.link("block/nvme1n1", "../devices/virtual/nvme-subsystem/nvme-subsys1/nvme1n1")
        #expect(fake.sysfs.scratchNamespace()?.namespace == "nvme1n1")
    }

    @Test func sameSwitch() throws {
        let fake = try FakeSysfs()
        let cmb = try #require(PCIAddress("0000:03:00.0"))
        #expect(fake.sysfs.behindSameSwitch(cmb, try #require(PCIAddress("0000:04:00.0"))))
        #expect(!fake.sysfs.behindSameSwitch(cmb, try #require(PCIAddress("0000:00:02.0"))))
        #expect(!fake.sysfs.behindSameSwitch(cmb, cmb))
    }

    @Test func rdmaDeviceKinds() throws {
        let fake = try FakeSysfs()
        try fake.addHCA()
        let rxe = fake.sysfs.rdmaDeviceInfo("rxe0")
        #expect(rxe.kind == .virtualDMA)
        #expect(rxe.reason.contains("eth0"))
        let hca = fake.sysfs.rdmaDeviceInfo("mlx5_0")
        #expect(hca.kind == .p2pCapablePCI)
        #expect(hca.pciAddress == PCIAddress("0000:00:03.0"))
        #expect(fake.sysfs.rdmaDeviceNames() == ["mlx5_0", "rxe0"])
    }

    static let cmb = PCIAddress("0000:03:00.0")!
    static let switchDownstream1 = "devices/pci0000:00/0000:00:1c.0/0000:01:00.0/0000:02:01.0"

    @Test("an HCA behind the provider's switch: bus addresses at distance 4, P2P-capable")
    func hcaBehindTheSameSwitch() throws {
        let fake = try FakeSysfs()
        try fake.addHostBridge(device: "0x29c0")
        try fake.addHCA(bdf: "0000:05:00.0", under: Self.switchDownstream1)
        let hca = fake.sysfs.rdmaDeviceInfo("mlx5_0", provider: Self.cmb)
        #expect(hca.kind == .p2pCapablePCI)
        #expect(hca.route == P2PRoute(mapping: .busAddress, distance: 4, reason: "common upstream bridge 0000:01:00.0, distance 4"))
        #expect(hca.p2pProblem == nil)
    }

    @Test("a PCI parent is not enough: through q35's host bridge (not whitelisted) there is no route")
    func hcaBehindAHostBridgeOffTheWhitelist() throws {
        let fake = try FakeSysfs()
        try fake.addHostBridge(device: "0x29c0")
        try fake.addHCA()
        let hca = fake.sysfs.rdmaDeviceInfo("mlx5_0", provider: Self.cmb, kernelMessages: [])
        #expect(hca.kind == .p2pCapablePCI)
        #expect(hca.route?.mapping == .notSupported)
        #expect(hca.route?.distance == 5)
        let problem = try #require(hca.p2pProblem)
        #expect(problem.contains("no P2P route to the provider 0000:03:00.0"))
        #expect(problem.contains("8086:29c0 is not in the kernel's P2PDMA whitelist"))
        #expect(problem.contains("EREMOTEIO"))
    }

    @Test("a whitelisted host bridge, or an AMD Zen CPU, routes through the host bridge")
    func hostBridgeRoutes() throws {
        let fake = try FakeSysfs()
        try fake.addHostBridge(device: "0x2020")
        try fake.addHCA()
        let hca = try #require(PCIAddress("0000:00:03.0"))
        #expect(fake.sysfs.p2pRoute(provider: Self.cmb, client: hca, cpuSupportsP2PDMA: false).mapping == .throughHostBridge)
        let other = try FakeSysfs()
        try other.addHostBridge(device: "0x29c0")
        try other.addHCA()
        #expect(other.sysfs.p2pRoute(provider: Self.cmb, client: hca, cpuSupportsP2PDMA: true).mapping == .throughHostBridge)
        #expect(other.sysfs.p2pRoute(provider: Self.cmb, client: hca, cpuSupportsP2PDMA: false).mapping == .notSupported)
    }

    @Test("the kernel's ACS redirect message sends a switch route through the host bridge")
    func acsRedirect() throws {
        let fake = try FakeSysfs()
        try fake.addHostBridge(device: "0x29c0")
        let client = try #require(PCIAddress("0000:04:00.0"))
        #expect(fake.sysfs.p2pRoute(provider: Self.cmb, client: client, cpuSupportsP2PDMA: false).mapping == .busAddress)
        let said = ["nvme 0000:04:00.0: ACS redirect is set between the client and provider (0000:03:00.0)"]
        let route = fake.sysfs.p2pRoute(provider: Self.cmb, client: client, kernelMessages: said, cpuSupportsP2PDMA: false)
        #expect(route.mapping == .notSupported)
        #expect(route.reason.hasPrefix("ACS redirect is set between 0000:04:00.0 and 0000:03:00.0"))
    }

    @Test("the same function is distance 0")
    func sameFunction() throws {
        let fake = try FakeSysfs()
        #expect(fake.sysfs.p2pRoute(provider: Self.cmb, client: Self.cmb) == P2PRoute(mapping: .busAddress, distance: 0, reason: "same PCI function"))
    }

    @Test("cpu_supports_p2pdma: AMD family 0x17 and newer only")
    func cpuSupport() {
        #expect(Sysfs.cpuSupportsP2PDMA(cpuinfo: "vendor_id\t: AuthenticAMD\ncpu family\t: 25\n"))
        #expect(!Sysfs.cpuSupportsP2PDMA(cpuinfo: "vendor_id\t: AuthenticAMD\ncpu family\t: 15\n"))  // QEMU's qemu64
        #expect(!Sysfs.cpuSupportsP2PDMA(cpuinfo: "vendor_id\t: GenuineIntel\ncpu family\t: 6\n"))
        #expect(!Sysfs.cpuSupportsP2PDMA(cpuinfo: nil))
    }

    @Test("rxe has no route to judge: virtual DMA whatever the provider")
    func rxeWithProvider() throws {
        let fake = try FakeSysfs()
        let rxe = fake.sysfs.rdmaDeviceInfo("rxe0", provider: Self.cmb)
        #expect(rxe.kind == .virtualDMA)
        #expect(rxe.route == nil && rxe.p2pProblem == nil && rxe.kind != .p2pCapablePCI)
    }

    @Test("the kernel log is read only for a PCI device: rxe has no route for it to change")
    func kernelLogOnlyForAPCIDevice() throws {
        let fake = try FakeSysfs()
        try fake.addHostBridge(device: "0x29c0")
        try fake.addHCA(bdf: "0000:05:00.0", under: Self.switchDownstream1)
        let reads = ReadCounter()
        let said = ["mlx5_core 0000:05:00.0: ACS redirect is set between the client and provider (0000:03:00.0)"]
        let (rxe, _) = Discovery.rdmaDevice(in: fake.sysfs, names: ["rxe0"], preferred: nil, provider: Self.cmb, kernelMessages: reads.read(said))
        #expect(rxe?.kind == .virtualDMA)
        #expect(reads.count == 0)
        let (hca, _) = Discovery.rdmaDevice(in: fake.sysfs, names: ["mlx5_0"], preferred: nil, provider: Self.cmb, kernelMessages: reads.read(said))
        #expect(reads.count == 1)
        #expect(hca?.route?.reason.hasPrefix("ACS redirect is set between 0000:05:00.0") == true)
    }

    @Test("discovery judges the device against the chosen provider")
    func discoveryPassesTheProvider() throws {
        let fake = try FakeSysfs()
        try fake.addHostBridge(device: "0x29c0")
        try fake.addHCA()
        let (device, _) = Discovery.rdmaDevice(in: fake.sysfs, names: ["mlx5_0", "rxe0"], preferred: nil, provider: Self.cmb)
        #expect(device?.p2pProblem != nil)
    }

    @Test func rdmaDiscoveryExplainsAbsence() throws {
        let fake = try FakeSysfs()
        let (device, _) = Discovery.rdmaDevice(in: fake.sysfs, names: ["rxe0"], preferred: nil)
        #expect(device?.name == "rxe0")
        let (missing, why) = Discovery.rdmaDevice(in: fake.sysfs, names: ["rxe0"], preferred: "mlx5_0")
        #expect(missing == nil)
        #expect(why?.contains("mlx5_0 not found") == true)
        let empty = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-none-\(UUID().uuidString)")
        let (_, noneWhy) = Discovery.rdmaDevice(in: Sysfs(root: empty), names: [], preferred: nil)
        #expect(noneWhy == "no RDMA device: load rdma_rxe: rdma link add rxe0 type rxe netdev eth0")
    }

    @Test(arguments: ["0000:03:00.0", "0001:ff:1f.7"])
    func pciAddressRoundTrip(_ text: String) throws {
        let address = try #require(PCIAddress(text))
        #expect(address.description == text)
    }

    @Test(arguments: ["03:00.0", "0000:03:00", "0000:03:20.0", "zzzz:00:00.0"])
    func pciAddressRejects(_ text: String) {
        #expect(PCIAddress(text) == nil)
    }
}

/// Counts how often the kernel log was asked for.
private final class ReadCounter {
    var count = 0

    func read(_ lines: [String]) -> [String] {
        count += 1
        return lines
    }
}
