import Foundation
import LabSupport
import Testing

@testable import Checks

@Suite("The hot-unplug check finds its slot, or says why it skips")
struct HotplugSlotTests {
    let host = HostLink(
        channel: HostChannel(directory: URL(fileURLWithPath: "/nonexistent/host")),
        devices: [HostDevice(id: "nvme0", serial: "p2plab-cmb", bus: "sw0-dp0"), HostDevice(id: "nvme1", serial: "p2plab-client", bus: "sw0-dp1")])

    func context(_ fake: FakeSysfs, host: HostLink?) throws -> CheckContext {
        let address = try #require(PCIAddress("0000:03:00.0"))
        let provider = try #require(fake.sysfs.provider(address))
        return CheckContext(sysfs: fake.sysfs, provider: provider, providerProblem: nil, rdma: nil, rdmaProblem: nil,
                            module: nil, moduleProblem: "none", host: host)
    }

    func skipReason(_ body: () throws -> Void) -> String? {
        do { try body() } catch let skip as CheckSkip { return skip.reason } catch { return "not a skip: \(error)" }
        return nil
    }

    @Test("real hardware: no host monitor, SKIP naming the check that covers removal there")
    func noHost() throws {
        let fake = try FakeSysfs()
        let reason = skipReason { _ = try HotplugSlot(try context(fake, host: nil)) }
        #expect(reason?.contains("no host with a monitor") == true && reason?.contains("teardown.remove_while_pinned") == true, "\(reason ?? "")")
    }

    @Test("a kernel without pciehp: SKIP naming CONFIG_HOTPLUG_PCI_PCIE; pciehp on another port: SKIP naming the port")
    func noPCIeHotplug() throws {
        let fake = try FakeSysfs()
        try fake.write("devices/pci0000:00/0000:00:1c.0/0000:01:00.0/0000:02:00.0/0000:03:00.0/nvme/nvme0/serial", "p2plab-cmb   ")
        let reason = skipReason { _ = try HotplugSlot(try context(fake, host: host)) }
        #expect(reason?.contains("CONFIG_HOTPLUG_PCI_PCIE") == true, "\(reason ?? "")")
        try fake.dir("bus/pci_express/drivers/pciehp/0000:02:01.0:pcie204")
        let other = skipReason { _ = try HotplugSlot(try context(fake, host: host)) }
        #expect(other?.contains("pciehp does not drive 0000:02:00.0") == true, "\(other ?? "")")
    }

    @Test("the provider's serial names the QEMU device; its downstream port is the pciehp slot")
    func found() throws {
        let fake = try FakeSysfs()
        try fake.write("devices/pci0000:00/0000:00:1c.0/0000:01:00.0/0000:02:00.0/0000:03:00.0/nvme/nvme0/serial", "p2plab-cmb   ")
        try fake.dir("bus/pci_express/drivers/pciehp/0000:02:00.0:pcie204")
        let slot = try HotplugSlot(try context(fake, host: host))
        #expect(slot.device.id == "nvme0")
        #expect(slot.port.description == "0000:02:00.0")
        #expect(slot.present)
        // A serial the host does not know: SKIP with what it has.
        try fake.write("devices/pci0000:00/0000:00:1c.0/0000:01:00.0/0000:02:00.0/0000:03:00.0/nvme/nvme0/serial", "someone-else")
        let reason = skipReason { _ = try HotplugSlot(try context(fake, host: host)) }
        #expect(reason?.contains("none of the devices the host can unplug (nvme0: p2plab-cmb, nvme1: p2plab-client)") == true, "\(reason ?? "")")
    }
}
