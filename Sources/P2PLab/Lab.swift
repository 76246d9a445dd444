import ArgumentParser
import Catalog
import Foundation
import KTAP
import KernelTree
import LabPipeline
import LabSupport
import Machine

/// The VM and suite options shared by `test` and `bisect`.
struct LabOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Machine definition: a name in vm/ or a .json path.", valueName: "NAME"))
    var machine: String = MachineDefinition.defaultName

    @Option(help: "KVM, TCG, or auto: KVM only if a short probe boot works.")
    var accel: AccelChoice = .auto

    @Option(help: ArgumentHelp("Seconds the whole suite may run in the guest.", valueName: "SECONDS"))
    var timeout: Double = LabLimits.standard.suite

    @Option(help: ArgumentHelp("Seconds the guest may take to reach init.", valueName: "SECONDS"))
    var bootTimeout: Double = LabLimits.standard.boot

    @Option(help: ArgumentHelp("Seconds one check may run (the suite's watchdog).", valueName: "SECONDS"))
    var checkTimeout: Double = LabLimits.standard.check

    @Option(name: .customLong("check"), help: ArgumentHelp(
        "Run only checks matching this glob (repeatable, or comma-separated); a control (control.oops, control.hang, control.hang_brief) runs only when named exactly.",
        valueName: "GLOB"))
    var filters: [String] = []

    @Flag(help: "After a check crashes or hangs the kernel, stop: the checks left are NOT RUN (default: boot again and go on with them).")
    var stopOnCrash = false

    @Option(help: ArgumentHelp("Boots after the first when checks crash the kernel, before the run stops (default \(LabLimits.standard.reboots); with --panic-on-warn, one per check).", valueName: "N"))
    var maxReboots: Int?

    @Flag(help: "Boot with panic_on_warn=1: a WARNING panics the kernel, and the check that made it is CRASHED.")
    var panicOnWarn = false

    /// The check globs, comma-separated ones split.
    var checks: [String] {
        filters.flatMap { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }.filter { !$0.isEmpty }
    }

    @Option(help: ArgumentHelp("Run directory (default: a new one under the cache's runs/).", valueName: "DIR"))
    var output: String?

    /// A shell command the guest runs before the suite (the end-to-end tests disarm kprobes with it).
    @Option(help: .hidden)
    var guestPrelude: String?

    func validate() throws {
        for (name, value) in [("--timeout", timeout), ("--boot-timeout", bootTimeout), ("--check-timeout", checkTimeout)] where value <= 0 {
            throw ValidationError("\(name) must be positive, not \(value)")
        }
        if let maxReboots, maxReboots < 0 { throw ValidationError("--max-reboots must be 0 or more, not \(maxReboots)") }
        if !filters.isEmpty, SuiteCatalog.select(filters: checks).isEmpty {
            throw ValidationError("no check matches --check \(checks.joined(separator: ",")); p2plab check --list lists them")
        }
    }

    /// The lab's limits with the ones these options set.
    var limits: LabLimits {
        var limits = LabLimits.standard
        limits.suite = timeout
        limits.boot = bootTimeout
        limits.check = checkTimeout
        if let maxReboots {
            limits.reboots = maxReboots
        } else if panicOnWarn {
            // Every check that WARNs crashes on purpose: one boot each must not end the run early.
            limits.reboots = max(limits.reboots, SuiteCatalog.select(filters: checks).count)
        }
        return limits
    }
}

/// The commands' side of the variant pipeline: the options turned into typed inputs, once.
struct Lab {
    let build: BuildOptions
    let lab: LabOptions
    let pipeline: VariantPipeline
    let recipe: KernelRecipe
    var suite: SuitePlan

    init(build: BuildOptions, lab: LabOptions) throws {
        self.build = build
        self.lab = lab
        let setup = try LabSetup.forCommands(cache: build.cacheLayout, limits: lab.limits)
        pipeline = VariantPipeline(setup: setup, runner: build.runner, progress: progressLine)
        recipe = try build.recipe(setup)
        series = try PatchSeries.load(from: recipe.series)
        // The checks assert what the whole series does, known by its patches' effects.
        suite = SuitePlan(
            machine: try MachineDefinition.load(named: lab.machine, vmDirectory: setup.vmDirectory),
            accel: lab.accel, checks: lab.checks, expectedNames: SuiteCatalog.select(filters: lab.checks).map(\.name),
            expect: IdentifiedSeries(series).reference.tokens)
        suite.prelude = lab.guestPrelude
        suite.needsSelftests = SuiteCatalog.needsSelftests(filters: lab.checks)
        suite.stopOnCrash = lab.stopOnCrash
        suite.panicOnWarn = lab.panicOnWarn
    }

    /// The series the variants select from.
    let series: PatchSeries

    var cache: CacheLayout { pipeline.setup.cache }

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
    func runVariant(_ selection: PatchSelection, directory: URL, reproduce: [String], memory: StepMemory? = nil) async -> VariantResult {
        let result = await pipeline.run(recipe, selection, suite: suite, directory: directory, memory: memory)
        try? writeReproduce(reproduce, into: directory)
        writeRecord(result, into: directory)
        return result
    }

    /// variant.json and the applied patches: what `report --merge` and `--format kcidb` read later,
    /// possibly on another machine.
    func writeRecord(_ result: VariantResult, into directory: URL) {
        let record = RunRecord(result, series: series)
        do {
            try record.write(into: directory)
            try RunRecord.writeSeries(series, into: directory)
        } catch {
            progressLine("[\(result.label)] cannot record the variant in \(directory.path): \(error)")
        }
    }

    /// `reproduce.sh`: the one command that reruns this run.
    func writeReproduce(_ arguments: [String], into directory: URL) throws {
        try FileManager.default.ensureDirectory(directory)
        let script = "#!/bin/sh\n# Reruns this p2plab run.\ncd \(shellQuote(pipeline.setup.root.path)) && exec ./p2plab \(shellQuote(arguments))\n"
        let url = directory.appendingPathComponent("reproduce.sh")
        try script.write(to: url, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: url.path)
    }
}

extension LabSetup {
    /// The setup of this checkout and executable: the guest runs `p2plab-guest` from beside this
    /// binary (this binary itself when it is not there, as in a build of the host product alone).
    static func forCommands(cache: CacheLayout, limits: LabLimits = .standard) throws -> LabSetup {
        let guest = ProjectPaths.guestExecutable
        return LabSetup(
            root: try ProjectPaths.requireRoot(), cache: cache, limits: limits,
            guestExecutable: FileManager.default.isExecutableFile(atPath: guest.path) ? guest : ProjectPaths.executable)
    }
}
