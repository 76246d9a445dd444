import Foundation
import Subprocess
import SystemPackage

/// One external command: what to run, where, with what environment.
public struct Command: Sendable, CustomStringConvertible {
    public var arguments: [String]
    public var workingDirectory: String?
    public var environment: [String: String]
    /// Variables removed from the inherited environment.
    public var unset: [String]

    public init(_ arguments: [String], in workingDirectory: String? = nil, environment: [String: String] = [:], unset: [String] = []) {
        precondition(!arguments.isEmpty, "a command needs an executable")
        self.arguments = arguments
        self.workingDirectory = workingDirectory
        self.environment = environment
        self.unset = unset
    }

    /// The command line, shell-quoted, with the directory and environment it runs in.
    public var description: String {
        var prefix = ""
        if let workingDirectory { prefix += "cd \(shellQuote(workingDirectory)) && " }
        let env = environment.sorted { $0.key < $1.key }.map { "\($0.key)=\(shellQuote($0.value))" }
        if !env.isEmpty { prefix += env.joined(separator: " ") + " " }
        return prefix + shellQuote(arguments)
    }
}

extension Command {
    /// The swift-subprocess configuration: inherited environment plus ours, and a teardown of
    /// SIGTERM then SIGKILL after 5 s when the running task is cancelled (a timeout).
    var configuration: Configuration {
        var platform = PlatformOptions()
        platform.teardownSequence = [.gracefulShutDown(allowedDurationToNextStep: .seconds(5))]
        var env: [Environment.Key: String?] = [:]
        for (k, v) in environment { env[Environment.Key(stringLiteral: k)] = v }
        for k in unset { env[Environment.Key(stringLiteral: k)] = .some(nil) }
        return Configuration(
            executable: arguments[0].contains("/") ? .path(FilePath(arguments[0])) : .name(arguments[0]),
            arguments: Arguments(Array(arguments.dropFirst())),
            environment: .inherit.updating(env),
            workingDirectory: workingDirectory.map { FilePath($0) },
            platformOptions: platform)
    }
}

/// Errors of running external commands. A child that fails is reported as what it is: the command
/// line and how it ended, never as a failed check.
public enum RunError: LabError, Equatable {
    case nonZeroExit(command: String, status: String, stderrTail: String)
    case timedOut(command: String, seconds: Double)
    case notFound(executable: String, package: String?)
    /// The child could not be started or watched (not its own failure).
    case couldNotRun(command: String, reason: String)

    public var exitCode: LabExit {
        switch self {
        case .notFound: .missingDependency
        // A tool of the lab failing is an infrastructure failure: this kernel could not be tested.
        case .nonZeroExit, .timedOut, .couldNotRun: .couldNotTest
        }
    }

    public var description: String {
        switch self {
        case .nonZeroExit(let command, let status, let tail):
            "command failed (\(status)): \(command)" + (tail.isEmpty ? "" : "\n" + tail)
        case .timedOut(let command, let seconds):
            "command timed out after \(Int(seconds)) s: \(command)"
        case .notFound(let executable, let package):
            "\(executable) not found" + (package.map { ": install it with `apt-get install \($0)` (or run scripts/setup)" } ?? "")
        case .couldNotRun(let command, let reason):
            "could not run \(command): \(reason)"
        }
    }
}

/// The outcome of a finished command.
public struct RunResult: Sendable {
    public var status: Int32
    public var signaled: Bool
    public var standardOutput: String
    public var standardError: String
    public var succeeded: Bool { status == 0 && !signaled }
    public var statusDescription: String { signaled ? "killed by signal \(status)" : "exit \(status)" }
}

/// Runs external commands: prints them shell-quoted first (when asked), bounds each with a timeout,
/// and ends an overdue command with SIGTERM, then SIGKILL.
public struct Runner: Sendable {
    /// Print each command before it runs.
    public var echo: Bool
    /// Where echoed lines go.
    public var log: @Sendable (String) -> Void

    public init(echo: Bool = false, log: @escaping @Sendable (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }) {
        self.echo = echo
        self.log = log
    }

    private func configuration(_ command: Command) -> Configuration { command.configuration }

    /// Runs a command and collects its output (up to 64 MiB each stream).
    /// A non-zero exit does not throw; see `checked`.
    public func capture(_ command: Command, timeout: Double = 600, input: String? = nil) async throws -> RunResult {
        if echo { log("+ \(command)") }
        let config = configuration(command)
        return try await withTimeout(seconds: timeout, command: command) {
            let result: ExecutionResult<Void, StringOutput<UTF8>, StringOutput<UTF8>>
            do {
                if let input {
                    result = try await Subprocess.run(config, input: .string(input), output: .string(limit: 64 << 20), error: .string(limit: 64 << 20))
                } else {
                    result = try await Subprocess.run(config, output: .string(limit: 64 << 20), error: .string(limit: 64 << 20))
                }
            } catch let error as SubprocessError {
                throw Runner.translate(error, command: command)
            }
            return RunResult(result.terminationStatus, stdout: result.standardOutput, stderr: result.standardError)
        }
    }

    /// Runs a command and throws with its command line and the tail of its stderr if it fails.
    @discardableResult
    public func checked(_ command: Command, timeout: Double = 600, input: String? = nil) async throws -> RunResult {
        let result = try await capture(command, timeout: timeout, input: input)
        guard result.succeeded else {
            let tail = (result.standardError.isEmpty ? result.standardOutput : result.standardError).lastLines(15)
            throw RunError.nonZeroExit(command: command.description, status: result.statusDescription, stderrTail: tail)
        }
        return result
    }

    /// Runs a command with stdout and stderr appended to `logFile`, calling `onLine` for each line
    /// (for progress), and returns how it ended.
    public func stream(_ command: Command, logFile: URL, timeout: Double, onLine: @escaping @Sendable (String) -> Void = { _ in }) async throws -> RunResult {
        if echo { log("+ \(command)") }
        if !FileManager.default.fileExists(atPath: logFile.path) {
            _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)
        }
        let handle = try FileHandle(forWritingTo: logFile)
        defer { try? handle.close() }
        handle.seekToEndOfFile()
        handle.write(Data("+ \(command)\n".utf8))
        let config = configuration(command)
        return try await withTimeout(seconds: timeout, command: command) {
            do {
                let result = try await Subprocess.run(config, input: .none, output: .sequence, error: .combinedWithOutput) { execution in
                    for try await line in execution.standardOutput.strings(bufferingPolicy: .maxLineLength(1 << 20)) {
                        let bare = line.hasSuffix("\n") ? String(line.dropLast()) : line
                        handle.write(Data((bare + "\n").utf8))
                        onLine(bare)
                    }
                }
                return RunResult(result.terminationStatus, stdout: "", stderr: "")
            } catch let error as SubprocessError {
                throw Runner.translate(error, command: command)
            }
        }
    }

    /// Classifies swift-subprocess's error by its code: a missing executable is a missing tool,
    /// everything else is the lab failing to run the child.
    static func translate(_ error: SubprocessError, command: Command) -> any Error {
        let missing = error.code == .executableNotFound
            || (error.code == .spawnFailed && error.underlyingError == Errno.noSuchFileOrDirectory)
        if missing { return RunError.notFound(executable: command.arguments[0], package: nil) }
        if error.code == .failedToChangeWorkingDirectory {
            return RunError.couldNotRun(command: command.description, reason: "cannot change into \(command.workingDirectory ?? "?")")
        }
        return RunError.couldNotRun(command: command.description, reason: error.description)
    }

    /// Runs `body`, cancelling it (which tears the child down) once `seconds` have passed.
    func withTimeout<T: Sendable>(seconds: Double, command: Command, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
                return nil
            }
            defer { group.cancelAll() }
            while let next = try await group.next() {
                if let value = next { return value }
                throw RunError.timedOut(command: command.description, seconds: seconds)
            }
            throw CancellationError()
        }
    }
}

extension RunResult {
    init(_ status: TerminationStatus, stdout: String, stderr: String) {
        switch status {
        case .exited(let code): self.init(status: Int32(code), signaled: false, standardOutput: stdout, standardError: stderr)
        case .signaled(let sig): self.init(status: Int32(sig), signaled: true, standardOutput: stdout, standardError: stderr)
        }
    }
}

/// Finds an executable on PATH, or nil.
public func which(_ name: String, path: String? = ProcessInfo.processInfo.environment["PATH"]) -> String? {
    for dir in (path ?? "/usr/bin:/bin").split(separator: ":") {
        let candidate = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}
