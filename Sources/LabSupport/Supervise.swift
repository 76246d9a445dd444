import Foundation
import Subprocess
import SystemPackage

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Where a supervised command's standard streams go.
public enum SupervisedIO: Sendable {
    /// stdin, stdout and stderr are this process's own (an interactive QEMU on the user's terminal).
    case terminal
    /// stdin is /dev/null; stdout and stderr are appended to this file.
    case logFile(URL)
}

/// What a supervisor's watch callback wants done with the command.
public enum SupervisorDecision: Sendable, Equatable {
    case keepRunning
    /// End the command: SIGTERM, then SIGKILL after the grace period.
    case stop
}

/// How a supervised command ended.
public struct SupervisedResult: Sendable {
    /// Exit status, or the signal number when `signaled`.
    public var status: Int32
    public var signaled: Bool
    /// The watch callback asked to stop it (so a signal death is ours, not a crash).
    public var stoppedByWatcher: Bool
    /// SIGTERM was not enough within the grace period.
    public var neededKill: Bool
    public var statusDescription: String { signaled ? "killed by signal \(status)" : "exit \(status)" }
}

extension Runner {
    /// Runs a long-lived command (QEMU) and calls `watch` every `interval` while it runs.
    ///
    /// Unlike `stream`, the caller decides when the command has run long enough (a console line, a
    /// deadline): when `watch` returns `.stop`, the command gets SIGTERM and, if it is still there
    /// after `grace`, SIGKILL. Exit is noticed through the child's pidfd without reaping it, so
    /// swift-subprocess still owns the wait. `watch` is called once more after the command exits.
    public func supervise(
        _ command: Command,
        io: SupervisedIO,
        interval: Duration = .milliseconds(100),
        grace: Duration = .seconds(5),
        watch: @escaping @Sendable (_ exited: Bool) async -> SupervisorDecision
    ) async throws -> SupervisedResult {
        if echo { log("+ \(command)") }
        let config = supervisedConfiguration(command)
        let status: TerminationStatus
        var ending = (stopped: false, killed: false)
        do {
            switch io {
            case .terminal:
                status = try await Subprocess.run(
                    config, input: .currentStandardInput, output: .currentStandardOutput, error: .currentStandardError
                ) { execution in
                    ending = try await superviseLoop(execution.processIdentifier, interval: interval, grace: grace, watch: watch) {
                        try execution.send(signal: $0)
                    }
                }.terminationStatus
            case .logFile(let url):
                if !FileManager.default.fileExists(atPath: url.path) {
                    _ = FileManager.default.createFile(atPath: url.path, contents: nil)
                }
                let fd = try FileDescriptor.open(FilePath(url.path), .writeOnly, options: [.append])
                defer { try? fd.close() }
                status = try await Subprocess.run(
                    config, input: .none,
                    output: .fileDescriptor(fd, closeAfterSpawningProcess: false),
                    error: .fileDescriptor(fd, closeAfterSpawningProcess: false)
                ) { execution in
                    ending = try await superviseLoop(execution.processIdentifier, interval: interval, grace: grace, watch: watch) {
                        try execution.send(signal: $0)
                    }
                }.terminationStatus
            }
        } catch let error as SubprocessError {
            throw Runner.translate(error, command: command)
        }
        switch status {
        case .exited(let code):
            return SupervisedResult(status: Int32(code), signaled: false, stoppedByWatcher: ending.stopped, neededKill: ending.killed)
        case .signaled(let signal):
            return SupervisedResult(status: Int32(signal), signaled: true, stoppedByWatcher: ending.stopped, neededKill: ending.killed)
        }
    }

    /// Polls the child until it exits or `watch` wants it gone; returns whether we stopped or killed it.
    private func superviseLoop(
        _ pid: ProcessIdentifier, interval: Duration, grace: Duration,
        watch: @escaping @Sendable (_ exited: Bool) async -> SupervisorDecision,
        send: (Signal) throws -> Void
    ) async throws -> (stopped: Bool, killed: Bool) {
        while true {
            if processHasExited(pid) {
                _ = await watch(true)
                return (false, false)
            }
            if await watch(false) == .stop {
                try? send(.terminate)
                let clock = ContinuousClock()
                let deadline = clock.now.advanced(by: grace)
                while !processHasExited(pid), clock.now < deadline {
                    try? await Task.sleep(for: .milliseconds(50))
                }
                if processHasExited(pid) { return (true, false) }
                try? send(.kill)
                return (true, true)
            }
            try await Task.sleep(for: interval)
        }
    }

    private func supervisedConfiguration(_ command: Command) -> Configuration {
        // If our task is cancelled, swift-subprocess tears the child down the same way we do.
        command.configuration
    }
}

/// True once the child has exited (it may still be an unreaped zombie).
///
/// A pidfd becomes readable when its process exits; without one, /proc's state letter tells.
private func processHasExited(_ pid: ProcessIdentifier) -> Bool {
    if pid.processDescriptor >= 0 {
        var entry = pollfd(fd: pid.processDescriptor, events: Int16(POLLIN), revents: 0)
        return poll(&entry, 1, 0) > 0
    }
    guard let stat = try? String(contentsOfFile: "/proc/\(pid.value)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return true }
    let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
    return state == "Z" || state == "X"
}
