import Foundation
import LabSupport

/// How QEMU should run the guest's code.
public enum Accelerator: String, Sendable, Codable, CaseIterable {
    case tcg
    case kvm
}

/// Where the guest's serial console goes.
public enum ConsoleSink: Sendable, Equatable {
    /// Only to a file (non-interactive boots; p2plab tails the file).
    case file(URL)
    /// The user's terminal, and a copy in the file. Ctrl-A X quits QEMU, Ctrl-A C is the monitor.
    case terminal(log: URL)
}

/// A QEMU command line as data: small mutating helpers, each adding the arguments of one device,
/// so tests compare argument arrays without running QEMU.
public struct QEMUCommandLine: Sendable, Equatable {
    public var executable: String
    public private(set) var arguments: [String] = []

    public init(executable: String = "qemu-system-x86_64") {
        self.executable = executable
    }

    /// The full argv.
    public var commandLine: [String] { [executable] + arguments }

    /// Appends an option and its value.
    public mutating func add(_ option: String, _ value: String) {
        arguments += [option, value]
    }

    /// Appends a flag without a value.
    public mutating func add(_ flag: String) {
        arguments.append(flag)
    }

    /// Machine type, accelerator, CPU, memory; no default devices, no display, no reboot.
    ///
    /// `-no-reboot` turns the kernel's `panic=-1` reboot (and init's fallback reboot) into QEMU exiting.
    public mutating func addMachine(type: String, accel: Accelerator, cpu: String, cpus: Int, memoryMiB: Int) {
        add("-machine", type)
        add("-accel", accel.rawValue)
        add("-cpu", cpu)
        add("-smp", String(cpus))
        add("-m", "\(memoryMiB)M")
        add("-nodefaults")
        add("-no-user-config")
        add("-display", "none")
        add("-no-reboot")
        // q35's ACPI PCI hot-plug (on by default since QEMU 6.1) stays on: its DSDT describes the
        // slots below every cold-plugged port, the switch's downstream ports included, and a
        // device_del is an eject request the guest's acpiphp acts on at once (native PCIe hot-plug,
        // which it keeps from the guest through _OSC, would wait 5 s after an attention-button press).
    }

    /// Boots a kernel directly, without a disk image.
    public mutating func addKernel(_ bzImage: URL, commandLine: [String]) {
        add("-kernel", bzImage.path)
        add("-append", commandLine.joined(separator: " "))
    }

    /// A root port on the root complex with one slot below it.
    public mutating func addRootPort(id: String, chassis: Int, slot: Int = 0) {
        add("-device", "ioh3420,id=\(id),bus=pcie.0,chassis=\(chassis),slot=\(slot)")
    }

    /// A PCIe switch behind its own root port; returns the downstream port ids (bus names for devices).
    @discardableResult
    public mutating func addSwitch(_ spec: MachineDefinition.Switch) -> [String] {
        addRootPort(id: spec.rootPortID, chassis: spec.chassis)
        add("-device", "x3130-upstream,id=\(spec.upstreamPortID),bus=\(spec.rootPortID)")
        for (index, port) in spec.downstreamPortIDs.enumerated() {
            // Slot 0 of this chassis is the root port's.
            // hotplug=on: its slot takes device_del/device_add (through ACPI on q35, see addMachine).
            add("-device", "xio3130-downstream,id=\(port),bus=\(spec.upstreamPortID),chassis=\(spec.chassis),slot=\(index + 1),hotplug=on")
        }
        return spec.downstreamPortIDs
    }

    /// An NVMe controller on `bus` with one raw namespace, and a CMB of `cmbMiB` if given.
    ///
    /// The namespace is a `-blockdev` node, not a `-drive`: QEMU deletes a `-drive` together with
    /// its device, so a `device_add` after a `device_del` would find no drive.
    public mutating func addNVMe(id: String, serial: String, image: URL, cmbMiB: Int?, bus: String) {
        // cache.no-flush: the image is scratch space (cache=unsafe).
        add("-blockdev", "driver=raw,node-name=\(QEMUDevice.namespaceNode(id)),cache.no-flush=on,file.driver=file,file.filename=\(qemuEscape(image.path))")
        add("-device", QEMUDevice.nvme(id: id, serial: serial, cmbMiB: cmbMiB, bus: bus).commandLine)
    }

    /// QEMU's machine protocol on a Unix socket (server, not waiting for a client): the host's
    /// channel for device_del / device_add while the guest runs.
    public mutating func addQMP(socket: String) {
        add("-chardev", "socket,id=qmp,path=\(qemuEscape(socket)),server=on,wait=off")
        add("-mon", "chardev=qmp,mode=control")
    }

    /// The first serial port (ttyS0), which is the kernel console.
    public mutating func addSerialPort(_ sink: ConsoleSink) {
        switch sink {
        case .file(let log):
            add("-chardev", "file,id=console,path=\(qemuEscape(log.path))")
            add("-serial", "chardev:console")
        case .terminal(let log):
            // mux: the monitor shares the terminal (Ctrl-A C); signal=off: ^C goes to the guest.
            add("-chardev", "stdio,id=console,mux=on,signal=off,logfile=\(qemuEscape(log.path))")
            add("-serial", "chardev:console")
            add("-mon", "chardev=console,mode=readline")
        }
    }

    /// A host directory shared over virtio-9p under `tag`.
    public mutating func addShare(tag: String, path: String, readOnly: Bool) {
        // remap: the host root spans several filesystems; without it inode numbers collide.
        var fsdev = "local,id=\(tag),path=\(qemuEscape(path)),security_model=none,multidevs=remap"
        if readOnly { fsdev += ",readonly=on" }
        add("-fsdev", fsdev)
        add("-device", "virtio-9p-pci,fsdev=\(tag),mount_tag=\(tag)")
    }

    /// virtio-net on restricted user networking: a link for soft-RoCE, no way out.
    public mutating func addUserNetwork(id: String = "net0") {
        add("-netdev", "user,id=\(id),restrict=on")
        // romfile=: no iPXE option ROM; direct kernel boot never network-boots, and loading it costs time.
        add("-device", "virtio-net-pci,netdev=\(id),romfile=")
    }
}

extension QEMUCommandLine {
    /// The command line for booting `plan` on `definition`.
    public init(definition: MachineDefinition, plan: BootPlan, executable: String = "qemu-system-x86_64") {
        self.init(executable: executable)
        addMachine(type: definition.machine, accel: plan.accel, cpu: definition.cpu, cpus: definition.cpus, memoryMiB: definition.memoryMiB)
        addKernel(plan.kernel, commandLine: plan.kernelCommandLine(definition))
        addSerialPort(plan.interactive ? .terminal(log: plan.run.console) : .file(plan.run.console))
        addQMP(socket: plan.run.qmpSocket)
        addShare(tag: BootPlan.rootTag, path: "/", readOnly: true)
        addShare(tag: BootPlan.resultsTag, path: plan.run.guest.path, readOnly: false)
        for share in plan.extraShares {
            addShare(tag: share.tag, path: share.hostPath, readOnly: true)
        }
        for port in definition.rootPorts ?? [] {
            addRootPort(id: port.id, chassis: port.chassis)
        }
        for spec in definition.switches {
            addSwitch(spec)
        }
        for device in definition.nvme {
            addNVMe(id: device.id, serial: device.serial, image: plan.run.image(for: device), cmbMiB: device.cmbMiB, bus: device.bus)
        }
        if definition.network == .user {
            addUserNetwork()
        }
    }
}

/// A `-device` as data: its driver and properties in order, for the command line and for the same
/// device's `device_add` over QMP.
public struct QEMUDevice: Sendable, Equatable {
    public var driver: String
    public var properties: [(key: String, value: QMPValue)]

    public init(driver: String, properties: [(key: String, value: QMPValue)]) {
        self.driver = driver
        self.properties = properties
    }

    public static func == (lhs: QEMUDevice, rhs: QEMUDevice) -> Bool {
        lhs.driver == rhs.driver && lhs.properties.map(\.key) == rhs.properties.map(\.key)
            && lhs.properties.map(\.value) == rhs.properties.map(\.value)
    }

    /// The lab's NVMe controller on `bus`, its namespace the block node `namespaceNode(id)`.
    public static func nvme(id: String, serial: String, cmbMiB: Int?, bus: String) -> QEMUDevice {
        var properties: [(key: String, value: QMPValue)] = [
            ("id", .string(id)), ("serial", .string(serial)), ("drive", .string(namespaceNode(id))), ("bus", .string(bus)),
        ]
        if let cmbMiB { properties.append(("cmb_size_mb", .int(cmbMiB))) }
        return QEMUDevice(driver: "nvme", properties: properties)
    }

    public static func namespaceNode(_ id: String) -> String { "\(id)-ns" }

    /// `nvme,id=nvme0,serial=…`
    public var commandLine: String {
        ([driver] + properties.map { "\($0.key)=\($0.value.commandLine)" }).joined(separator: ",")
    }

    /// The arguments of `device_add`.
    public var qmpArguments: [String: QMPValue] {
        var arguments = ["driver": QMPValue.string(driver)]
        for (key, value) in properties { arguments[key] = value }
        return arguments
    }
}

/// Escapes a value inside a QEMU `key=value,…` option: a literal comma is written twice.
public func qemuEscape(_ value: String) -> String {
    value.replacingOccurrences(of: ",", with: ",,")
}
