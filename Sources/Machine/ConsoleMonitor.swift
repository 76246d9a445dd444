import KernelConsole
import Foundation
import LabSupport

/// A line the guest printed on its console, with where the boot was when it came.
public struct ConsoleLine: Sendable {
    public enum Phase: Sendable {
        /// Firmware and kernel boot, before init's ready line.
        case boot
        /// The command (or shell) is running.
        case command
        /// init reported the exit status and is powering off.
        case shutdown
    }
    public var text: String
    public var phase: Phase

    public init(text: String, phase: Phase) {
        self.text = text
        self.phase = phase
    }

    /// A printk line (`[    1.234567] …`), as opposed to output of init or the command.
    public var fromKernel: Bool {
        let trimmed = text.drop { $0 == " " }
        guard trimmed.first == "[", let close = trimmed.firstIndex(of: "]") else { return false }
        let stamp = trimmed[trimmed.index(after: trimmed.startIndex)..<close].trimmingCharacters(in: .whitespaces)
        return !stamp.isEmpty && stamp.allSatisfy { $0.isNumber || $0 == "." }
    }

    /// A line of init's own (`p2plab-init: …`).
    public var fromInit: Bool { text.hasPrefix("p2plab-init:") }

    /// Output of the guest command: not the kernel's, not init's, printed after init was ready.
    ///
    /// Shutdown lines count too: the serial port drains the command's last lines while init
    /// already reports the exit status.
    public var fromCommand: Bool { phase != .boot && !fromKernel && !fromInit }
}

/// Follows the guest console as it grows and decides when a boot must be stopped.
///
/// Pure bookkeeping (bytes in, decisions out, time passed in by the caller), so the timeout and
/// panic rules are unit-tested without QEMU.
public struct ConsoleMonitor: Sendable {
    /// Why the host stopped QEMU before it ended by itself.
    public enum StopReason: String, Sendable, Codable, Equatable {
        case bootTimeout
        case commandTimeout
        case kernelPanic
        /// The command finished but the guest did not power off.
        case poweroffTimeout
    }

    /// Limits, in seconds since QEMU started (boot) or since init printed its ready line (command).
    public struct Limits: Sendable, Equatable {
        public var boot: Double
        public var command: Double?
        /// After a panic line, how long to let the trace finish before stopping QEMU
        /// (with `panic=-1` and `-no-reboot` QEMU normally exits by itself well before).
        public var panicGrace: Double

        /// After init announced the exit status, how long powering off may take.
        public var poweroff: Double

        public init(boot: Double, command: Double?, panicGrace: Double = LabLimits.standard.panicGrace, poweroff: Double = LabLimits.standard.poweroff) {
            self.boot = boot
            self.command = command
            self.panicGrace = panicGrace
            self.poweroff = poweroff
        }
    }

    public var limits: Limits
    /// Seconds at which the kernel printed its first line (`Linux version`).
    public private(set) var kernelStartedAt: Double?
    /// Seconds at which init printed its ready line.
    public private(set) var readyAt: Double?
    /// Seconds at which a `Kernel panic` line appeared.
    public private(set) var panicAt: Double?
    /// Whether init announced the command's exit status.
    public private(set) var commandFinishedAt: Double?
    public private(set) var findings: [ConsoleFinding] = []
    public private(set) var lineCount = 0
    private var pending: [UInt8] = []

    public init(limits: Limits) {
        self.limits = limits
    }

    /// Feeds newly appended console bytes read at `time`; returns the complete lines they finished.
    @discardableResult
    public mutating func feed(_ bytes: some Sequence<UInt8>, at time: Double) -> [ConsoleLine] {
        pending.append(contentsOf: bytes)
        var lines: [ConsoleLine] = []
        while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
            var raw = Array(pending[..<newline])
            pending.removeSubrange(...newline)
            if raw.last == UInt8(ascii: "\r") { raw.removeLast() }
            let line = String(decoding: raw, as: UTF8.self)
            lines.append(ConsoleLine(text: line, phase: take(line, at: time)))
        }
        return lines
    }

    /// Treats a last line without a newline as complete (QEMU has exited; nothing more will come).
    @discardableResult
    public mutating func flush(at time: Double) -> [ConsoleLine] {
        guard !pending.isEmpty else { return [] }
        return feed([UInt8(ascii: "\n")], at: time)
    }

    /// Records one line; returns the phase it belongs to.
    private mutating func take(_ line: String, at time: Double) -> ConsoleLine.Phase {
        lineCount += 1
        if kernelStartedAt == nil, line.contains("Linux version") { kernelStartedAt = time }
        // contains, not hasPrefix: a kernel message may share the line with init's output.
        if readyAt == nil, line.contains(GuestInit.readyMarker) { readyAt = time }
        if commandFinishedAt == nil, line.contains(GuestInit.exitMarker) { commandFinishedAt = time }
        if let kind = ConsoleScanner.classify(line) {
            findings.append(ConsoleFinding(kind: kind, line: lineCount, text: line))
            if kind == .panic, panicAt == nil { panicAt = time }
        }
        if commandFinishedAt != nil { return .shutdown }
        if readyAt != nil, !line.contains(GuestInit.readyMarker) { return .command }
        return .boot
    }

    /// Whether QEMU must be stopped now, and why; nil while everything is within its limits.
    public func stopReason(at time: Double) -> StopReason? {
        if let panicAt, time - panicAt >= limits.panicGrace { return .kernelPanic }
        if panicAt != nil { return nil }
        guard let readyAt else {
            return time >= limits.boot ? .bootTimeout : nil
        }
        if let commandFinishedAt { return time - commandFinishedAt >= limits.poweroff ? .poweroffTimeout : nil }
        if let command = limits.command, time - readyAt >= command { return .commandTimeout }
        return nil
    }
}
