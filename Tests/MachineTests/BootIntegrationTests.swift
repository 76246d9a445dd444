import Foundation
import KTAP
import LabSupport
import Testing

@testable import Machine

/// Real boots of the real kernel under QEMU (TCG), so they need a built kernel.
enum Lab {
    /// The kernel to boot: `$P2PLAB_KERNEL`, else the latest `p2plab build`; nil when there is none.
    static let kernel: URL? = try? KernelLocator.kernel()

    /// Boots happen only when asked for (`scripts/test` does): a cached kernel alone must not make
    /// `scripts/test --unit` boot VMs.
    static let integration = ProcessInfo.processInfo.environment["P2PLAB_INTEGRATION"] == "1"

    static var skipReason: Comment {
        integration
            ? "no built kernel: run `p2plab build`, or set P2PLAB_KERNEL=/path/to/bzImage (and install qemu-system-x86)"
            : "set P2PLAB_INTEGRATION=1 (scripts/test does) to boot the built kernel in QEMU"
    }

    static var available: Bool { integration && kernel != nil && which("qemu-system-x86_64") != nil }

    /// Boots the default machine under TCG with `command`, in a fresh run directory under a temporary cache.
    static func boot(
        _ command: String, timeout: Double? = 120, bootTimeout: Double = 120,
        definition: MachineDefinition? = nil, environment: [String: String] = [:], sharedPaths: [String] = [],
        runDirectory: URL? = nil
    ) async throws -> BootOutcome {
        let cache = CacheLayout(root: FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-machine-it"))
        let request = BootRequest(
            kernel: try #require(kernel),
            definition: try definition ?? MachineDefinition.load(named: "lab", vmDirectory: TestPaths.vm),
            accel: .tcg, command: command, timeout: timeout, bootTimeout: bootTimeout, runDirectory: runDirectory,
            environment: environment, sharedPaths: sharedPaths, vmDirectory: TestPaths.vm, cache: cache)
        return try await LabMachine.boot(request)
    }

    static func read(_ url: URL) -> String { (try? String(contentsOf: url, encoding: .utf8)) ?? "" }

    /// Pids whose command line contains `text`.
    static func processes(commandLineContaining text: String) -> [pid_t] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { entry -> pid_t? in
            guard let pid = pid_t(entry), pid != getpid(),
                let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline")
            else { return nil }
            return String(decoding: data, as: UTF8.self).contains(text) ? pid : nil
        }
    }
}

@Suite("Boot (real QEMU, built kernel)", .serialized, .enabled(if: Lab.available, Lab.skipReason))
struct BootIntegrationTests {
    @Test("the lab machine publishes the CMB as p2pmem and brings up rxe0")
    func labMachine() async throws {
        let outcome = try await Lab.boot("""
            for d in /sys/bus/pci/devices/*/p2pmem; do
                echo "$d size=$(cat $d/size) published=$(cat $d/published)"
            done >"$P2PLAB_RESULTS/p2pmem.txt"
            rdma link show >"$P2PLAB_RESULTS/rdma.txt"
            cat /proc/sys/kernel/panic_on_oops /proc/sys/kernel/panic_on_warn >"$P2PLAB_RESULTS/panic.txt"
            echo "$P2PLAB_GUEST $HOME $LAB_EXTRA" >"$P2PLAB_RESULTS/env.txt"
            dmesg >"$P2PLAB_RESULTS/dmesg.txt"
            """, environment: ["LAB_EXTRA": "x y"])
        #expect(outcome.kind == .exited(0))
        let run = outcome.run
        #expect(Lab.read(run.guest.appendingPathComponent("p2pmem.txt")).contains("size=67108864 published=1"))
        let rdma = Lab.read(run.guest.appendingPathComponent("rdma.txt"))
        #expect(rdma.contains("rxe0") && rdma.contains("state ACTIVE"), "\(rdma)")
        #expect(Lab.read(run.guest.appendingPathComponent("panic.txt")) == "1\n0\n")
        #expect(Lab.read(run.guest.appendingPathComponent("env.txt")) == "1 /root x y\n")
        let console = Lab.read(run.console)
        #expect(Lab.read(run.guest.appendingPathComponent("dmesg.txt")).contains("added peer-to-peer DMA memory"))
        // While booting the console shows notices and worse, not the info lines (the CMB's is one);
        // from init on it shows info again (rxe0 comes up after init starts).
        #expect(console.contains("Linux version") && !console.contains("added peer-to-peer DMA memory"))
        #expect(console.contains("rxe0: set active"))
        #expect(!console.contains("Unknown kernel command line parameters"))
        #expect(outcome.findings.isEmpty, "\(outcome.findings)")
        // The run directory holds the logs, the command line and the manifest.
        #expect(Lab.read(run.qemuCommandLine).hasPrefix("qemu-system-x86_64 -machine q35"))
        let manifest = try JSONDecoder.iso8601.decode(LabMachine.Manifest.self, from: Data(contentsOf: run.manifest))
        #expect(manifest.outcome == "exited" && manifest.guestExitStatus == 0 && manifest.machine == "lab" && manifest.accel == "tcg")
    }

    @Test("the guest command's exit status is the boot's exit code")
    func exitStatus() async throws {
        let outcome = try await Lab.boot("exit 3")
        #expect(outcome.kind == .exited(3))
        #expect(outcome.exitCode == 3)
        #expect(Lab.read(outcome.run.exitStatus) == "3\n")
    }

    @Test("a host directory under /tmp, hidden by the guest's tmpfs, is shared back in read-only")
    func sharedPath() async throws {
        let dir = URL(fileURLWithPath: "/tmp/p2plab-machine-share-\(UUID().uuidString)")
        try FileManager.default.ensureDirectory(dir)
        defer { try? FileManager.default.removeItem(at: dir) }
        try "from the host\n".write(to: dir.appendingPathComponent("note.txt"), atomically: true, encoding: .utf8)
        let outcome = try await Lab.boot(
            "cat \(dir.path)/note.txt >\"$P2PLAB_RESULTS/note.txt\" && ! touch \(dir.path)/x 2>/dev/null",
            sharedPaths: [dir.appendingPathComponent("note.txt").path])
        #expect(outcome.kind == .exited(0))
        #expect(Lab.read(outcome.run.guest.appendingPathComponent("note.txt")) == "from the host\n")
    }

    @Test("a kernel panic is reported as such within seconds")
    func panic() async throws {
        let outcome = try await Lab.boot("echo c >/proc/sysrq-trigger; sleep 1000", timeout: 300)
        #expect(outcome.kind == .kernelPanic)
        #expect(outcome.exitCode == LabExit.kernelPanic.rawValue)
        #expect(outcome.findings.contains { $0.kind == .panic && $0.text.contains("sysrq triggered crash") })
        let afterReady = outcome.seconds - (try #require(outcome.bootSeconds))
        #expect(afterReady < 10, "panic reported \(afterReady) s after init was ready")
    }

    @Test("a command that outlives --timeout is stopped and reported as a timeout")
    func commandTimeout() async throws {
        let outcome = try await Lab.boot("sleep 1000", timeout: 20)
        #expect(outcome.kind == .commandTimeout)
        #expect(outcome.exitCode == LabExit.commandTimeout.rawValue)
        let afterReady = outcome.seconds - (try #require(outcome.bootSeconds))
        #expect(afterReady >= 20 && afterReady < 30, "stopped \(afterReady) s after init was ready")
        #expect(Lab.read(outcome.run.console).contains(GuestInit.readyMarker))
        #expect(FileManager.default.fileExists(atPath: outcome.run.manifest.path))
    }

    @Test("a guest that does not reach init in time is a boot timeout")
    func bootTimeout() async throws {
        let outcome = try await Lab.boot("true", bootTimeout: 1)
        #expect(outcome.kind == .bootTimeout)
        #expect(outcome.exitCode == LabExit.bootTimeout.rawValue)
        #expect(outcome.seconds < 10)
    }

    @Test("QEMU refusing the machine is reported as QEMU failing, with its reason")
    func qemuFailed() async throws {
        var definition = try MachineDefinition.load(named: "lab", vmDirectory: TestPaths.vm)
        definition.machine = "no-such-machine"
        let outcome = try await Lab.boot("true", definition: definition)
        #expect(outcome.kind == .qemuFailed)
        #expect(outcome.exitCode == LabExit.qemuFailed.rawValue)
        #expect(outcome.problem(limits: .init(boot: 120, command: 120))?.contains("unsupported machine type") == true)
    }

    @Test("QEMU killed under a running guest is reported as QEMU dying")
    func qemuDied() async throws {
        let run = RunDirectory(FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-machine-it-died-\(UUID().uuidString)"))
        defer { try? FileManager.default.removeItem(at: run.url) }
        async let outcome = Lab.boot("sleep 1000", timeout: 300, runDirectory: run.url)
        // Once the guest is up, kill its QEMU (found by the run directory on its command line).
        var killed = false
        for _ in 0..<1200 where !killed {
            try await Task.sleep(for: .milliseconds(100))
            guard Lab.read(run.console).contains(GuestInit.readyMarker) else { continue }
            for pid in Lab.processes(commandLineContaining: run.console.path) {
                kill(pid, SIGKILL)
                killed = true
            }
        }
        let result = try await outcome
        #expect(killed)
        #expect(result.kind == .qemuDied)
        #expect(result.exitCode == LabExit.qemuDied.rawValue)
        #expect(result.problem(limits: .init(boot: 120, command: 300))?.contains("signal 9") == true)
    }
}

/// The warm cycle (boot → `true` → poweroff under TCG), measured only when asked: five boots.
@Suite("Warm cycle", .enabled(if: Lab.available && ProcessInfo.processInfo.environment["P2PLAB_MEASURE"] == "1",
    "set P2PLAB_MEASURE=1 (and have a built kernel) to time five boots"))
struct WarmCycleTests {
    @Test("boot → true → poweroff, median of five")
    func warmCycle() async throws {
        _ = try await Lab.boot("true")  // warm the page cache
        var seconds: [Double] = []
        for _ in 0..<5 {
            let outcome = try await Lab.boot("true")
            #expect(outcome.kind == .exited(0))
            seconds.append(outcome.seconds)
        }
        let median = seconds.sorted()[2]
        print("warm cycle under TCG: median \(String(format: "%.2f", median)) s of \(seconds.map { String(format: "%.2f", $0) })")
        #expect(median < 10, "the goal is 5 s; 10 s means something regressed")
    }
}

extension JSONDecoder {
    static var iso8601: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}
