import Catalog
import Foundation
import LabSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A hot-unplug of the provider from the lab machine's host while a long-term pin holds its p2pmem:
/// QEMU's `device_del` presses the slot's attention button, the guest's pciehp powers the slot off
/// after 5 s by removing the device, and that removal meets the pin in memunmap_pages.
extension Suite {
    static let hotplugChecks: [CheckDefinition] = [
        CheckDefinition("teardown.hot_unplug_while_pinned") { ctx, rec in
            let slot = try HotplugSlot(ctx)
            let limits = slot.host.limits
            let setup = try TeardownSetup(ctx)
            rec.note("\(slot.address) is QEMU's \(slot.device.id) (serial \(slot.device.serial)) on \(slot.device.bus), port \(slot.port) driven by pciehp")
            guard let held = setup.holdUmem(rec) else {
                // No long-term P2PDMA pin exists on this kernel: what is left to see is that the
                // hot-unplug itself works when nothing holds the device.
                setup.region.unmap()
                let ok = slot.unplugUnpinned(rec)
                rec.expect(.hotUnplugUnpinned, observed: ok ? .succeeded : .refused(nil))
                return
            }
            defer { _ = try? setup.module.release(handle: held.handle) }
            var ok = true
            let kmsg = KmsgFollower()
            let del = try slot.host.channel.call(.deviceDel(device: slot.device.id), timeout: limits.qmp)
            let delAt = monotonicSeconds()
            rec.note(String(format: "device_del %@ sent (host %.2f s), QEMU replied in %.3f s", slot.device.id, del.sentAt ?? 0,
                            (del.repliedAt ?? 0) - (del.sentAt ?? 0)))
            // pciehp waits 5 s after the button press, then its IRQ thread removes the device.
            let waiter = waitUntil(seconds: 5 + limits.hotplug / 3) { slot.removalThread()?.waiting == true }
            let messages = kmsg.read().filter { $0.contains("pciehp") || $0.contains(slot.port.description) }
            for line in messages.prefix(6) { rec.note("  kernel: \(line)") }
            guard waiter, let thread = slot.removalThread() else {
                let gone = !slot.present
                rec.fail(gone
                    ? "\(slot.address) went away while the umem was held: the removal did not wait"
                    : String(format: "pciehp's removal did not start waiting in memunmap_pages within %.0f s of device_del (threads: %@)",
                             5 + limits.hotplug / 3, slot.pciehpThreads().map(\.description).joined(separator: "; ")))
                rec.expect(.hotUnplugWaitsForUmem, observed: .refused(nil))
                return
            }
            let waitingSince = monotonicSeconds()
            rec.note(String(format: "the removal started %.2f s after device_del and waits: %@", waitingSince - delAt, thread.description))
            // Held a while longer: the device stays and QEMU must not report it deleted.
            pause(seconds: 1)
            if !slot.present { ok = false; rec.fail("\(slot.address) left sysfs while the umem was held") }
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
            // meanwhile, and QEMU deletes it once the slot is powered off.
            let awaitRequest = HostRequest.awaitDeviceDeleted(device: slot.device.id, timeout: limits.hotplug)
            let awaitID = try slot.host.channel.submit(awaitRequest)
            let goneAt = waitUntil(seconds: limits.hotplug) { !slot.present } ? monotonicSeconds() : nil
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

/// The provider's hot-plug slot in the lab machine: the QEMU device behind it and the pciehp port.
struct HotplugSlot {
    let ctx: CheckContext
    let host: HostLink
    let device: HostDevice
    let address: PCIAddress
    let port: PCIAddress

    /// Finds the slot, or SKIPs with what is missing (a host monitor, the device, PCIe hotplug).
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
        let pciehp = "bus/pci_express/drivers/pciehp"
        guard FileManager.default.fileExists(atPath: sysfs.path(pciehp)) else {
            throw CheckSkip("this kernel has no PCIe native hotplug (CONFIG_HOTPLUG_PCI_PCIE): QEMU's device_del would never reach it; enable CONFIG_HOTPLUG_PCI and CONFIG_HOTPLUG_PCI_PCIE")
        }
        let services = (try? FileManager.default.contentsOfDirectory(atPath: sysfs.path(pciehp))) ?? []
        guard services.contains(where: { $0.hasPrefix("\(port):") }) else {
            throw CheckSkip("pciehp does not drive \(port), the port above \(provider.address): its slot is not hot-pluggable")
        }
        self.ctx = ctx
        self.host = host
        self.device = device
        self.address = provider.address
        self.port = port
    }

    var limits: LabLimits { host.limits }

    var present: Bool { FileManager.default.fileExists(atPath: ctx.sysfs.path("bus/pci/devices/\(address)")) }

    /// A pciehp thread (`irq/N-pciehp`) with its state and where it sleeps.
    struct Thread: CustomStringConvertible {
        var pid: Int32
        var name: String
        var state: String
        var wchan: String
        var waiting: Bool { state == "D" && wchan.contains("memunmap_pages") }
        var description: String { "\(name) (pid \(pid)) state \(state)" + (wchan.isEmpty ? "" : " in \(wchan)") }
    }

    func pciehpThreads() -> [Thread] {
        let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }
        return pids.compactMap { pid -> Thread? in
            guard let comm = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8), comm.contains("pciehp") else { return nil }
            var state = "?"
            if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") {
                state = stat[stat.index(after: close)...].split(separator: " ").first.map(String.init) ?? "?"
            }
            let wchan = (try? String(contentsOfFile: "/proc/\(pid)/wchan", encoding: .utf8)).map { $0 == "0" ? "" : $0 } ?? ""
            return Thread(pid: pid, name: comm.trimmingCharacters(in: .whitespacesAndNewlines), state: state, wchan: wchan)
        }
    }

    /// The pciehp thread that is removing the device, once it waits.
    func removalThread() -> Thread? {
        let threads = pciehpThreads()
        return threads.first(where: \.waiting) ?? threads.first { $0.state == "D" }
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
            rec.note(String(format: "with nothing pinned: DEVICE_DELETED %.2f s after device_del (host clock; pciehp waits 5 s after the button press)",
                            at - (del.sentAt ?? 0)))
            guard waitUntil(seconds: 10, { !present }) else {
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
        guard waitUntil(seconds: limits.hotplug, { ctx.sysfs.provider(address)?.published == true }) else {
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
