import Foundation
import KTAP
import LabSupport
import Testing

@testable import Machine

/// Feeds a recorded console to a monitor in small chunks, one second of boot per chunk.
func replay(_ name: String, limits: ConsoleMonitor.Limits = .init(boot: 120, command: 60), chunk: Int = 997) throws -> (ConsoleMonitor, [ConsoleLine]) {
    let bytes = Array(try Data(contentsOf: TestPaths.fixture("console/\(name)")))
    var monitor = ConsoleMonitor(limits: limits)
    var lines: [ConsoleLine] = []
    var time = 0.0
    // Odd chunk sizes split lines (and CRLFs) at arbitrary bytes, as reading a growing file does.
    for start in stride(from: 0, to: bytes.count, by: chunk) {
        lines += monitor.feed(bytes[start..<min(start + chunk, bytes.count)], at: time)
        time += 1
    }
    lines += monitor.flush(at: time)
    return (monitor, lines)
}

@Suite("Console monitor over recorded logs")
struct ConsoleMonitorTests {
    @Test("clean boot: ready, finished, no findings, nothing to stop")
    func clean() throws {
        let (monitor, lines) = try replay("clean.log")
        #expect(monitor.kernelStartedAt == 0)
        #expect(monitor.readyAt != nil)
        #expect(monitor.commandFinishedAt != nil)
        #expect(monitor.findings.isEmpty)
        #expect(monitor.stopReason(at: monitor.commandFinishedAt! + 1) == nil)
        #expect(lines.count == 324)
        #expect(!lines.contains { $0.text.hasSuffix("\r") })
        #expect(lines.filter(\.fromCommand).isEmpty)
        #expect(lines.first { $0.text.contains(GuestInit.readyMarker) }?.phase == .boot)
    }

    @Test("WARN: found and reported, but the guest goes on")
    func warn() throws {
        let (monitor, lines) = try replay("warn.log")
        #expect(monitor.findings.map(\.kind) == [.warning])
        #expect(monitor.findings.first?.text.contains("drivers/pci/p2pdma.c") == true)
        #expect(monitor.panicAt == nil)
        #expect(monitor.commandFinishedAt != nil)
        #expect(lines.first { $0.text.contains("WARNING:") }?.phase == .command)
    }

    @Test("oops turned panic: both found; stop once the grace period has passed")
    func oops() throws {
        let (monitor, _) = try replay("oops-panic.log")
        #expect(monitor.findings.map(\.kind) == [.bug, .oops, .panic])
        let panicAt = try #require(monitor.panicAt)
        #expect(monitor.stopReason(at: panicAt + 1) == nil)
        #expect(monitor.stopReason(at: panicAt + monitor.limits.panicGrace) == .kernelPanic)
        #expect(monitor.findings.first { $0.kind == .panic }?.text.contains("Fatal exception") == true)
    }

    @Test("sysrq panic during the command: a panic even while the command timeout has time left")
    func sysrq() throws {
        let (monitor, _) = try replay("sysrq-panic.log", limits: .init(boot: 120, command: 1000))
        #expect(monitor.readyAt != nil)
        #expect(monitor.commandFinishedAt == nil)
        #expect(monitor.findings.first?.kind == .panic)
        #expect(monitor.stopReason(at: try #require(monitor.panicAt) + 5) == .kernelPanic)
    }

    @Test("truncated boot: never ready, so the boot timeout applies and the command one does not")
    func truncated() throws {
        let (monitor, _) = try replay("truncated.log", limits: .init(boot: 30, command: 5))
        #expect(monitor.kernelStartedAt != nil)
        #expect(monitor.readyAt == nil)
        #expect(monitor.stopReason(at: 29.9) == nil)
        #expect(monitor.stopReason(at: 30) == .bootTimeout)
    }

    @Test("command timeout counts from init's ready line, not from QEMU's start")
    func commandTimeout() {
        var monitor = ConsoleMonitor(limits: .init(boot: 60, command: 20))
        monitor.feed(Array("[    0.000000] Linux version 6.12\r\n".utf8), at: 0)
        monitor.feed(Array("p2plab-init: ready, kernel 6.12\r\n".utf8), at: 50)
        #expect(monitor.stopReason(at: 69) == nil)
        #expect(monitor.stopReason(at: 70) == .commandTimeout)
        var unlimited = monitor
        unlimited.limits.command = nil
        #expect(unlimited.stopReason(at: 10_000) == nil)
    }

    @Test("a guest that reported its status but does not power off is stopped")
    func poweroff() {
        var monitor = ConsoleMonitor(limits: .init(boot: 60, command: 20, poweroff: 30))
        monitor.feed(Array("p2plab-init: ready, kernel 6.12\np2plab-init: exit status 0\n".utf8), at: 5)
        #expect(monitor.stopReason(at: 100) == .poweroffTimeout)
        #expect(monitor.stopReason(at: 34) == nil)
    }

    @Test("a marker sharing its line with a kernel message still counts")
    func interleaved() {
        var monitor = ConsoleMonitor(limits: .init(boot: 60, command: nil))
        monitor.feed(Array("[    7.1] infiniband rxe0: set activep2plab-init: ready, kernel 6.12\n".utf8), at: 1)
        #expect(monitor.readyAt == 1)
    }

    @Test("kernel, init and command lines are told apart")
    func lineSources() {
        #expect(ConsoleLine(text: "[    3.501969] sysrq: Power Off", phase: .command).fromKernel)
        #expect(!ConsoleLine(text: "[    3.501969] sysrq: Power Off", phase: .command).fromCommand)
        #expect(!ConsoleLine(text: "[x] y", phase: .command).fromKernel)
        #expect(ConsoleLine(text: "hello", phase: .command).fromCommand)
        #expect(ConsoleLine(text: "last words", phase: .shutdown).fromCommand)
        #expect(!ConsoleLine(text: "hello", phase: .boot).fromCommand)
        #expect(!ConsoleLine(text: "p2plab-init: exit status 0", phase: .shutdown).fromCommand)
    }
}

@Suite("Boot outcome")
struct BootOutcomeTests {
    func monitor(_ text: String) -> ConsoleMonitor {
        var m = ConsoleMonitor(limits: .init(boot: 60, command: 20))
        m.feed(Array(text.utf8), at: 1)
        return m
    }

    let booted = "[    0.0] Linux version 6.12\np2plab-init: ready, kernel 6.12\n"

    @Test("the guest's status file is the outcome")
    func exited() {
        let d = BootOutcome.decide(monitor: monitor(booted), stopReason: nil, exitStatusFile: "3\n", qemuExitedNonZero: false)
        #expect(d.kind == .exited(3) && d.guestExitStatus == 3 && d.kind.exitCode == 3)
    }

    @Test("a panic wins, even over a written status")
    func panicWins() {
        let m = monitor(booted + "[    4.0] Kernel panic - not syncing: sysrq triggered crash\n")
        let d = BootOutcome.decide(monitor: m, stopReason: nil, exitStatusFile: "0\n", qemuExitedNonZero: false)
        #expect(d.kind == .kernelPanic && d.kind.exitCode == LabExit.kernelPanic.rawValue)
    }

    @Test("timeouts are reported as the timeout they were")
    func timeouts() {
        #expect(BootOutcome.decide(monitor: monitor(""), stopReason: .bootTimeout, exitStatusFile: nil, qemuExitedNonZero: true).kind == .bootTimeout)
        #expect(BootOutcome.decide(monitor: monitor(booted), stopReason: .commandTimeout, exitStatusFile: nil, qemuExitedNonZero: true).kind == .commandTimeout)
        // A guest that finished but hung powering off still ran its command to the end.
        #expect(BootOutcome.decide(monitor: monitor(booted), stopReason: .poweroffTimeout, exitStatusFile: "0", qemuExitedNonZero: true).kind == .exited(0))
    }

    @Test("no status: QEMU failed before the kernel, or died after it started")
    func noStatus() {
        #expect(BootOutcome.decide(monitor: monitor(""), stopReason: nil, exitStatusFile: nil, qemuExitedNonZero: true).kind == .qemuFailed)
        #expect(BootOutcome.decide(monitor: monitor(booted), stopReason: nil, exitStatusFile: nil, qemuExitedNonZero: true).kind == .qemuDied)
        #expect(BootOutcome.decide(monitor: monitor(booted), stopReason: nil, exitStatusFile: "garbage", qemuExitedNonZero: false).kind == .qemuDied)
    }

    @Test("each outcome has its own exit code", arguments: [
        (BootOutcome.Kind.qemuFailed, LabExit.qemuFailed), (.bootTimeout, .bootTimeout), (.kernelPanic, .kernelPanic),
        (.qemuDied, .qemuDied), (.commandTimeout, .commandTimeout),
    ])
    func exitCodes(kind: BootOutcome.Kind, exit: LabExit) {
        #expect(kind.exitCode == exit.rawValue)
    }
}

@Suite("Supervised processes")
struct SuperviseTests {
    @Test("a command that exits by itself reports its status")
    func exits() async throws {
        let result = try await Runner().supervise(Command(["/bin/sh", "-c", "exit 7"]), io: .logFile(try scratchLog())) { _ in .keepRunning }
        #expect(result.status == 7 && !result.signaled && !result.stoppedByWatcher)
    }

    @Test("stop ends the command with SIGTERM")
    func stops() async throws {
        let start = ContinuousClock.now
        let result = try await Runner().supervise(Command(["sleep", "30"]), io: .logFile(try scratchLog())) { _ in
            start.duration(to: .now) > .milliseconds(300) ? .stop : .keepRunning
        }
        #expect(result.signaled && result.status == SIGTERM && result.stoppedByWatcher && !result.neededKill)
        #expect(start.duration(to: .now) < .seconds(5))
    }

    @Test("a command that ignores SIGTERM gets SIGKILL after the grace period")
    func kills() async throws {
        let start = ContinuousClock.now
        let result = try await Runner().supervise(
            Command(["/bin/sh", "-c", "trap '' TERM; sleep 30 & wait; sleep 30"]), io: .logFile(try scratchLog()), grace: .milliseconds(500)
        ) { _ in
            start.duration(to: .now) > .milliseconds(300) ? .stop : .keepRunning
        }
        #expect(result.neededKill && result.signaled && result.status == SIGKILL)
        #expect(start.duration(to: .now) < .seconds(5))
    }

    func scratchLog() throws -> URL {
        try TestPaths.temporaryDirectory().appendingPathComponent("log")
    }
}
