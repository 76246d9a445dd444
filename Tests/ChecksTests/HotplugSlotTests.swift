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

    @Test("a kernel with no hotplug driver for the slot: SKIP naming CONFIG_HOTPLUG_PCI_ACPI; a slot at another address does not count")
    func noHotplugDriver() throws {
        let fake = try FakeSysfs()
        try fake.write("devices/pci0000:00/0000:00:1c.0/0000:01:00.0/0000:02:00.0/0000:03:00.0/nvme/nvme0/serial", "p2plab-cmb   ")
        let reason = skipReason { _ = try HotplugSlot(try context(fake, host: host)) }
        #expect(reason?.contains("CONFIG_HOTPLUG_PCI_ACPI") == true && reason?.contains("at 0000:03:00") == true, "\(reason ?? "")")
        try fake.write("bus/pci/slots/0-1/address", "0000:04:00")
        let other = skipReason { _ = try HotplugSlot(try context(fake, host: host)) }
        #expect(other?.contains("no hotplug driver has a slot for 0000:03:00.0") == true, "\(other ?? "")")
    }

    @Test("the provider's serial names the QEMU device; its slot and the driver that registered it are found")
    func found() throws {
        let fake = try FakeSysfs()
        try fake.write("devices/pci0000:00/0000:00:1c.0/0000:01:00.0/0000:02:00.0/0000:03:00.0/nvme/nvme0/serial", "p2plab-cmb   ")
        try fake.write("bus/pci/slots/0-1/address", "0000:04:00")
        try fake.write("bus/pci/slots/0/address", "0000:03:00")
        // Built in, as in the lab's kernel: no module link; acpiphp shows in /sys/module by its parameter.
        #expect(try HotplugSlot(try context(fake, host: host)).driver == "a hotplug driver")
        try fake.dir("module/acpiphp/parameters")
        let slot = try HotplugSlot(try context(fake, host: host))
        #expect(slot.device.id == "nvme0")
        #expect(slot.port.description == "0000:02:00.0")
        #expect(slot.slotName == "0" && slot.driver == "acpiphp")
        #expect(slot.present)
        // A native-hotplug port: pciehp is bound to it as a port service.
        try fake.dir("bus/pci_express/drivers/pciehp/0000:02:00.0:pcie204")
        #expect(try HotplugSlot(try context(fake, host: host)).driver == "pciehp")
        // A driver built as a module links it from the slot.
        try fake.link("bus/pci/slots/0/module", "../../../../module/acpiphp")
        #expect(try HotplugSlot(try context(fake, host: host)).driver == "acpiphp")
        // A serial the host does not know: SKIP with what it has.
        try fake.write("devices/pci0000:00/0000:00:1c.0/0000:01:00.0/0000:02:00.0/0000:03:00.0/nvme/nvme0/serial", "someone-else")
        let reason = skipReason { _ = try HotplugSlot(try context(fake, host: host)) }
        #expect(reason?.contains("none of the devices the host can unplug (nvme0: p2plab-cmb, nvme1: p2plab-client)") == true, "\(reason ?? "")")
    }
}

@Suite("A task's state from /proc")
struct TaskStateTests {
    @Test("the thread asking is running and sleeps nowhere; a task that does not exist is gone")
    func ownAndGone() throws {
        let own = try #require(TaskState("/proc/thread-self"))
        #expect(own.state == "R")
        #expect(own.wchan.isEmpty)
        #expect(TaskState("/proc/999999999") == nil)
        #expect(Suite.processState(999_999_999) == "gone")
    }
}
