import Foundation
import LabSupport

/// `--accel`: an accelerator, or `auto` to use KVM only once a probe boot has shown it works.
public enum AccelChoice: String, Sendable, CaseIterable, Codable {
    case auto
    case tcg
    case kvm
}

/// The accelerator a boot will use, and why.
public struct AccelDecision: Sendable, Equatable {
    public var accel: Accelerator
    public var note: String
}

/// Decides whether KVM works by booting the kernel under it for a few seconds.
///
/// On some hosts /dev/kvm opens but guests hang silently after "Booting from ROM" or QEMU aborts
/// ("failed to set MSR"), so the device's presence proves nothing. The probe boots the real kernel
/// without a root filesystem: a working KVM reaches the "VFS: Unable to mount root" panic in about a
/// second and `panic=-1` + `-no-reboot` end QEMU. The answer is cached per host kernel, QEMU binary
/// and CPU model, so `auto` pays for a failed probe once.
public enum AccelProbe {
    /// Seconds a probe boot may take before KVM counts as not working.
    public static let timeout: Double = LabLimits.standard.kvmProbe
    /// Seconds a probe boot may go without any console output (see `LabLimits.kvmProbeFirstOutput`).
    public static let firstOutputTimeout: Double = LabLimits.standard.kvmProbeFirstOutput

    /// The cached probe answer, if any.
    struct Cached: Codable {
        var key: String
        var works: Bool
        var detail: String
        var date: Date
    }

    /// Resolves `choice` for booting `kernel` with CPU model `cpu`; `.kvm` fails when /dev/kvm is unusable.
    public static func decide(
        _ choice: AccelChoice, kernel: URL, cpu: String, qemu: String, cache: CacheLayout, workDirectory: URL,
        runner: Runner = Runner()
    ) async throws -> AccelDecision {
        switch choice {
        case .tcg:
            return AccelDecision(accel: .tcg, note: "tcg as asked")
        case .kvm:
            if let problem = kvmDeviceProblem() { throw MachineError.kvmUnavailable(reason: problem) }
            return AccelDecision(accel: .kvm, note: "kvm as asked (not probed)")
        case .auto:
            if let problem = kvmDeviceProblem() {
                return AccelDecision(accel: .tcg, note: "KVM probe: \(problem); using tcg")
            }
            let key = cacheKey(qemu: qemu, cpu: cpu)
            let cacheFile = cache.root.appendingPathComponent("kvm-probe.json")
            if let data = FileManager.default.contents(atPath: cacheFile.path),
                let cached = try? decoder.decode(Cached.self, from: data), cached.key == key
            {
                let stamp = ISO8601DateFormatter().string(from: cached.date)
                return AccelDecision(
                    accel: cached.works ? .kvm : .tcg,
                    note: "KVM probe (cached \(stamp), remove \(cacheFile.path) to redo): \(cached.detail); using \(cached.works ? "kvm" : "tcg")")
            }
            let (works, detail) = try await probe(kernel: kernel, cpu: cpu, qemu: qemu, directory: workDirectory, runner: runner)
            try? FileManager.default.ensureDirectory(cache.root)
            if let data = try? encoder.encode(Cached(key: key, works: works, detail: detail, date: Date())) {
                try? data.write(to: cacheFile)
            }
            return AccelDecision(accel: works ? .kvm : .tcg, note: "KVM probe: \(detail); using \(works ? "kvm" : "tcg")")
        }
    }

    /// Why /dev/kvm cannot be used, or nil if it can be opened.
    static func kvmDeviceProblem() -> String? {
        guard FileManager.default.fileExists(atPath: "/dev/kvm") else { return "no /dev/kvm" }
        guard let handle = FileHandle(forUpdatingAtPath: "/dev/kvm") else { return "/dev/kvm cannot be opened (add yourself to group kvm)" }
        try? handle.close()
        return nil
    }

    /// The QEMU arguments of a probe boot.
    public static func probeCommandLine(kernel: URL, cpu: String, qemu: String, console: URL) -> QEMUCommandLine {
        var line = QEMUCommandLine(executable: qemu)
        line.addMachine(type: "q35", accel: .kvm, cpu: cpu, cpus: 1, memoryMiB: 256)
        line.addKernel(kernel, commandLine: ["console=ttyS0", "panic=-1", "root=/dev/p2plab-probe-none"])
        line.addSerialPort(.file(console))
        return line
    }

    /// Boots `kernel` under KVM until it panics for lack of a root, or the timeout passes.
    static func probe(kernel: URL, cpu: String, qemu: String, directory: URL, runner: Runner) async throws -> (Bool, String) {
        let console = directory.appendingPathComponent("kvm-probe-console.log")
        let log = directory.appendingPathComponent("kvm-probe-qemu.log")
        _ = FileManager.default.createFile(atPath: console.path, contents: nil)
        let line = probeCommandLine(kernel: kernel, cpu: cpu, qemu: qemu, console: console)
        let clock = ContinuousClock()
        let start = clock.now
        let result = try await runner.supervise(Command(line.commandLine), io: .logFile(log)) { exited in
            if exited { return .keepRunning }
            let elapsed = start.duration(to: clock.now)
            return Self.keepsWaiting(elapsed: elapsed, consoleBytes: Self.size(of: console)) ? .keepRunning : .stop
        }
        let seconds = Double(start.duration(to: clock.now).components.seconds)
            + Double(start.duration(to: clock.now).components.attoseconds) / 1e18
        let text = (try? String(contentsOf: console, encoding: .utf8)) ?? ""
        let qemuSaid = ((try? String(contentsOf: log, encoding: .utf8)) ?? "")
            .split(separator: "\n").first { !$0.contains("terminating on signal") }.map(String.init)
        if text.contains("Kernel panic") && text.contains("Linux version") {
            return (true, String(format: "a KVM guest booted to its no-root panic in %.1f s", seconds))
        }
        if result.stoppedByWatcher {
            let reached = text.contains("Linux version") ? "the kernel started but did not finish booting within \(Int(timeout)) s"
                : text.isEmpty ? "no kernel output within \(Int(firstOutputTimeout)) s" : "no \"Linux version\" line within \(Int(timeout)) s"
            return (false, "\(reached) under KVM (a silent hang)" + (qemuSaid.map { "; QEMU said: \($0)" } ?? ""))
        }
        return (false, "QEMU under KVM ended (\(result.statusDescription)) without booting" + (qemuSaid.map { ": \($0)" } ?? ""))
    }

    /// Whether the probe boot goes on: until `timeout`, but only `firstOutputTimeout` while the
    /// console is still empty. A hung KVM guest here never prints; waiting the whole `timeout` for
    /// it cost every new machine seconds before its first boot.
    static func keepsWaiting(elapsed: Duration, consoleBytes: Int) -> Bool {
        if elapsed > .seconds(timeout) { return false }
        return consoleBytes > 0 || elapsed <= .seconds(firstOutputTimeout)
    }

    static func size(of file: URL) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: file.path))?[.size] as? NSNumber)?.intValue ?? 0
    }

    static func cacheKey(qemu: String, cpu: String) -> String {
        let host = (try? String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
        let binary = (qemu.contains("/") ? qemu : which(qemu)).map { URL(fileURLWithPath: $0).resolvingSymlinksInPath().path } ?? qemu
        let attributes = try? FileManager.default.attributesOfItem(atPath: binary)
        let mtime = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
        let size = (attributes?[.size] as? NSNumber)?.intValue ?? 0
        return "host \(host); qemu \(binary) \(size) \(Int(mtime)); cpu \(cpu)"
    }

    private static var encoder: JSONEncoder { LabJSON.encoder }
    private static var decoder: JSONDecoder { LabJSON.decoder }
}
