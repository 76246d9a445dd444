import Foundation
import LabSupport

/// A lab machine as data: one JSON file per machine under `vm/` (e.g. `vm/lab.json`).
///
/// The definition says what hardware the guest sees; `QEMUCommandLine(definition:plan:)` turns it
/// into QEMU arguments. Everything that differs per boot (kernel, run directory, accelerator) is
/// in the `BootPlan`, not here.
public struct MachineDefinition: Codable, Sendable, Equatable {
    /// A PCIe root port on q35's root complex, with one device slot below it.
    public struct RootPort: Codable, Sendable, Equatable {
        public var id: String
        /// Chassis number; (chassis, slot) pairs must be unique across all ports.
        public var chassis: Int
        public init(id: String, chassis: Int) {
            self.id = id
            self.chassis = chassis
        }
    }

    /// A PCIe switch behind its own root port: `ioh3420` → `x3130-upstream` → `xio3130-downstream`s.
    ///
    /// Its downstream ports are named `<id>-dp0`, `<id>-dp1`, …; devices name them as their bus.
    public struct Switch: Codable, Sendable, Equatable {
        public var id: String
        public var chassis: Int
        public var downstreamPorts: Int
        public init(id: String, chassis: Int, downstreamPorts: Int) {
            self.id = id
            self.chassis = chassis
            self.downstreamPorts = downstreamPorts
        }
        /// The bus names of the downstream ports.
        public var downstreamPortIDs: [String] { (0..<downstreamPorts).map { "\(id)-dp\($0)" } }
        /// The root port the switch hangs from.
        public var rootPortID: String { "\(id)-rp" }
        /// The upstream port.
        public var upstreamPortID: String { "\(id)-up" }
    }

    /// An NVMe controller with one namespace backed by a sparse raw image in the run directory.
    public struct NVMe: Codable, Sendable, Equatable {
        public var id: String
        public var serial: String
        /// A root port id, a switch downstream port id, or `pcie.0`.
        public var bus: String
        /// Controller Memory Buffer size in MiB (a power of two ≥ 2), or nil for none.
        public var cmbMiB: Int?
        public var namespaceMiB: Int
        /// When set, a new image gets an ext4 file system with this label, made on the host
        /// (mkfs.ext4 takes milliseconds there, a few hundred under TCG); nil: it starts as zeros.
        /// The suite formats its scratch namespace itself unless it already holds the suite's own
        /// ext4 (label p2plab-scratch).
        public var ext4Label: String?
        public init(id: String, serial: String, bus: String, cmbMiB: Int? = nil, namespaceMiB: Int, ext4Label: String? = nil) {
            self.id = id
            self.serial = serial
            self.bus = bus
            self.cmbMiB = cmbMiB
            self.namespaceMiB = namespaceMiB
            self.ext4Label = ext4Label
        }
    }

    /// How the guest's eth0 is connected.
    public enum Network: String, Codable, Sendable {
        /// QEMU user networking, restricted: no route out, but a link for soft-RoCE.
        case user
        case none
    }

    public var name: String
    public var summary: String
    /// Why the machine looks the way it does (kept with the data, since JSON has no comments).
    public var notes: [String]?
    /// QEMU machine type.
    public var machine: String
    /// QEMU CPU model.
    public var cpu: String
    public var cpus: Int
    public var memoryMiB: Int
    /// Kernel arguments this machine needs, after the root and console arguments p2plab adds.
    public var kernelArguments: [String]
    public var rootPorts: [RootPort]?
    public var switches: [Switch]
    public var nvme: [NVMe]
    public var network: Network
    /// Create `rxe0` on eth0 in the guest.
    public var rxe: Bool

    public init(
        name: String, summary: String, notes: [String]? = nil, machine: String = "q35", cpu: String = "qemu64",
        cpus: Int = 2, memoryMiB: Int = 2048, kernelArguments: [String] = [], rootPorts: [RootPort]? = nil,
        switches: [Switch] = [], nvme: [NVMe] = [], network: Network = .user, rxe: Bool = true
    ) {
        self.name = name
        self.summary = summary
        self.notes = notes
        self.machine = machine
        self.cpu = cpu
        self.cpus = cpus
        self.memoryMiB = memoryMiB
        self.kernelArguments = kernelArguments
        self.rootPorts = rootPorts
        self.switches = switches
        self.nvme = nvme
        self.network = network
        self.rxe = rxe
    }

    /// What the host can unplug and plug again through QEMU's monitor while a check runs.
    public var hostAccess: HostAccess {
        HostAccess(devices: nvme.map { HostDevice(id: $0.id, serial: $0.serial, bus: $0.bus) })
    }

    /// The name of the machine `p2plab boot` uses without `--machine`.
    public static let defaultName = "lab"

    /// Every bus a device may name.
    public var busIDs: [String] {
        ["pcie.0"] + (rootPorts ?? []).map(\.id) + switches.flatMap(\.downstreamPortIDs)
    }

    /// Checks what QEMU or Linux would otherwise reject late or silently.
    public func validate() throws {
        func fail(_ why: String) -> MachineError { .invalidDefinition(name: name, reason: why) }
        guard cpus >= 1 else { throw fail("cpus must be at least 1, not \(cpus)") }
        guard memoryMiB >= 256 else { throw fail("memoryMiB must be at least 256, not \(memoryMiB)") }
        let ids = (rootPorts ?? []).map(\.id) + switches.flatMap { [$0.id, $0.rootPortID, $0.upstreamPortID] + $0.downstreamPortIDs } + nvme.map(\.id)
        if let duplicate = Dictionary(grouping: ids, by: { $0 }).first(where: { $0.value.count > 1 })?.key {
            throw fail("device id \(duplicate) is used twice")
        }
        let chassis = (rootPorts ?? []).map(\.chassis) + switches.map(\.chassis)
        if let duplicate = Dictionary(grouping: chassis, by: { $0 }).first(where: { $0.value.count > 1 })?.key {
            throw fail("chassis \(duplicate) is used twice; each root port and switch needs its own")
        }
        for s in switches where s.downstreamPorts < 1 || s.downstreamPorts > 32 {
            throw fail("switch \(s.id) needs 1…32 downstream ports, not \(s.downstreamPorts)")
        }
        let buses = Set(busIDs)
        var used: Set<String> = []
        for device in nvme {
            guard buses.contains(device.bus) else {
                throw fail("\(device.id) names bus \(device.bus), which is not one of \(busIDs.joined(separator: ", "))")
            }
            // A PCIe port has exactly one slot below it.
            if device.bus != "pcie.0" {
                guard used.insert(device.bus).inserted else { throw fail("bus \(device.bus) already holds a device") }
            }
            if let cmb = device.cmbMiB, cmb < 2 || cmb & (cmb - 1) != 0 {
                throw fail("\(device.id) cmbMiB must be a power of two >= 2 (Linux skips 1, QEMU aborts on others), not \(cmb)")
            }
            guard device.namespaceMiB >= 1 else { throw fail("\(device.id) namespaceMiB must be at least 1") }
        }
        if rxe && network == .none { throw fail("rxe needs a network device") }
    }

    /// Decodes and validates a definition.
    public static func decode(_ data: Data, source: String) throws -> MachineDefinition {
        let definition: MachineDefinition
        do {
            definition = try JSONDecoder().decode(MachineDefinition.self, from: data)
        } catch {
            throw MachineError.unreadableDefinition(path: source, reason: "\(error)")
        }
        try definition.validate()
        return definition
    }

    /// Loads `<vmDirectory>/<name>.json`, or a path when `name` ends in `.json`.
    public static func load(named name: String, vmDirectory: URL) throws -> MachineDefinition {
        let url = name.hasSuffix(".json") ? URL(fileURLWithPath: name) : vmDirectory.appendingPathComponent("\(name).json")
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw MachineError.unknownMachine(name: name, available: available(in: vmDirectory))
        }
        return try decode(data, source: url.path)
    }

    /// Names of the machine definitions in a `vm/` directory.
    public static func available(in vmDirectory: URL) -> [String] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: vmDirectory.path)) ?? []
        return files.filter { $0.hasSuffix(".json") }.map { String($0.dropLast(5)) }.sorted()
    }
}
