import Foundation
import LabSupport
import Testing

@testable import Machine

@Suite("Machine definitions")
struct MachineDefinitionTests {
    @Test("every definition in vm/ decodes and validates", arguments: MachineDefinition.available(in: TestPaths.vm))
    func loads(name: String) throws {
        let definition = try MachineDefinition.load(named: name, vmDirectory: TestPaths.vm)
        #expect(definition.name == name)
        #expect(!definition.nvme.isEmpty)
    }

    @Test("a new namespace image with ext4Label holds an ext4 of that label, as the guest's scratch check reads it")
    func scratchImageFormatted() throws {
        guard ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"].contains(where: { FileManager.default.isExecutableFile(atPath: $0) }) else { return }
        let image = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-scratch-\(getpid()).img")
        defer { try? FileManager.default.removeItem(at: image) }
        FileManager.default.createFile(atPath: image.path, contents: nil)
        let handle = try FileHandle(forWritingTo: image)
        try handle.truncate(atOffset: 64 << 20)
        try handle.close()
        LabMachine.formatExt4(image, label: "p2plab-scratch")
        let head = [UInt8](try Data(contentsOf: image).prefix(2048))
        // ext4 superblock at 1024: magic 0xEF53 at +56, volume label at +120.
        #expect(head[1024 + 56] == 0x53 && head[1024 + 57] == 0xEF)
        #expect(String(decoding: head[(1024 + 120)..<(1024 + 136)].prefix { $0 != 0 }, as: UTF8.self) == "p2plab-scratch")
    }

    @Test("the default machine is the measured lab topology")
    func labTopology() throws {
        let lab = try MachineDefinition.load(named: MachineDefinition.defaultName, vmDirectory: TestPaths.vm)
        #expect(lab.machine == "q35")
        // EPYC would hide P2P distance failures; RDRAND seeds the guest kernel's RNG at boot.
        #expect(lab.cpu == "qemu64,+rdrand")
        #expect(lab.cpus == 2 && lab.memoryMiB == 2048)
        #expect(lab.switches.count == 1 && lab.switches[0].downstreamPorts == 2)
        #expect(lab.nvme.map(\.cmbMiB) == [64, nil])
        #expect(lab.nvme.map(\.bus) == ["sw0-dp0", "sw0-dp1"])
        // The second NVMe is the suite's scratch disk, formatted on the host with the suite's label.
        #expect(lab.nvme.map(\.ext4Label) == [nil, "p2plab-scratch"])
        #expect(lab.kernelArguments.contains("nvme.use_cmb_sqes=0"))
        // oops=panic is the boot-line spelling of panic_on_oops=1 (6.12 has no panic_on_oops= parameter);
        // a WARN must not end the guest.
        #expect(lab.kernelArguments.contains("oops=panic"))
        #expect(!lab.kernelArguments.contains("panic_on_oops=1"))
        #expect(lab.kernelArguments.contains("panic_on_warn=0"))
        #expect(lab.kernelArguments.contains("panic=-1"))
        #expect(lab.rxe)
    }

    static let invalid: [(String, @Sendable (inout MachineDefinition) -> Void)] = [
        ("cmbMiB must be a power of two", { $0.nvme[0].cmbMiB = 1 }),
        ("cmbMiB must be a power of two", { $0.nvme[0].cmbMiB = 3 }),
        ("is used twice", { $0.nvme[1].id = "nvme0" }),
        ("names bus nowhere", { $0.nvme[1].bus = "nowhere" }),
        ("already holds a device", { $0.nvme[1].bus = "sw0-dp0" }),
        ("rxe needs a network", { $0.network = .none }),
        ("cpus must be at least 1", { $0.cpus = 0 }),
    ]

    @Test("validation rejects what QEMU or Linux would trip over", arguments: 0..<invalid.count)
    func rejects(index: Int) throws {
        var definition = try MachineDefinition.load(named: "lab", vmDirectory: TestPaths.vm)
        let (message, change) = Self.invalid[index]
        change(&definition)
        let error = #expect(throws: MachineError.self) { try definition.validate() }
        #expect(error?.description.contains(message) == true, "\(String(describing: error))")
        #expect(error?.exitCode == .usage)
    }

    @Test("an unknown machine name lists the available ones")
    func unknownMachine() {
        let error = #expect(throws: MachineError.self) { try MachineDefinition.load(named: "nope", vmDirectory: TestPaths.vm) }
        #expect(error?.description.contains("lab") == true)
    }
}

@Suite("QEMU command line")
struct QEMUCommandLineTests {
    let run = RunDirectory(URL(fileURLWithPath: "/cache/runs/r1"))
    let kernel = URL(fileURLWithPath: "/k/bzImage")

    func plan(command: String? = "true", shares: [GuestShare] = []) -> BootPlan {
        BootPlan(kernel: kernel, accel: .tcg, run: run, command: command, extraShares: shares)
    }

    @Test("each definition's argument array matches its golden file", arguments: MachineDefinition.available(in: TestPaths.vm))
    func golden(name: String) throws {
        let definition = try MachineDefinition.load(named: name, vmDirectory: TestPaths.vm)
        let line = QEMUCommandLine(definition: definition, plan: plan())
        if ProcessInfo.processInfo.environment["P2PLAB_UPDATE_GOLDEN"] == "1" {
            // Rewrites the golden file in the checkout; review the diff before committing it.
            let source = TestPaths.sourceFixtures.appendingPathComponent("args/\(name).txt")
            try (line.commandLine.joined(separator: "\n") + "\n").write(to: source, atomically: true, encoding: .utf8)
        }
        let expected = try TestPaths.fixtureText("args/\(name).txt").split(separator: "\n").map(String.init)
        #expect(line.commandLine == expected)
    }

    @Test("addNVMe: a namespace block node that outlives device_del, and cmb_size_mb only when there is a CMB")
    func nvme() {
        var line = QEMUCommandLine()
        line.addNVMe(id: "n0", serial: "s0", image: URL(fileURLWithPath: "/r/n0.img"), cmbMiB: 64, bus: "sw0-dp0")
        line.addNVMe(id: "n1", serial: "s1", image: URL(fileURLWithPath: "/r/n1.img"), cmbMiB: nil, bus: "sw0-dp1")
        #expect(line.arguments == [
            "-blockdev", "driver=raw,node-name=n0-ns,cache.no-flush=on,file.driver=file,file.filename=/r/n0.img",
            "-device", "nvme,id=n0,serial=s0,drive=n0-ns,bus=sw0-dp0,cmb_size_mb=64",
            "-blockdev", "driver=raw,node-name=n1-ns,cache.no-flush=on,file.driver=file,file.filename=/r/n1.img",
            "-device", "nvme,id=n1,serial=s1,drive=n1-ns,bus=sw0-dp1",
        ])
    }

    @Test("device_add re-creates the NVMe with the command line's properties, typed")
    func deviceAdd() {
        let device = QEMUDevice.nvme(id: "nvme0", serial: "p2plab-cmb", cmbMiB: 64, bus: "sw0-dp0")
        #expect(device.commandLine == "nvme,id=nvme0,serial=p2plab-cmb,drive=nvme0-ns,bus=sw0-dp0,cmb_size_mb=64")
        #expect(device.qmpArguments == [
            "driver": .string("nvme"), "id": .string("nvme0"), "serial": .string("p2plab-cmb"), "drive": .string("nvme0-ns"),
            "bus": .string("sw0-dp0"), "cmb_size_mb": .int(64),
        ])
    }

    @Test("every boot has a QMP socket in its run directory, or a short one when that path is too long")
    func qmpSocket() throws {
        let definition = try MachineDefinition.load(named: "lab", vmDirectory: TestPaths.vm)
        let line = QEMUCommandLine(definition: definition, plan: plan())
        #expect(line.arguments.contains("socket,id=qmp,path=/cache/runs/r1/qmp.sock,server=on,wait=off"))
        #expect(line.arguments.contains("chardev=qmp,mode=control"))
        let deep = RunDirectory(URL(fileURLWithPath: "/" + String(repeating: "d", count: 120)))
        #expect(deep.qmpSocket.utf8.count < 108 && deep.qmpSocket.hasSuffix(".sock") && !deep.qmpSocket.hasPrefix(deep.url.path))
        #expect(deep.qmpSocket == RunDirectory(deep.url).qmpSocket)
    }

    @Test("addSwitch: root port, upstream port, downstream ports with distinct slots")
    func switchPorts() {
        var line = QEMUCommandLine()
        let ports = line.addSwitch(.init(id: "sw1", chassis: 3, downstreamPorts: 3))
        #expect(ports == ["sw1-dp0", "sw1-dp1", "sw1-dp2"])
        #expect(line.arguments == [
            "-device", "ioh3420,id=sw1-rp,bus=pcie.0,chassis=3,slot=0",
            "-device", "x3130-upstream,id=sw1-up,bus=sw1-rp",
            "-device", "xio3130-downstream,id=sw1-dp0,bus=sw1-up,chassis=3,slot=1,hotplug=on",
            "-device", "xio3130-downstream,id=sw1-dp1,bus=sw1-up,chassis=3,slot=2,hotplug=on",
            "-device", "xio3130-downstream,id=sw1-dp2,bus=sw1-up,chassis=3,slot=3,hotplug=on",
        ])
    }

    @Test("addSerialPort: a file for --exec, the terminal plus a log file for a shell")
    func serial() {
        var file = QEMUCommandLine()
        file.addSerialPort(.file(URL(fileURLWithPath: "/r/console.log")))
        #expect(file.arguments == ["-chardev", "file,id=console,path=/r/console.log", "-serial", "chardev:console"])
        var terminal = QEMUCommandLine()
        terminal.addSerialPort(.terminal(log: URL(fileURLWithPath: "/r/console.log")))
        #expect(terminal.arguments == [
            "-chardev", "stdio,id=console,mux=on,signal=off,logfile=/r/console.log",
            "-serial", "chardev:console", "-mon", "chardev=console,mode=readline",
        ])
    }

    @Test("commas in paths are doubled inside QEMU options")
    func commaEscaping() {
        var line = QEMUCommandLine()
        line.addShare(tag: "t", path: "/a,b", readOnly: true)
        #expect(line.arguments == [
            "-fsdev", "local,id=t,path=/a,,b,security_model=none,multidevs=remap,readonly=on",
            "-device", "virtio-9p-pci,fsdev=t,mount_tag=t",
        ])
    }

    @Test("an interactive plan puts the console on the terminal")
    func interactive() throws {
        let definition = try MachineDefinition.load(named: "lab", vmDirectory: TestPaths.vm)
        let line = QEMUCommandLine(definition: definition, plan: plan(command: nil))
        #expect(line.arguments.contains("stdio,id=console,mux=on,signal=off,logfile=/cache/runs/r1/console.log"))
        #expect(!line.arguments.contains { $0.hasPrefix("file,id=console") })
    }

    @Test("extra shares become read-only 9p devices")
    func extraShares() throws {
        let definition = try MachineDefinition.load(named: "lab", vmDirectory: TestPaths.vm)
        let line = QEMUCommandLine(definition: definition, plan: plan(shares: [GuestShare(tag: "p2plab-x0", hostPath: "/tmp/obj", guestPath: "/tmp/obj")]))
        #expect(line.arguments.contains("local,id=p2plab-x0,path=/tmp/obj,security_model=none,multidevs=remap,readonly=on"))
        #expect(line.arguments.contains("virtio-9p-pci,fsdev=p2plab-x0,mount_tag=p2plab-x0"))
    }

    @Test("the kernel command line: 9p root, init in the run directory, the machine's arguments")
    func kernelCommandLine() throws {
        let definition = try MachineDefinition.load(named: "lab", vmDirectory: TestPaths.vm)
        var p = plan()
        p.extraKernelArguments = ["dyndbg=+p"]
        #expect(p.kernelCommandLine(definition) == [
            "console=ttyS0", "loglevel=6", "sysctl.kernel.printk=7", "no_timer_check", "rcupdate.rcu_expedited=1",
            "root=hostroot", "rootfstype=9p", "rootflags=trans=virtio,version=9p2000.L,msize=262144,cache=loose", "ro",
            "init=/cache/runs/r1/init", "ip=10.0.2.15::10.0.2.2:255.255.255.0:p2plab:eth0:off",
            "nvme.use_cmb_sqes=0", "panic=-1", "oops=panic", "panic_on_warn=0", "pty.legacy_count=0", "dyndbg=+p",
        ])
    }

    @Test("under TCG the host's TSC rate and the kernel's delay loop go on the command line; under KVM they do not")
    func tcgTiming() throws {
        let definition = try MachineDefinition.load(named: "lab", vmDirectory: TestPaths.vm)
        var p = plan()
        p.tcgTiming = TCGTiming(tscKilohertz: 2_596_134, kernelHZ: 100)
        let arguments = p.kernelCommandLine(definition)
        #expect(arguments.contains("tsc_early_khz=2596134"))
        #expect(arguments.contains("lpj=25961340"))
        // The machine's and the user's arguments come later, so an --append lpj= wins.
        #expect(arguments.firstIndex(of: "lpj=25961340")! < arguments.firstIndex(of: "nvme.use_cmb_sqes=0")!)
        p.tcgTiming = TCGTiming(tscKilohertz: 2_596_134, kernelHZ: nil)
        #expect(p.kernelCommandLine(definition).contains("tsc_early_khz=2596134"))
        #expect(!p.kernelCommandLine(definition).contains { $0.hasPrefix("lpj=") })
        p.accel = .kvm
        p.tcgTiming = TCGTiming(tscKilohertz: 2_596_134, kernelHZ: 100)
        #expect(!p.kernelCommandLine(definition).contains { $0.hasPrefix("lpj=") || $0.hasPrefix("tsc_early_khz=") })
    }

    @Test("the kernel's HZ comes from the config beside its bzImage: a build output or an object directory")
    func kernelHZ() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-hz-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let build = root.appendingPathComponent("builds/series")
        let boot = root.appendingPathComponent("obj/arch/x86/boot")
        try FileManager.default.createDirectory(at: build, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: boot, withIntermediateDirectories: true)
        try "CONFIG_HZ_100=y\nCONFIG_HZ=100\n".write(to: build.appendingPathComponent("config"), atomically: true, encoding: .utf8)
        try "# CONFIG_HZ_100 is not set\nCONFIG_HZ=1000\n".write(to: root.appendingPathComponent("obj/.config"), atomically: true, encoding: .utf8)
        #expect(TCGTiming.kernelHZ(besideKernel: build.appendingPathComponent("bzImage")) == 100)
        #expect(TCGTiming.kernelHZ(besideKernel: boot.appendingPathComponent("bzImage")) == 1000)
        #expect(TCGTiming.kernelHZ(besideKernel: root.appendingPathComponent("bzImage")) == nil)
    }

    @Test("the host's TSC rate is measured only where the CPU says its TSC is constant")
    func hostTSC() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-cpuinfo-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: file) }
        try "processor\t: 0\nflags\t\t: fpu tsc msr\n".write(to: file, atomically: true, encoding: .utf8)
        #expect(TCGTiming.measureHostTSC(cpuinfo: file.path) == nil)
        #if arch(x86_64)
        try "processor\t: 0\nflags\t\t: fpu tsc constant_tsc nonstop_tsc\n".write(to: file, atomically: true, encoding: .utf8)
        let first = try #require(TCGTiming.measureHostTSC(cpuinfo: file.path))
        let second = try #require(TCGTiming.measureHostTSC(cpuinfo: file.path))
        #expect((100_000...10_000_000).contains(first))
        // Two 5 ms measurements of one counter agree to well under the 1 % the kernel's own
        // refinement would still accept.
        #expect(abs(first - second) * 1000 < first)
        #endif
    }

    @Test("the KVM probe boots the kernel without a root under kvm")
    func probe() {
        let line = AccelProbe.probeCommandLine(kernel: kernel, cpu: "qemu64", qemu: "qemu-system-x86_64", console: URL(fileURLWithPath: "/r/p.log"))
        #expect(line.arguments.starts(with: ["-machine", "q35", "-accel", "kvm", "-cpu", "qemu64"]))
        #expect(line.arguments.contains("console=ttyS0 panic=-1 root=/dev/p2plab-probe-none"))
        #expect(line.arguments.contains("-no-reboot"))
    }

    @Test("the KVM probe gives up early on a silent console, not on a slow boot")
    func probeDeadlines() {
        // Silent: waits the first-output deadline, then stops.
        #expect(AccelProbe.keepsWaiting(elapsed: .seconds(AccelProbe.firstOutputTimeout - 0.5), consoleBytes: 0))
        #expect(!AccelProbe.keepsWaiting(elapsed: .seconds(AccelProbe.firstOutputTimeout + 0.5), consoleBytes: 0))
        // Printing: waits up to the whole timeout for the no-root panic.
        #expect(AccelProbe.keepsWaiting(elapsed: .seconds(AccelProbe.firstOutputTimeout + 0.5), consoleBytes: 120))
        #expect(!AccelProbe.keepsWaiting(elapsed: .seconds(AccelProbe.timeout + 0.5), consoleBytes: 120))
        #expect(AccelProbe.firstOutputTimeout < AccelProbe.timeout)
    }

    @Test("a run directory with spaces is refused before anything is written")
    func spaces() throws {
        let request = BootRequest(
            kernel: kernel, definition: try MachineDefinition.load(named: "lab", vmDirectory: TestPaths.vm),
            command: "true", vmDirectory: TestPaths.vm)
        #expect(throws: MachineError.self) {
            try LabMachine.commandLine(for: request, run: RunDirectory(URL(fileURLWithPath: "/tmp/a b")), accel: .tcg)
        }
    }
}
