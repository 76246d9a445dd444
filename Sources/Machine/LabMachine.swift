import KernelConsole
import Foundation
import LabSupport

/// What to boot and how: the one argument of `LabMachine.boot`.
public struct BootRequest: Sendable {
    public var kernel: URL
    public var definition: MachineDefinition
    public var accel: AccelChoice
    /// A shell command for the guest (`/bin/sh -c`); nil for an interactive shell on this terminal.
    public var command: String?
    /// Seconds the command may run after init is ready; nil for no limit.
    public var timeout: Double?
    /// Seconds from QEMU's start until init must be ready.
    public var bootTimeout: Double
    /// Where the run's files go; nil for a fresh directory under the cache's `runs/`.
    public var runDirectory: URL?
    /// Extra environment for the guest command.
    public var environment: [String: String]
    /// Host files and directories the command needs. The guest sees the host's root read-only, so
    /// most paths need nothing; those under a guest tmpfs (/tmp, /run, …) are shared again.
    public var sharedPaths: [String]
    /// Appended to the kernel command line (e.g. `dyndbg=…`).
    public var extraKernelArguments: [String]
    /// The command's working directory in the guest (a host path, seen read-only).
    public var workingDirectory: String
    /// The `vm/` directory holding `init.sh`.
    public var vmDirectory: URL
    public var qemu: String
    public var cache: CacheLayout

    public init(
        kernel: URL, definition: MachineDefinition, accel: AccelChoice = .auto, command: String?,
        timeout: Double? = nil, bootTimeout: Double = LabLimits.standard.boot, runDirectory: URL? = nil,
        environment: [String: String] = [:], sharedPaths: [String] = [], extraKernelArguments: [String] = [],
        workingDirectory: String = FileManager.default.currentDirectoryPath, vmDirectory: URL,
        qemu: String = "qemu-system-x86_64", cache: CacheLayout = CacheLayout()
    ) {
        self.kernel = kernel
        self.definition = definition
        self.accel = accel
        self.command = command
        self.timeout = timeout
        self.bootTimeout = bootTimeout
        self.runDirectory = runDirectory
        self.environment = environment
        self.sharedPaths = sharedPaths
        self.extraKernelArguments = extraKernelArguments
        self.workingDirectory = workingDirectory
        self.vmDirectory = vmDirectory
        self.qemu = qemu
        self.cache = cache
    }

    /// The limits the console monitor enforces for this request.
    public var limits: ConsoleMonitor.Limits { ConsoleMonitor.Limits(boot: bootTimeout, command: timeout) }
}

/// Boots the lab machine: the library API behind `p2plab boot`, used by `p2plab test` too.
public enum LabMachine {
    /// Boots `request.kernel` on `request.definition`, runs the command (or a shell), and reports
    /// how it ended. Never hangs: the boot and command timeouts, a console panic and QEMU dying each
    /// end the boot with their own `BootOutcome.Kind`. Throws only when it cannot start at all
    /// (no QEMU, bad definition, unusable paths).
    ///
    /// `onConsoleLine` sees each console line as it arrives (not for interactive boots, whose
    /// console is the user's terminal).
    public static func boot(
        _ request: BootRequest, runner: Runner = Runner(),
        onConsoleLine: @escaping @Sendable (ConsoleLine) -> Void = { _ in }
    ) async throws -> BootOutcome {
        guard request.qemu.contains("/") || which(request.qemu) != nil else {
            throw MachineError.qemuNotFound(executable: request.qemu)
        }
        let run = request.runDirectory.map(RunDirectory.init) ?? RunDirectory.fresh(in: request.cache, machine: request.definition.name)
        try prepare(run)
        let started = Date()
        let decision = try await AccelProbe.decide(
            request.accel, kernel: request.kernel, cpu: request.definition.cpu, qemu: request.qemu,
            cache: request.cache, workDirectory: run.url, runner: Runner())
        let (plan, line) = try commandLine(for: request, run: run, accel: decision.accel)
        try writeInputs(plan: plan, definition: request.definition, line: line, request: request)

        // An interactive console is already on the user's terminal; echoing it again would double it.
        var echo = onConsoleLine
        if plan.interactive { echo = { _ in } }
        let watcher = ConsoleWatcher(console: run.console, limits: request.limits, onLine: echo)
        // The checks' requests to the host (device_del, device_add) are answered while QEMU runs.
        let hostChannel = HostChannelService(plan: plan, definition: request.definition)
        hostChannel.start()
        let supervised: SupervisedResult
        do {
            supervised = try await runner.supervise(
                Command(line.commandLine), io: plan.interactive ? .terminal : .logFile(run.qemuLog)
            ) { exited in
                await watcher.tick(exited: exited)
            }
        } catch {
            hostChannel.stop()
            throw error
        }
        hostChannel.stop()
        let result = supervised
        if plan.interactive && result.neededKill { restoreTerminal() }
        let monitor = await watcher.monitor
        let stopReason = await watcher.stopReason
        let statusText = try? String(contentsOf: run.exitStatus, encoding: .utf8)
        let decided = BootOutcome.decide(
            monitor: monitor, stopReason: stopReason, exitStatusFile: statusText,
            qemuExitedNonZero: result.signaled || result.status != 0)
        let outcome = BootOutcome(
            kind: decided.kind, guestExitStatus: decided.guestExitStatus, run: run, findings: monitor.findings,
            accel: decision.accel, accelNote: decision.note, qemuStatus: result.statusDescription,
            started: started, ended: Date(), bootSeconds: monitor.readyAt)
        try? writeManifest(outcome, request: request)
        return outcome
    }

    /// The plan and QEMU command line `boot` would use, without creating or running anything
    /// (for `--dry-run`, and for tests).
    public static func commandLine(for request: BootRequest, run: RunDirectory, accel: Accelerator) throws -> (BootPlan, QEMUCommandLine) {
        for path in [run.url.path, request.kernel.path] where path.contains(where: \.isWhitespace) {
            // The kernel command line is split on whitespace, and init= names a file in the run directory.
            throw MachineError.unusablePath(path: path, reason: "it contains whitespace; pass --output DIR without spaces")
        }
        let plan = BootPlan(
            kernel: request.kernel, accel: accel, run: run, command: request.command,
            environment: request.environment,
            extraShares: GuestShare.needed(for: request.sharedPaths),
            extraKernelArguments: request.extraKernelArguments,
            workingDirectory: request.workingDirectory,
            terminalSize: request.command == nil ? terminalSize() : (24, 80),
            term: request.command == nil ? (ProcessInfo.processInfo.environment["TERM"] ?? "linux") : "dumb",
            tcgTiming: accel == .tcg ? TCGTiming.forKernel(request.kernel) : nil,
            guestSetup: GuestSetupProgram.ensure(vmDirectory: request.vmDirectory, cache: request.cache).program?.path)
        return (plan, QEMUCommandLine(definition: request.definition, plan: plan, executable: request.qemu))
    }

    /// Creates the run directory and its `guest/` share, clearing what a previous boot left there.
    static func prepare(_ run: RunDirectory) throws {
        let fm = FileManager.default
        do {
            try fm.ensureDirectory(run.guest)
        } catch {
            throw MachineError.unusablePath(path: run.url.path, reason: "cannot create the run directory: \(error.localizedDescription)")
        }
        for stale in [run.exitStatus, run.console, run.qemuLog, run.manifest, run.qmpLog, run.hostChannel.directory] {
            try? fm.removeItem(at: stale)
        }
        // QEMU does not replace a socket file another boot left behind.
        try? fm.removeItem(atPath: run.qmpSocket)
        _ = fm.createFile(atPath: run.console.path, contents: nil)
    }

    /// Writes the init, the namespace images and the command line into the run directory.
    static func writeInputs(plan: BootPlan, definition: MachineDefinition, line: QEMUCommandLine, request: BootRequest) throws {
        let guestInit = try GuestInit.load(vmDirectory: request.vmDirectory)
        try guestInit.render(plan: plan, definition: definition).write(to: plan.run.initScript, atomically: true, encoding: .utf8)
        try guestInit.renderFstab(plan: plan).write(to: plan.run.fstab, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: plan.run.initScript.path)
        for device in definition.nvme {
            // Sparse: a namespace costs no disk until the guest writes to it.
            let url = plan.run.image(for: device)
            let new = !FileManager.default.fileExists(atPath: url.path)
            if new {
                _ = FileManager.default.createFile(atPath: url.path, contents: nil)
            }
            let handle = try FileHandle(forWritingTo: url)
            try handle.truncate(atOffset: UInt64(device.namespaceMiB) << 20)
            try handle.close()
            // Only a new image: one that a crashed boot left is the guest's to keep or reformat.
            if new, let label = device.ext4Label { formatExt4(url, label: label) }
        }
        try (shellQuote(line.commandLine) + "\n").write(to: plan.run.qemuCommandLine, atomically: true, encoding: .utf8)
    }

    /// mkfs.ext4 of a namespace image on the host. Best effort: without mkfs.ext4, or if it fails,
    /// the image stays zeros and the guest formats it when a check needs it.
    static func formatExt4(_ image: URL, label: String) {
        let path = "/usr/sbin:/sbin" + (ProcessInfo.processInfo.environment["PATH"].map { ":\($0)" } ?? "")
        guard let mkfs = which("mkfs.ext4", path: path) else { return }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: mkfs)
        process.arguments = ["-F", "-q", "-L", label, image.path]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return }
        process.waitUntilExit()
    }

    /// The manifest: a small JSON summary of the run, for reports and for people.
    public struct Manifest: Codable, Sendable {
        public var kernel: String
        public var machine: String
        public var accel: String
        public var accelNote: String
        public var command: String?
        public var started: Date
        public var ended: Date
        public var seconds: Double
        public var bootSeconds: Double?
        public var outcome: String
        public var guestExitStatus: Int32?
        public var exitCode: Int32
        public var qemuStatus: String
        public var findings: [ConsoleFinding]
    }

    static func writeManifest(_ outcome: BootOutcome, request: BootRequest) throws {
        let manifest = Manifest(
            kernel: request.kernel.path, machine: request.definition.name, accel: outcome.accel.rawValue,
            accelNote: outcome.accelNote, command: request.command, started: outcome.started, ended: outcome.ended,
            seconds: (outcome.seconds * 100).rounded() / 100, bootSeconds: outcome.bootSeconds.map { ($0 * 100).rounded() / 100 },
            outcome: outcome.kind.name, guestExitStatus: outcome.guestExitStatus, exitCode: outcome.exitCode,
            qemuStatus: outcome.qemuStatus, findings: outcome.findings)
        try LabJSON.encode(manifest).write(to: outcome.run.manifest)
    }

    /// The user's terminal size, for the guest shell's `stty`.
    static func terminalSize() -> (rows: Int, columns: Int) {
        var size = winsize()
        if ioctl(STDIN_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_row > 0, size.ws_col > 0 {
            return (Int(size.ws_row), Int(size.ws_col))
        }
        return (24, 80)
    }

    /// A SIGKILLed QEMU leaves the terminal raw; put it back.
    static func restoreTerminal() {
        var attributes = termios()
        if tcgetattr(STDIN_FILENO, &attributes) == 0 {
            attributes.c_lflag |= tcflag_t(ICANON | ECHO | ISIG)
            attributes.c_oflag |= tcflag_t(OPOST)
            attributes.c_iflag |= tcflag_t(ICRNL)
            tcsetattr(STDIN_FILENO, TCSANOW, &attributes)
        }
    }
}

/// Tails the console file for the supervisor: feeds the monitor and says when to stop QEMU.
actor ConsoleWatcher {
    private(set) var monitor: ConsoleMonitor
    private(set) var stopReason: ConsoleMonitor.StopReason?
    private let handle: FileHandle?
    private let onLine: @Sendable (ConsoleLine) -> Void
    private let start = ContinuousClock.now

    init(console: URL, limits: ConsoleMonitor.Limits, onLine: @escaping @Sendable (ConsoleLine) -> Void) {
        monitor = ConsoleMonitor(limits: limits)
        handle = FileHandle(forReadingAtPath: console.path)
        self.onLine = onLine
    }

    private var now: Double {
        let elapsed = start.duration(to: .now)
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    func tick(exited: Bool) -> SupervisorDecision {
        let time = now
        if let data = try? handle?.readToEnd(), !data.isEmpty {
            for line in monitor.feed(data, at: time) { onLine(line) }
        }
        if exited {
            for line in monitor.flush(at: time) { onLine(line) }
            return .keepRunning
        }
        if let reason = monitor.stopReason(at: time) {
            stopReason = reason
            return .stop
        }
        return .keepRunning
    }
}
