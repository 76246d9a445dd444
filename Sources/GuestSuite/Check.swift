import ArgumentParser
import KernelTree
import Catalog
import Checks
import Foundation
import LabSupport

extension GuestCommand {
    /// Run the check suite here (in the guest, or on real hardware) and print KTAP.
    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check",
            abstract: "Run the check suite here (in the guest, or on real hardware) and print KTAP.",
            discussion: """
                Prints KTAP version 1 on stdout (diagnostics before each result line) and exits 0 when \
                every check passed or skipped, 1 on a failure or a timeout, 4 when everything skipped or \
                the test module is missing, 5 when not run as root, 6 when no p2pmem provider is published.
                """)

        @Flag(help: "List the checks, the patches each depends on and what it asserts, then exit.")
        var list = false

        @Option(name: .customLong("filter"), help: "Run only checks whose name matches this glob (repeatable).")
        var filters: [String] = []

        @Option(help: "RDMA device to use (default: the first libibverbs lists).")
        var device: String?

        @Option(help: "p2pmem provider PCI address, e.g. 0000:03:00.0 (default: the first published).")
        var provider: String?

        @Option(help: "Path of p2plab_test.ko to load if it is not loaded (default: $P2PLAB_MODULE).")
        var module: String?

        @Option(help: "Also write the KTAP to DIR/results.ktap.")
        var results: String?

        @Option(help: ArgumentHelp(
            "The kernel the checks assert: a version of the series (v2, v3, v4, v5) or its effects as p2plab test passes them.",
            valueName: "VERSION"))
        var expect: String = SeriesVersion.defaultVersion.name

        @Option(help: "Per-check watchdog in seconds; an overdue check fails and the run stops.")
        var timeout: Double = LabLimits.standard.check

        @Option(help: ArgumentHelp("Directory with the kernel's mm selftests (gup_longterm, gup_test) built from the running kernel's tree.", valueName: "DIR"))
        var selftests: String?

        /// Why the host has no selftests for this kernel (its build failed): the selftest checks skip with it.
        @Option(help: .hidden)
        var selftestsProblem: String?

        /// The lab machine's typed request (`$P2PLAB_RESULTS/invocation.json`), written by the host.
        @Option(help: .hidden)
        var invocation: String?

        func validate() throws {
            if let provider, PCIAddress(provider) == nil {
                throw ValidationError("--provider \(provider) is not a PCI address like 0000:03:00.0")
            }
            if timeout <= 0 { throw ValidationError("--timeout must be positive, got \(timeout)") }
            if reference == nil {
                throw ValidationError("--expect \(expect): give a version (\(SeriesVersion.all.map(\.name).joined(separator: ", "))) or effect tokens (\(EffectKind.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
        }

        /// What `--expect` names.
        var reference: KernelEffects? { Self.reference(expect) }

        static func reference(_ expect: String) -> KernelEffects? {
            SeriesVersion.named(expect)?.effects ?? KernelEffects(tokens: expect)
        }

        /// What one run is asked to do: the options as parsed, before the invocation (if any) replaces them.
        struct Request: Equatable {
            var list = false
            var filters: [String] = []
            var timeout = LabLimits.standard.check
            var results: String?
            var module: String?
            var device: String?
            var provider: String?
            var reference = Check.reference(SeriesVersion.defaultVersion.name)
            var selftests: String?
            var selftestsProblem: String?

            /// What `check` with no options but `--invocation` parses to (a test holds the two together).
            static let defaults = Request()
        }

        var request: Request {
            Request(
                list: list, filters: filters, timeout: timeout, results: results, module: module, device: device,
                provider: provider, reference: reference, selftests: selftests, selftestsProblem: selftestsProblem)
        }

        /// FILE when `arguments` are exactly `check --invocation FILE`, the host's call for every lab run.
        static func invocationFile(_ arguments: [String]) -> String? {
            arguments.count == 3 && arguments[0] == "check" && arguments[1] == "--invocation" ? arguments[2] : nil
        }

        func run() async throws {
            try await Self.run(request, invocation: invocation)
        }

        /// Runs `request`, or the lab machine's invocation at `invocation` in its place.
        static func run(_ request: Request, invocation: String?) async throws {
            var filters = request.filters, timeout = request.timeout, results = request.results, module = request.module
            var device = request.device, provider = request.provider, reference = request.reference
            var selftests = request.selftests, selftestsProblem = request.selftestsProblem
            let list = request.list
            let devices = list ? nil : DeviceListing()
            var host: HostLink?
            if let invocation {
                let file = URL(fileURLWithPath: invocation)
                let invoked = try GuestInvocation.read(from: file)
                (timeout, results, module) = (invoked.limits.check, file.deletingLastPathComponent().path, invoked.module)
                (device, provider) = (invoked.device, invoked.provider)
                (selftests, selftestsProblem) = (invoked.selftests, invoked.selftestsProblem)
                if let access = invoked.host {
                    let channel = HostChannel(directory: file.deletingLastPathComponent().appendingPathComponent(access.channel))
                    host = HostLink(channel: channel, devices: access.devices, limits: invoked.limits)
                }
                if let expect = invoked.expect {
                    guard let named = Self.reference(expect) else { throw ValidationError("the invocation's expect \(expect) names no version or effects") }
                    reference = named
                }
                switch invoked.job {
                case .suite(let checks):
                    filters = checks
                case .bench(let only, let repetitions):
                    try await BenchGuestCommand.measure(
                        module: module, repetitions: repetitions, only: only, device: device, provider: provider, results: results)
                    return
                case .torture(let plan):
                    try await torture(plan, module: module, device: device, provider: provider, reference: reference, results: results)
                    return
                }
            }
            let selected = SuiteRunner.select(Suite.all, filters: filters)
            if list {
                for line in SuiteRunner.listing(selected) { print(line) }
                return
            }
            if selected.isEmpty { throw ValidationError("no check matches \(filters.joined(separator: ", "))") }
            guard geteuid() == 0 else {
                FileHandle.standardError.write(Data("p2plab check: run as root (the suite loads a module, pins memory, unbinds devices and reads /dev/kmsg)\n".utf8))
                throw ExitCode(LabExit.notRoot.rawValue)
            }
            // With an invocation, results is the lab machine's uncached results share.
            let sink = try KTAPSink(resultsDirectory: results, synchronize: invocation == nil, drainTerminal: invocation == nil)
            let options = SuiteOptions(
                device: device, provider: provider.flatMap(PCIAddress.init), modulePath: await modulePath(module),
                selftests: selftests, selftestsProblem: selftestsProblem, host: host)
            let context = Discovery.context(
                options: options, holderCommand: holderCommand(), reference: reference ?? .baseline, devices: devices)
            let runner = SuiteRunner(checks: selected, context: context, kernelLog: KmsgLog(), timeout: timeout) { sink.line($0) }
            let exit = runner.run(preamble: Discovery.preamble(context))
            sink.close()
            // No p2pmem is an environment problem, not a verdict on the kernel: say so in one line and
            // exit with its own code, unless a check failed outright.
            if exit != .failed, context.provider == nil, selected.contains(where: { $0.requirements.contains(.provider) }) {
                FileHandle.standardError.write(Data("p2plab check: \(context.providerProblem ?? "no p2pmem provider published")\n".utf8))
                throw ExitCode(LabExit.noProvider.rawValue)
            }
            // Without the module most checks skipped: that is not a pass either.
            if exit == .success, context.module == nil, selected.contains(where: { $0.requirements.contains(.module) }) {
                FileHandle.standardError.write(Data("p2plab check: not a pass: \(context.moduleProblem ?? "test module not loaded")\n".utf8))
                throw ExitCode(LabExit.skipped.rawValue)
            }
            if exit != .success { throw ExitCode(exit.rawValue) }
        }

        /// `p2plab torture` in the guest: KTAP on stdout and in the results share, `torture.json` beside it.
        static func torture(_ plan: TorturePlan, module: String?, device: String?, provider: String?, reference: KernelEffects?,
                            results: String?) async throws {
            guard geteuid() == 0 else {
                FileHandle.standardError.write(Data("p2plab torture: run as root (it loads a module, pins memory and unbinds devices)\n".utf8))
                throw ExitCode(LabExit.notRoot.rawValue)
            }
            let sink = try KTAPSink(resultsDirectory: results, drainTerminal: false)
            let options = SuiteOptions(device: device, provider: provider.flatMap(PCIAddress.init), modulePath: module)
            let context = Discovery.context(options: options, holderCommand: nil, reference: reference ?? .baseline)
            let (exit, summary) = TortureRun(plan: plan, context: context).run { sink.line($0) }
            sink.close()
            if let results { try? summary.write(into: URL(fileURLWithPath: results)) }
            if exit != .success { throw ExitCode(exit.rawValue) }
        }

        /// --module, else $P2PLAB_MODULE, else (on real hardware, module not loaded) the test module
        /// built against the running kernel's headers; nil leaves env.module to SKIP with the reason.
        private static func modulePath(_ module: String?) async -> String? {
            if let path = module ?? ProcessInfo.processInfo.environment["P2PLAB_MODULE"] { return path }
            if FileManager.default.fileExists(atPath: "/sys/module/p2plab_test") { return nil }
            guard let root = ProjectPaths.root(),
                  let release = try? String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8)
                      .trimmingCharacters(in: .whitespacesAndNewlines) else { return nil }
            do {
                let ko = try await ModuleBuilder(cache: CacheLayout(), runner: Runner(), progress: {
                    FileHandle.standardError.write(Data("p2plab check: \($0)\n".utf8))
                }).build(
                    moduleSource: root.appendingPathComponent("kernel/module"), kernelBuildDir: "/lib/modules/\(release)/build")
                FileHandle.standardError.write(Data("p2plab check: built the test module for \(release): \(ko.path)\n".utf8))
                return ko.path
            } catch {
                FileHandle.standardError.write(Data("p2plab check: \(error)\n".utf8))
                return nil
            }
        }

        /// The exit_releases holder child: `p2plab-exit-holder` beside this executable.
        private static func holderCommand() -> [String]? {
            guard let me = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else { return nil }
            let holder = URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent("p2plab-exit-holder").path
            return FileManager.default.isExecutableFile(atPath: holder) ? [holder] : nil
        }
    }
}

/// Where KTAP lines go: stdout, one write per line (so a crash loses nothing already said), and
/// optionally DIR/results.ktap on the guest's results share.
final class KTAPSink: @unchecked Sendable {
    private let file: FileHandle?
    private let lock = NSLock()
    /// fsync after each line: on a local disk a crash would lose what is still in the page cache.
    /// The lab machine's results share is uncached 9p (p2plab mounts it so): each write is in the
    /// host's file when it returns, and an fsync would only make the host flush its disk, a round
    /// trip per line (some 400 per suite).
    private let synchronize: Bool
    /// Wait until each line has left a terminal on stdout (tcdrain) before the suite goes on. On a
    /// serial console the tty sends a line later, while printk writes at once: the next check's
    /// begin marker would otherwise land inside the line, in the capture `p2plab parse` reads. The
    /// lab machine reads its results share, not the console, so it does not wait.
    private let drain: Bool

    init(resultsDirectory: String?, synchronize: Bool = true, drainTerminal: Bool) throws {
        self.synchronize = synchronize
        drain = drainTerminal && isatty(STDOUT_FILENO) == 1
        guard let resultsDirectory else {
            file = nil
            return
        }
        try FileManager.default.createDirectory(atPath: resultsDirectory, withIntermediateDirectories: true)
        let path = resultsDirectory + "/results.ktap"
        guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
            throw ValidationError("cannot write \(path)")
        }
        file = handle
    }

    func line(_ text: String) {
        let data = Data((text + "\n").utf8)
        lock.lock()
        defer { lock.unlock() }
        FileHandle.standardOutput.write(data)
        if drain { tcdrain(STDOUT_FILENO) }
        file?.write(data)
        if synchronize { try? file?.synchronize() }
    }

    func close() {
        try? file?.close()
    }
}
