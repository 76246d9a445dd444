import Catalog
import Foundation
import LabSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A hot-unplug of the provider from the lab machine's host while a long-term pin holds its p2pmem:
/// QEMU's `device_del` asks the guest to give the slot up (an ACPI eject request on q35, which the
/// guest's acpiphp acts on at once; on a port with native PCIe hotplug an attention-button press,
/// which pciehp acts on 5 s later), the guest removes the device, and that removal meets the pin
/// in memunmap_pages. QEMU deletes the device once the guest has ejected or powered off the slot.
extension Suite {
    static let hotplugChecks: [CheckDefinition] = [
        CheckDefinition("teardown.hot_unplug_while_pinned") { ctx, rec in
            let slot = try HotplugSlot(ctx)
            let limits = slot.host.limits
            let setup = try TeardownSetup(ctx)
            rec.note("\(slot.address) is QEMU's \(slot.device.id) (serial \(slot.device.serial)) on \(slot.device.bus), port \(slot.port), slot \(slot.slotName) driven by \(slot.driver)")
            guard let held = setup.holdUmem(rec) else {
                // No long-term P2PDMA pin exists on this kernel: what is left to see is that the
                // hot-unplug itself works when nothing holds the device.
                setup.region.unmap()
                rec.waitsFromHere()
                let ok = slot.unplugUnpinned(rec)
                rec.expect(.hotUnplugUnpinned, observed: ok ? .succeeded : .refused(nil))
                return
            }
            defer { _ = try? setup.module.release(handle: held.handle) }
            // The rest is QEMU's unplug and the kernel's removal in its own kernel threads, and
            // waiting for them: the checks that run beside this one may start.
            rec.waitsFromHere()
            var ok = true
            let kmsg = KmsgFollower()
            let del = try slot.host.channel.call(.deviceDel(device: slot.device.id), timeout: limits.qmp)
            let delAt = monotonicSeconds()
            rec.note(String(format: "device_del %@ sent (host %.2f s), QEMU replied in %.3f s", slot.device.id, del.sentAt ?? 0,
                            (del.repliedAt ?? 0) - (del.sentAt ?? 0)))
            // acpiphp's removal starts at once (in a kworker of kacpi_hotplug); pciehp's IRQ thread
            // starts 5 s after the button press.
            let waiter = waitUntil(seconds: 5 + limits.hotplug / 3, every: quickPoll) { slot.removalThread()?.waiting == true }
            let messages = kmsg.read().filter { $0.contains(slot.driver) || $0.contains(slot.port.description) }
            for line in messages.prefix(6) { rec.note("  kernel: \(line)") }
            guard waiter, let thread = slot.removalThread() else {
                let gone = !slot.present
                rec.fail(gone
                    ? "\(slot.address) went away while the umem was held: the removal did not wait"
                    : String(format: "%@'s removal did not start waiting in memunmap_pages within %.0f s of device_del (tasks in D state: %@)",
                             slot.driver, 5 + limits.hotplug / 3, slot.blockedTasks().map(\.description).joined(separator: "; ")))
                rec.expect(.hotUnplugWaitsForUmem, observed: .refused(nil))
                return
            }
            let waitingSince = monotonicSeconds()
            rec.note(String(format: "the removal started %.2f s after device_del and waits: %@", waitingSince - delAt, thread.description))
            // Held as the blocking unbind checks hold theirs (PinWaitRule): the module's view of the
            // pagemap must show the removal waiting for pages alone, still so a while later; the
            // device stays and QEMU must not report it deleted.
            let rule = PinWaitRule(
                now: monotonicSeconds, sleep: pause(seconds:), finished: { !slot.present },
                finishesWithin: { seconds in waitUntil(seconds: seconds, every: quickPoll) { !slot.present } },
                waitsInMemunmap: { BlockingWrite.waits(task: "/proc/\(thread.pid)", in: "memunmap_pages") },
                pgmap: setup.module.pgmapProbe(handle: held.handle))
            let outcome = rule.hold(arrived: waitingSince)
            if case .returned = outcome {
                ok = false
                rec.fail("\(slot.address) left sysfs while the umem was held")
            } else if !PinWaitRule.record(outcome, rec, what: "the removal", holder: "the umem", task: thread.description, started: delAt,
                                          since: "device_del", result: { "gone from sysfs" })
            {
                ok = false
            }
            let early = try slot.host.channel.call(.awaitDeviceDeleted(device: slot.device.id, timeout: 0), timeout: limits.qmp)
            if let deleted = early.deviceDeletedAt {
                ok = false
                rec.fail(String(format: "QEMU reported DEVICE_DELETED %.2f s after device_del while the umem was held", deleted - (del.sentAt ?? 0)))
            } else {
                rec.note(String(format: "after %.2f s of waiting: %@ still present, no DEVICE_DELETED", monotonicSeconds() - waitingSince, slot.address.description))
            }
            let released = monotonicSeconds()
            ok = setup.release(held, rec) && ok
            let waited = released - waitingSince
            // Asked now, so the host's clock stamps the release; the guest removes the device
            // meanwhile, and QEMU deletes it once the guest has ejected (ACPI) or powered off the slot.
            let awaitRequest = HostRequest.awaitDeviceDeleted(device: slot.device.id, timeout: limits.hotplug)
            let awaitID = try slot.host.channel.submit(awaitRequest)
            let goneAt = waitUntil(seconds: limits.hotplug, every: quickPoll) { !slot.present } ? monotonicSeconds() : nil
            guard let deleted = slot.host.channel.response(to: awaitID, timeout: limits.hotplug + limits.qmp) else {
                throw HostChannelError.noResponse(request: awaitRequest, seconds: limits.hotplug + limits.qmp)
            }
            if let at = deleted.deviceDeletedAt {
                rec.note(String(format: "DEVICE_DELETED %.2f s after the release reached the host, %.2f s after device_del (host clock)",
                                at - deleted.seenAt, at - (del.sentAt ?? 0)))
            } else {
                ok = false
                rec.fail(String(format: "no DEVICE_DELETED within %.0f s of the release", limits.hotplug))
            }
            if let goneAt {
                rec.note(String(format: "%@ gone from sysfs %.2f s after the release", slot.address.description, goneAt - released))
            } else {
                ok = false
                rec.fail(String(format: "%@ still in sysfs %.0f s after the release", slot.address.description, limits.hotplug))
            }
            setup.region.unmap()
            ok = slot.plugBack(rec) && ok
            rec.expect(.hotUnplugWaitsForUmem, observed: ok ? .succeeded : .refused(nil),
                       detail: String(format: "the removal waited %.2f s in memunmap_pages until the release; the device was gone %.2f s after it", waited,
                                      (goneAt ?? monotonicSeconds()) - released))
        },
    ]
}

/// The provider's hot-plug slot in the lab machine: the QEMU device behind it, the port above it,
/// and the guest's hotplug driver for the slot (acpiphp on q35, pciehp on a native-hotplug port).
struct HotplugSlot {
    let ctx: CheckContext
    let host: HostLink
    let device: HostDevice
    let address: PCIAddress
    let port: PCIAddress
    /// The slot's name in /sys/bus/pci/slots.
    let slotName: String
    /// The driver that registered the slot (`acpiphp`, `pciehp`).
    let driver: String

    /// Finds the slot, or SKIPs with what is missing (a host monitor, the device, a hotplug driver).
    init(_ ctx: CheckContext) throws {
        guard let host = ctx.host else {
            throw CheckSkip("no host with a monitor: the hot-unplug is QEMU's device_del, so it runs in the lab machine (p2plab test); on real hardware teardown.remove_while_pinned covers the removal")
        }
        let provider = try ctx.requireProvider()
        let sysfs = ctx.sysfs
        let controller = sysfs.nvmeControllers().first { $0.address == provider.address }
        let serial = controller.flatMap { sysfs.read("bus/pci/devices/\(provider.address)/nvme/\($0.name)/serial") }?
            .trimmingCharacters(in: .whitespacesAndNewlines)
        guard let serial, let device = host.devices.first(where: { $0.serial == serial }) else {
            throw CheckSkip("the provider \(provider.address) (NVMe serial \(serial ?? "unknown")) is none of the devices the host can unplug (\(host.devices.map { "\($0.id): \($0.serial)" }.joined(separator: ", ")))")
        }
        guard let port = sysfs.pciAncestry(provider.address).dropFirst().first else {
            throw CheckSkip("\(provider.address) has no upstream port in sysfs")
        }
        guard let slot = sysfs.hotplugSlot(of: provider.address, below: port) else {
            throw CheckSkip("no hotplug driver has a slot for \(provider.address) (none in /sys/bus/pci/slots at \(HotplugSlot.slotAddress(provider.address))): QEMU's device_del would never reach this kernel; enable CONFIG_HOTPLUG_PCI and CONFIG_HOTPLUG_PCI_ACPI (the lab machine's ACPI hotplug), or CONFIG_HOTPLUG_PCI_PCIE for a port with native PCIe hotplug")
        }
        self.slotName = slot.name
        self.driver = slot.driver
        self.ctx = ctx
        self.host = host
        self.device = device
        self.address = provider.address
        self.port = port
    }

    var limits: LabLimits { host.limits }

    var present: Bool { FileManager.default.fileExists(atPath: ctx.sysfs.path("bus/pci/devices/\(address)")) }

    /// `dddd:bb:ss`, how /sys/bus/pci/slots/NAME/address names the slot a function sits in.
    static func slotAddress(_ address: PCIAddress) -> String {
        String(format: "%04x:%02x:%02x", address.domain, address.bus, address.slot)
    }

    /// A task with its state and where it sleeps.
    struct Thread: CustomStringConvertible {
        var pid: Int32
        var name: String
        var state: String
        var wchan: String
        var waiting: Bool { state == "D" && wchan.contains("memunmap_pages") }
        var description: String { "\(name) (pid \(pid)) state \(state)" + (wchan.isEmpty ? "" : " in \(wchan)") }
    }

    /// Every task in D state: the removal runs in the hotplug driver's own thread (acpiphp: a
    /// kworker of kacpi_hotplug; pciehp: `irq/N-pciehp`), so it is found by where it sleeps.
    func blockedTasks() -> [Thread] {
        let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }
        return pids.compactMap { pid -> Thread? in
            guard let task = TaskState("/proc/\(pid)"), task.state == "D" else { return nil }
            let comm = (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? "?"
            return Thread(pid: pid, name: comm.trimmingCharacters(in: .whitespacesAndNewlines), state: task.state, wchan: task.wchan)
        }
    }

    /// The task that is removing the device, once it waits in memunmap_pages.
    func removalThread() -> Thread? {
        blockedTasks().first(where: \.waiting)
    }

    /// device_del with nothing pinned: DEVICE_DELETED within the bound, the device gone; then back.
    func unplugUnpinned(_ rec: CheckRecorder) -> Bool {
        do {
            let del = try host.channel.call(.deviceDel(device: device.id), timeout: limits.qmp)
            let sent = monotonicSeconds()
            let deleted = try host.channel.call(.awaitDeviceDeleted(device: device.id, timeout: limits.hotplug), timeout: limits.qmp)
            guard let at = deleted.deviceDeletedAt else {
                rec.fail(String(format: "with nothing pinned, no DEVICE_DELETED within %.0f s of device_del", limits.hotplug))
                return false
            }
            rec.note(String(format: "with nothing pinned: DEVICE_DELETED %.2f s after device_del (host clock)%@", at - (del.sentAt ?? 0),
                            driver == "pciehp" ? "; pciehp waits 5 s after the button press" : ""))
            guard waitUntil(seconds: 10, every: quickPoll, { !present }) else {
                rec.fail("\(address) still in sysfs after DEVICE_DELETED")
                return false
            }
            rec.note(String(format: "%@ gone from sysfs %.2f s after device_del (guest clock)", address.description, monotonicSeconds() - sent))
        } catch {
            rec.fail("\(error)")
            return false
        }
        return plugBack(rec)
    }

    /// device_add, then the provider must be back at its address with p2pmem published.
    func plugBack(_ rec: CheckRecorder) -> Bool {
        let start = monotonicSeconds()
        do {
            _ = try host.channel.call(.deviceAdd(device: device.id), timeout: limits.qmp)
        } catch {
            rec.fail("\(error)")
            return false
        }
        guard waitUntil(seconds: limits.hotplug, every: quickPoll, { ctx.sysfs.provider(address)?.published == true }) else {
            let now = ctx.sysfs.p2pmemProviders().map(\.address.description).joined(separator: ", ")
            rec.fail(String(format: "after device_add, %@ did not publish p2pmem within %.0f s (providers now: %@)", address.description,
                            limits.hotplug, now.isEmpty ? "none" : now))
            return false
        }
        rec.note(String(format: "device_add: %@ back with p2pmem published %.2f s later, available %llu", address.description,
                        monotonicSeconds() - start, ctx.sysfs.provider(address)?.available ?? 0))
        return true
    }
}


extension Sysfs {
    /// The hotplug slot `address` sits in, below `port`: its name in /sys/bus/pci/slots and the
    /// driver that registered it, or nil when no hotplug driver has one there. A built-in driver
    /// leaves no `module` link in the slot: pciehp is the one bound to the port as a PCIe port
    /// service, else acpiphp where it is built in.
    func hotplugSlot(of address: PCIAddress, below port: PCIAddress) -> (name: String, driver: String)? {
        let fm = FileManager.default
        let want = HotplugSlot.slotAddress(address)
        let slots = ((try? fm.contentsOfDirectory(atPath: path("bus/pci/slots"))) ?? []).sorted()
        guard let name = slots.first(where: { read("bus/pci/slots/\($0)/address") == want }) else { return nil }
        if let module = try? fm.destinationOfSymbolicLink(atPath: path("bus/pci/slots/\(name)/module")) {
            return (name, URL(fileURLWithPath: module).lastPathComponent)
        }
        let services = (try? fm.contentsOfDirectory(atPath: path("bus/pci_express/drivers/pciehp"))) ?? []
        if services.contains(where: { $0.hasPrefix("\(port):") }) { return (name, "pciehp") }
        if fm.fileExists(atPath: path("module/acpiphp")) { return (name, "acpiphp") }
        return (name, "a hotplug driver")
    }
}
