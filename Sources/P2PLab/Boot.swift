import ArgumentParser
import Foundation
import KTAP
import LabSupport
import Machine

extension AccelChoice: ExpressibleByArgument {}

extension P2PLabCommand {
    /// Boot the lab machine: a shell, or one command with --exec.
    struct Boot: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "boot",
            abstract: "Boot the lab machine: a shell, or one command with --exec.",
            discussion: """
                The guest runs the host's own userspace (the host root, read-only over 9p), with p2pmem \
                published by the emulated NVMe CMB and rxe0 on eth0. Without --exec you get a shell on \
                this terminal; leaving it powers the guest off (Ctrl-A X quits QEMU at once). With --exec, \
                p2plab exits with the command's status, or with 120 (QEMU could not start), 121 (boot \
                timeout), 122 (kernel panic), 123 (QEMU died), 124 (command timeout). In the guest, files \
                written to $P2PLAB_RESULTS land in the run directory's guest/.
                """)

        @Option(name: .long, help: ArgumentHelp("Run this shell command in the guest instead of a shell.", valueName: "CMD"))
        var exec: String?

        @Option(help: "KVM, TCG, or auto: KVM only if a short probe boot works.")
        var accel: AccelChoice = .auto

        @Option(help: ArgumentHelp("The bzImage to boot (default: $P2PLAB_KERNEL, else the latest `p2plab build`).", valueName: "PATH"))
        var kernel: String?

        @Option(help: ArgumentHelp("Machine definition: a name in vm/ or a .json path.", valueName: "NAME"))
        var machine: String = MachineDefinition.defaultName

        @Flag(help: "Print the QEMU command line and do nothing.")
        var dryRun = false

        @Option(help: ArgumentHelp("Seconds the command may run once the guest is up (default: 600 with --exec, none for a shell).", valueName: "SECONDS"))
        var timeout: Double?

        @Option(help: ArgumentHelp("Seconds the guest may take to reach init.", valueName: "SECONDS"))
        var bootTimeout: Double = LabLimits.standard.boot

        @Option(help: ArgumentHelp("Run directory (default: a new one under the cache's runs/).", valueName: "DIR"))
        var output: String?

        @Option(name: .customLong("env"), help: ArgumentHelp("Set a variable for the guest command (repeatable).", valueName: "NAME=VALUE"))
        var environment: [String] = []

        @Option(name: .customLong("share"), help: ArgumentHelp("A host path the command needs, if under /tmp or /run (repeatable).", valueName: "PATH"))
        var shares: [String] = []

        @Option(name: .customLong("append"), help: ArgumentHelp("Append to the kernel command line (repeatable).", valueName: "ARG"))
        var kernelArguments: [String] = []

        @Flag(name: .shortAndLong, help: "Show the kernel's boot messages too, not only the command's output (and print all of them, not only notices and worse).")
        var verbose = false

        func validate() throws {
            if let timeout, timeout <= 0 { throw ValidationError("--timeout must be positive, not \(timeout)") }
            if bootTimeout <= 0 { throw ValidationError("--boot-timeout must be positive, not \(bootTimeout)") }
            for pair in environment where !pair.contains("=") {
                throw ValidationError("--env takes NAME=VALUE, not \(pair)")
            }
        }

        func run() async throws {
            let root = try ProjectPaths.requireRoot()
            let vm = root.appendingPathComponent("vm")
            let definition = try MachineDefinition.load(named: machine, vmDirectory: vm)
            let cache = CacheLayout()
            var env: [String: String] = [:]
            for pair in environment {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                env[String(parts[0])] = String(parts[1])
            }
            let request = BootRequest(
                kernel: try KernelLocator.kernel(explicit: kernel, cache: cache), definition: definition, accel: accel,
                command: exec, timeout: timeout ?? (exec == nil ? nil : LabLimits.standard.command), bootTimeout: bootTimeout,
                runDirectory: output.map { URL(fileURLWithPath: $0) }, environment: env, sharedPaths: shares,
                // The lab's boots print notices and worse until init starts; --verbose wants them all.
                extraKernelArguments: (verbose ? ["loglevel=7"] : []) + kernelArguments, vmDirectory: vm, cache: cache)

            if dryRun {
                let run = request.runDirectory.map(RunDirectory.init) ?? RunDirectory.fresh(in: cache, machine: definition.name)
                let (_, line) = try LabMachine.commandLine(for: request, run: run, accel: accel == .kvm ? .kvm : .tcg)
                if accel == .auto {
                    FileHandle.standardError.write(Data("# --accel auto probes KVM before booting; shown with tcg\n".utf8))
                }
                print(shellQuote(line.commandLine))
                return
            }

            let verbose = self.verbose
            let interactive = exec == nil
            if interactive {
                FileHandle.standardError.write(Data("p2plab boot: a shell in the guest; `exit` powers off, Ctrl-A X quits QEMU\n".utf8))
            }
            let outcome = try await LabMachine.boot(request, runner: Runner(echo: verbose)) { line in
                // The command's output goes to stdout, so `p2plab boot --exec … > file` captures just
                // that; kernel messages are in console.log, and on stderr with --verbose.
                if line.fromCommand {
                    FileHandle.standardOutput.write(Data((line.text + "\n").utf8))
                } else if verbose {
                    FileHandle.standardError.write(Data((line.text + "\n").utf8))
                }
            }
            report(outcome, limits: request.limits)
            if outcome.exitCode != 0 { throw ExitCode(outcome.exitCode) }
        }

        /// Findings, the one-line problem, the console tail and where the run's files are, on stderr.
        private func report(_ outcome: BootOutcome, limits: ConsoleMonitor.Limits) {
            var lines: [String] = []
            if verbose || outcome.accel == .kvm || accel == .auto {
                lines.append("p2plab boot: \(outcome.accelNote)")
            }
            if !outcome.findings.isEmpty {
                let counts = Dictionary(grouping: outcome.findings, by: \.kind).map { "\($0.value.count) \($0.key.rawValue)" }.sorted()
                lines.append("p2plab boot: the console shows \(counts.joined(separator: ", ")):")
                lines += outcome.findings.prefix(10).map { "  console.log:\($0.line): \($0.text)" }
            }
            if let problem = outcome.problem(limits: limits) {
                lines.append("p2plab boot: \(problem)")
                lines.append("--- console tail (\(outcome.console.path)) ---")
                lines.append(outcome.consoleTail())
                lines.append("---")
            }
            lines.append("p2plab boot: \(outcome.kind.name) after \(String(format: "%.1f", outcome.seconds)) s; run directory \(outcome.run.url.path)")
            FileHandle.standardError.write(Data((lines.joined(separator: "\n") + "\n").utf8))
        }
    }
}
