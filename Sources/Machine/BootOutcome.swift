import KernelConsole
import Foundation
import LabSupport

/// How one boot ended, with everything a caller needs to report it.
public struct BootOutcome: Sendable {
    /// What happened, one case per distinct exit code.
    public enum Kind: Sendable, Equatable {
        /// The guest command (or the interactive shell) ran and exited with this status.
        case exited(Int32)
        /// init's ready line did not appear within the boot timeout.
        case bootTimeout
        /// The command outlived its timeout and QEMU was stopped.
        case commandTimeout
        /// The console showed `Kernel panic`.
        case kernelPanic
        /// QEMU ended (or was killed) after the kernel started, without the guest reporting a status.
        case qemuDied
        /// QEMU ended before the kernel printed anything: bad arguments, a device it refused, no accelerator.
        case qemuFailed

        /// p2plab's exit code for this outcome: the guest's own status, or a `LabExit`.
        public var exitCode: Int32 {
            switch self {
            case .exited(let status): status
            case .bootTimeout: LabExit.bootTimeout.rawValue
            case .commandTimeout: LabExit.commandTimeout.rawValue
            case .kernelPanic: LabExit.kernelPanic.rawValue
            case .qemuDied: LabExit.qemuDied.rawValue
            case .qemuFailed: LabExit.qemuFailed.rawValue
            }
        }

        /// The kind a manifest or JSON report named (`exited` with `status`, the guest's exit status).
        public init?(name: String, status: Int32 = 0) {
            switch name {
            case "exited": self = .exited(status)
            case "boot-timeout": self = .bootTimeout
            case "command-timeout": self = .commandTimeout
            case "kernel-panic": self = .kernelPanic
            case "qemu-died": self = .qemuDied
            case "qemu-failed": self = .qemuFailed
            default: return nil
            }
        }

        /// A stable name for manifests and JSON reports.
        public var name: String {
            switch self {
            case .exited: "exited"
            case .bootTimeout: "boot-timeout"
            case .commandTimeout: "command-timeout"
            case .kernelPanic: "kernel-panic"
            case .qemuDied: "qemu-died"
            case .qemuFailed: "qemu-failed"
            }
        }
    }

    public var kind: Kind
    /// The guest command's exit status, when init got to write it.
    public var guestExitStatus: Int32?
    public var run: RunDirectory
    /// Alarming console lines (WARNING, BUG, Oops, panic, …), in order.
    public var findings: [ConsoleFinding]
    public var accel: Accelerator
    /// How the accelerator was chosen (what the KVM probe found, for `--accel auto`).
    public var accelNote: String
    /// How QEMU itself ended.
    public var qemuStatus: String
    public var started: Date
    public var ended: Date
    /// Seconds from QEMU's start to init's ready line.
    public var bootSeconds: Double?

    /// p2plab's exit code for this boot.
    public var exitCode: Int32 { kind.exitCode }
    public var console: URL { run.console }
    public var seconds: Double { ended.timeIntervalSince(started) }

    /// The last `count` lines of the console log.
    public func consoleTail(_ count: Int = 25) -> String {
        let text = (try? String(contentsOf: run.console, encoding: .utf8)) ?? ""
        return text.replacingOccurrences(of: "\r", with: "").trimmingCharacters(in: .newlines).lastLines(count)
    }

    /// One line for stderr: what happened and what to do; nil when the command simply exited.
    public func problem(limits: ConsoleMonitor.Limits) -> String? {
        switch kind {
        case .exited:
            return nil
        case .bootTimeout:
            return "the guest did not reach init within \(Int(limits.boot)) s under \(accel.rawValue)"
                + (accel == .kvm ? ": KVM may not work here, try --accel tcg" : ": check the console tail for where it stopped, or raise --boot-timeout")
        case .commandTimeout:
            return "the guest command was still running after --timeout \(Int(limits.command ?? 0)) s and was stopped: raise --timeout, or see the console tail for where it hung"
        case .kernelPanic:
            let line = findings.first { $0.kind == .panic }.map { ConsoleScanner.stripPanicPrefix($0.text) } ?? "Kernel panic"
            return "the guest kernel panicked (\(line)): the trace is in console.log"
        case .qemuDied:
            return "QEMU ended (\(qemuStatus)) before the guest reported an exit status: see qemu.log and the console tail"
        case .qemuFailed:
            // QEMU prefixes its errors with its name; hints ("Use -machine help …") follow them.
            let lines = ((try? String(contentsOf: run.qemuLog, encoding: .utf8)) ?? "").split(separator: "\n")
            let reason = (lines.last { $0.hasPrefix("qemu-system") } ?? lines.last).map(String.init) ?? qemuStatus
            return "QEMU could not start the machine: \(reason); see qemu.log and qemu-cmdline.sh"
        }
    }

    /// Decides the outcome from what was observed; a panic wins over everything, since a run that
    /// crashed must never read as a pass.
    public static func decide(
        monitor: ConsoleMonitor, stopReason: ConsoleMonitor.StopReason?, exitStatusFile: String?, qemuExitedNonZero: Bool
    ) -> (kind: Kind, guestExitStatus: Int32?) {
        let status = exitStatusFile.flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        if monitor.panicAt != nil { return (.kernelPanic, status) }
        switch stopReason {
        case .bootTimeout: return (.bootTimeout, status)
        case .commandTimeout: return (.commandTimeout, status)
        case .kernelPanic: return (.kernelPanic, status)
        case .poweroffTimeout, nil: break
        }
        if let status { return (.exited(status), status) }
        if monitor.kernelStartedAt == nil && qemuExitedNonZero { return (.qemuFailed, nil) }
        return (.qemuDied, nil)
    }
}

extension ConsoleScanner {
    /// The panic message without its timestamp, for one-line reports.
    static func stripPanicPrefix(_ line: String) -> String {
        guard let range = line.range(of: "Kernel panic") else { return line }
        return String(line[range.lowerBound...])
    }
}
