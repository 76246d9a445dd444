import ArgumentParser
import Catalog
import Foundation
import KTAP
import KernelTree
import LabSupport
import Machine

/// The VM and suite options shared by `test` and `bisect`.
struct LabOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Machine definition: a name in vm/ or a .json path.", valueName: "NAME"))
    var machine: String = MachineDefinition.defaultName

    @Option(help: "KVM, TCG, or auto: KVM only if a short probe boot works.")
    var accel: AccelChoice = .auto

    @Option(help: ArgumentHelp("Seconds the whole suite may run in the guest.", valueName: "SECONDS"))
    var timeout: Double = 900

    @Option(help: ArgumentHelp("Seconds the guest may take to reach init.", valueName: "SECONDS"))
    var bootTimeout: Double = 120

    @Option(help: ArgumentHelp("Seconds one check may run (the suite's watchdog).", valueName: "SECONDS"))
    var checkTimeout: Double = 120

    @Option(name: .customLong("check"), help: ArgumentHelp("Run only checks matching this glob (repeatable).", valueName: "GLOB"))
    var filters: [String] = []

    @Option(help: ArgumentHelp("Run directory (default: a new one under the cache's runs/).", valueName: "DIR"))
    var output: String?

    /// A shell command the guest runs before the suite (the end-to-end tests disarm kprobes with it).
    @Option(help: .hidden)
    var guestPrelude: String?
}

/// One kernel variant taken from source to verdict: build, module, boot, suite, results.
struct VariantResult: Sendable {
    var label: String
    var selection: PatchSelection
    var manifest: BuildManifest?
    var run: TestRun?
    var runDirectory: URL
    /// Why the variant could not be tested (build or infrastructure failure), if so.
    var problem: String?
    /// The problem's own exit code, when p2plab knows it.
    var problemExit: LabExit?
    /// How the boot ended (`exited`, `kernel-panic`, …), if it booted.
    var bootOutcome: String?
    var seconds: Double
    /// The earlier step whose results these are: it booted the same bzImage and test module.
    var reusedFrom: URL?

    /// 0 all passed, 1 a check failed or the kernel crashed, 125 could not test.
    var exitCode: Int32 {
        if problem != nil {
            // A missing tool, a bad tree or option, or a full disk is the environment's fault and the
            // same for every commit (2); anything else means this kernel could not be tested (125).
            let environment: Set<LabExit> = [.usage, .missingDependency, .notRoot, .badSource, .dirtyTree, .noSpace]
            return problemExit.map { environment.contains($0) } == true ? LabExit.usage.rawValue : LabExit.couldNotTest.rawValue
        }
        guard let run else { return LabExit.couldNotTest.rawValue }
        switch run.verdict {
        case .pass where nothingTested != nil: return LabExit.skipped.rawValue
        case .pass: return LabExit.success.rawValue
        case .skipped: return LabExit.skipped.rawValue
        case .noResults: return bootOutcome == "exited" ? LabExit.couldNotTest.rawValue : LabExit.failed.rawValue
        default: return LabExit.failed.rawValue
        }
    }

    /// The variant's patches do not apply (one of them needs a patch the selection leaves out).
    var doesNotApply: Bool { problemExit == .patchDoesNotApply }

    /// Status of a check by name (`pass`, `fail`, `crashed`, …), or nil when it did not run. A check
    /// with nested results (the kernel's selftests) is found by its own name, not its cases'.
    func status(of name: String) -> TestResult? {
        run?.tests.first { $0.name == name } ?? run?.leaves.first { $0.test.name == name }?.test
    }

    /// Why a run without failures still tested nothing worth a PASS: every check skipped, or the
    /// test module or the p2pmem provider was missing (the checks that need them skipped). Nil when
    /// the run tested what it should.
    var nothingTested: String? {
        guard let run else { return nil }
        if run.verdict == .skipped {
            return "every check was skipped" + (run.tests.first?.reason.map { " (the first: \($0))" } ?? "")
        }
        guard run.verdict == .pass else { return nil }
        for (key, what) in [("module", "the test module"), ("provider", "the p2pmem provider")] {
            if let value = run.metadata[key], value.hasPrefix("none") {
                return "\(what) is missing: \(value.dropFirst(4).trimmingCharacters(in: CharacterSet(charactersIn: " ()")))"
            }
        }
        return nil
    }
}


/// Runs variants end to end. Every step has a timeout; a failure becomes a result, never a hang.
struct Lab {
    let build: BuildOptions
    let lab: LabOptions
    let runner = Runner()

    var cache: CacheLayout { build.cacheLayout }

    /// The run directory for one variant of this invocation.
    func runDirectory(label: String, session: URL) -> URL {
        session.appendingPathComponent(label)
    }

    /// A fresh directory for this invocation's variants.
    func sessionDirectory(kind: String) throws -> URL {
        if let output = lab.output { return URL(fileURLWithPath: output).standardizedFileURL }
        let stamp = ISO8601DateFormatter().string(from: Date()).replacingOccurrences(of: ":", with: "")
        let dir = cache.runs.appendingPathComponent("\(kind)-\(stamp)")
        try FileManager.default.ensureDirectory(dir)
        return dir
    }

    /// Builds `selection`, boots it, runs the suite, and collects the results into `directory`.
    /// With `memory`, a kernel and module identical to an earlier step's are not booted again:
    /// that step's results are taken, and the result says whose they are.
    func runVariant(_ selection: PatchSelection, directory: URL, reproduce: [String], memory: StepMemory? = nil) async -> VariantResult {
        let start = Date()
        var result = VariantResult(label: selection.label, selection: selection, runDirectory: directory, seconds: 0)
        do {
            let root = try ProjectPaths.requireRoot()
            progressLine("[\(selection.label)] build")
            let manifest = try await KernelPipeline(options: build, runner: runner).build(selection: selection)
            result.manifest = manifest
            progressLine("[\(selection.label)] test module")
            let module = try await ModuleBuilder(cache: cache, runner: runner)
                .build(moduleSource: root.appendingPathComponent("kernel/module"), kernelBuildDir: manifest.objectDir)
            var stepKey: String?
            if let memory {
                let key = try await memory.key(bzImage: URL(fileURLWithPath: manifest.bzImage), module: module, lab: lab, runner: runner)
                if let earlier = memory.lookup(key), let run = try? RunLoader.load(runDirectory: URL(fileURLWithPath: earlier.directory)) {
                    let from = URL(fileURLWithPath: earlier.directory)
                    progressLine("[\(selection.label)] same bzImage and test module as \(from.lastPathComponent) (sha256 \(key.prefix(12))): its results stand, not booted again")
                    try FileManager.default.ensureDirectory(directory)
                    try "\(from.path)\n".write(to: directory.appendingPathComponent("reused-from"), atomically: true, encoding: .utf8)
                    result.run = run
                    result.bootOutcome = earlier.bootOutcome
                    result.reusedFrom = from
                    result.seconds = Date().timeIntervalSince(start)
                    return result
                }
                stepKey = key
            }
            let selftests = await buildSelftests(manifest, label: selection.label)
            let definition = try MachineDefinition.load(named: lab.machine, vmDirectory: root.appendingPathComponent("vm"))
            try FileManager.default.ensureDirectory(directory)
            let binary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().standardizedFileURL.path
            // The checks assert what the whole series does, known by its patches' effects.
            let reference = IdentifiedSeries(try PatchSeries.load(from: build.seriesURL(root: root))).reference
            var command = [
                binary, "check", "--module", module.path, "--timeout", String(Int(lab.checkTimeout)),
                "--expect", reference.tokens,
            ]
            switch selftests {
            case .success(let dir): command += ["--selftests", dir.path]
            case .failure(let problem): command += ["--selftests-problem", problem.description]
            }
            for filter in lab.filters { command += ["--filter", filter] }
            let guestCommand = (lab.guestPrelude.map { "\($0); " } ?? "") + shellQuote(command) + " --results \"$P2PLAB_RESULTS\""
            progressLine("[\(selection.label)] boot \(manifest.kernelRelease) on \(definition.name) (\(lab.accel.rawValue)), run the suite")
            let request = BootRequest(
                kernel: URL(fileURLWithPath: manifest.bzImage), definition: definition, accel: lab.accel,
                command: guestCommand, timeout: lab.timeout, bootTimeout: lab.bootTimeout, runDirectory: directory,
                environment: ["P2PLAB_ROOT": root.path],
                // The module lives in the cache (under /root by default), which the guest covers with tmpfs.
                sharedPaths: [module.deletingLastPathComponent().path, binary, root.path]
                    + ((try? selftests.get()).map { [$0.path] } ?? []),
                vmDirectory: root.appendingPathComponent("vm"), cache: cache)
            let label = selection.label
            let outcome = try await LabMachine.boot(request, runner: runner) { line in
                let text = line.text.trimmingCharacters(in: .whitespacesAndNewlines)
                if text.hasPrefix("ok ") || text.hasPrefix("not ok ") { progressLine("[\(label)] \(text)") }
            }
            result.bootOutcome = outcome.kind.name
            let console = (try? String(contentsOf: outcome.console, encoding: .utf8)) ?? ""
            let guestKTAP = directory.appendingPathComponent("guest/results.ktap")
            let names = SuiteCatalog.names
            let options = KTAPParser.Options(
                timedOut: outcome.kind == .commandTimeout, consoleLog: console, expectedNames: names,
                metadata: metadata(manifest: manifest, outcome: outcome, definition: definition))
            var parsed: TestRun
            if let text = try? String(contentsOf: guestKTAP, encoding: .utf8), !text.isEmpty {
                parsed = KTAPParser.parse(text, options: options)
            } else {
                parsed = KTAPParser.parse(console, options: options)
            }
            if outcome.kind == .qemuFailed || outcome.kind == .bootTimeout {
                result.problem = "\(outcome.kind.name): \(outcome.problem(limits: request.limits) ?? "the guest did not come up") (console: \(outcome.console.path))"
            }
            try RunLoader.write(parsed, into: directory)
            result.run = parsed
            if let memory, let stepKey, result.problem == nil {
                memory.remember(StepMemory.Entry(key: stepKey, directory: directory.path, bootOutcome: outcome.kind.name))
            }
        } catch let error as any LabError {
            result.problem = error.description
            result.problemExit = error.exitCode
            progressLine("[\(selection.label)] could not test: \(error.description.split(separator: "\n").first ?? "")")
        } catch {
            result.problem = "\(error)"
            progressLine("[\(selection.label)] could not test: \(error)")
        }
        try? writeReproduce(reproduce, into: directory)
        result.seconds = Date().timeIntervalSince(start)
        writeRecord(result, into: directory)
        return result
    }

    /// The kernel's mm selftests for this build (cached beside it), or why there are none: a
    /// failed selftest build makes their checks skip with the reason, not the whole run fail.
    func buildSelftests(_ manifest: BuildManifest, label: String) async -> Result<URL, BuildError> {
        progressLine("[\(label)] kernel selftests (gup_longterm, gup_test)")
        do {
            return .success(try await SelftestBuilder(cache: cache, runner: runner).build(sourceDir: manifest.sourceDir, head: manifest.head))
        } catch let error as BuildError {
            progressLine("[\(label)] \(error.description.split(separator: "\n").first ?? "")")
            return .failure(error)
        } catch {
            return .failure(.selftestBuildFailed(log: manifest.sourceDir, errors: "\(error)"))
        }
    }

    func metadata(manifest: BuildManifest, outcome: BootOutcome, definition: MachineDefinition) -> RunMetadata {
        var m: RunMetadata = [:]
        m[RunMetadata.Keys.kernel] = "\(manifest.kernelRelease) \(manifest.source) \(manifest.variant) (\(manifest.head.prefix(12)))"
        m[RunMetadata.Keys.seriesCommits] = manifest.patches.map { "\($0.commit?.prefix(12) ?? "present") \($0.subject)" }.joined(separator: "; ")
        m[RunMetadata.Keys.configHash] = manifest.configHash
        m[RunMetadata.Keys.machine] = definition.name
        m[RunMetadata.Keys.accel] = "\(outcome.accel) (\(outcome.accelNote))"
        m[RunMetadata.Keys.qemuCommandLine] = (try? String(contentsOf: outcome.run.qemuCommandLine, encoding: .utf8))?
            .split(separator: "\n").last.map(String.init) ?? ""
        m[RunMetadata.Keys.p2plabVersion] = p2plabVersion
        m["boot_outcome"] = outcome.kind.name
        m["bzImage"] = manifest.bzImage
        return m
    }

    /// variant.json and the applied patches: what `report --merge` and `--format kcidb` read later,
    /// possibly on another machine.
    func writeRecord(_ result: VariantResult, into directory: URL) {
        let series = ProjectPaths.root().flatMap { try? PatchSeries.load(from: build.seriesURL(root: $0)) }
        let record = RunRecord(result, series: series)
        do {
            try record.write(into: directory)
            if let series { try RunRecord.writeSeries(series, into: directory) }
        } catch {
            progressLine("[\(result.label)] cannot record the variant in \(directory.path): \(error)")
        }
    }

    /// `reproduce.sh`: the one command that reruns this run.
    func writeReproduce(_ arguments: [String], into directory: URL) throws {
        try FileManager.default.ensureDirectory(directory)
        let root = ProjectPaths.root()?.path ?? "."
        let script = "#!/bin/sh\n# Reruns this p2plab run.\ncd \(shellQuote(root)) && exec ./p2plab \(shellQuote(arguments))\n"
        let url = directory.appendingPathComponent("reproduce.sh")
        try script.write(to: url, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: url.path)
    }
}

/// What earlier steps of one bisection booted and where their results are, in `step-memory.json`
/// of the bisection's directory (`git bisect run` starts one process per step, so it is a file).
///
/// The key is the sha256 of the bzImage and of the test module plus everything else that decides
/// a verdict (chosen checks, machine, accelerator, timeouts, the p2plab binary): builds are
/// reproducible (`KernelBuilder` fixes the build timestamp, number, user and host), so a commit
/// that changes no built file gives the same bzImage, and its verdict cannot differ.
struct StepMemory: Sendable {
    let file: URL

    struct Entry: Codable, Sendable, Equatable {
        var key: String
        var directory: String
        var bootOutcome: String?
    }

    init(directory: URL) {
        file = directory.appendingPathComponent("step-memory.json")
    }

    func entries() -> [Entry] {
        guard let data = FileManager.default.contents(atPath: file.path) else { return [] }
        return (try? JSONDecoder().decode([Entry].self, from: data)) ?? []
    }

    func lookup(_ key: String) -> Entry? {
        entries().first { $0.key == key }
    }

    func remember(_ entry: Entry) {
        var all = entries().filter { $0.key != entry.key }
        all.append(entry)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try? FileManager.default.ensureDirectory(file.deletingLastPathComponent())
        try? encoder.encode(all).write(to: file, options: .atomic)
    }

    /// The key of booting `bzImage` with `module` under `lab`'s options.
    func key(bzImage: URL, module: URL, lab: LabOptions, runner: Runner) async throws -> String {
        let sums = try await runner.checked(Command(["sha256sum", bzImage.path, module.path]), timeout: 120).standardOutput
            .split(separator: "\n").map { $0.split(separator: " ").first.map(String.init) ?? "" }
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path
        let attributes = (try? FileManager.default.attributesOfItem(atPath: binary)) ?? [:]
        let binaryIdentity = "\((attributes[.size] as? Int) ?? 0)-\(((attributes[.modificationDate] as? Date)?.timeIntervalSince1970) ?? 0)"
        return Self.key(sums: sums, lab: lab, binaryIdentity: binaryIdentity)
    }

    static func key(sums: [String], lab: LabOptions, binaryIdentity: String) -> String {
        let parts = sums + [lab.machine, lab.accel.rawValue, String(lab.timeout), String(lab.checkTimeout), binaryIdentity] + lab.filters.sorted()
        return sums.joined(separator: "-").prefix(24) + "-" + fnv1a64Hex(parts.joined(separator: "\u{0}"))
    }
}

/// The version p2plab reports in results: the checkout's commit when it is a git checkout.
let p2plabVersion: String = {
    guard let root = ProjectPaths.root() else { return "unknown" }
    let head = root.appendingPathComponent(".git/HEAD")
    guard let ref = try? String(contentsOf: head, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) else { return "unknown" }
    if ref.hasPrefix("ref: ") {
        let path = root.appendingPathComponent(".git/" + ref.dropFirst(5))
        if let sha = try? String(contentsOf: path, encoding: .utf8) { return String(sha.prefix(12)) }
        return String(ref.dropFirst(5))
    }
    return String(ref.prefix(12))
}()
