import Catalog
import ArgumentParser
import Catalog
import Foundation
import KernelTree
import LabPipeline
import LabSupport
import Machine

extension P2PLabCommand {
    /// Measure what users of the lab wait for, and what the series changes in the kernel.
    struct Bench: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "bench",
            abstract: "Measure the lab (builds, boots, bisect steps) and the kernel (pins, MR registration, RDMA WRITE), series vs baseline.",
            discussion: """
                Each measurement runs --repeat times and reports min/median/max next to what it is \
                compared with (a figure without a baseline is listed as not reported, with the reason). \
                Writes bench/results/<date>-<host>.json in the checkout and regenerates BENCHMARKS.md \
                from every recorded run. Kernel figures are measured in the guest (p2plab bench-guest) \
                on the cached baseline and series kernels; the series switch and the bisect step work \
                in the bench's own checkout and object directory under <cache>/bench, and cold builds \
                in scratch object directories there, so the lab's cache is only read. Cold builds take \
                10-20 minutes each on 2 cores and should run on a quiet machine.
                  p2plab bench --skip lab.cold_build          everything but the cold builds
                  p2plab bench --only 'kernel.*' --repeat 3   the guest measurements
                  p2plab bench --only lab.cold_build          the cold-build comparison alone
                  p2plab bench --render                       regenerate BENCHMARKS.md
                """)

        @Option(name: .customLong("repeat"), help: ArgumentHelp("Repetitions of each measurement.", valueName: "N"))
        var repetitions: Int = 5

        @Option(help: ArgumentHelp("Repetitions of each cold build (two full kernel builds per repetition).", valueName: "N"))
        var coldRepeat: Int = 1

        @Option(name: .customLong("only"), help: ArgumentHelp("Run only measurements matching this glob (repeatable), e.g. 'kernel.*'.", valueName: "GLOB"))
        var only: [String] = []

        @Option(name: .customLong("skip"), help: ArgumentHelp("Leave out measurements matching this glob (repeatable).", valueName: "GLOB"))
        var skip: [String] = []

        @Flag(help: "List the measurements and exit.")
        var list = false

        @Flag(help: "Only regenerate BENCHMARKS.md from bench/results/*.json.")
        var render = false

        @Option(help: ArgumentHelp("Machine definition: a name in vm/ or a .json path.", valueName: "NAME"))
        var machine: String = MachineDefinition.defaultName

        @Option(help: "Cache directory (default: $P2PLAB_CACHE or ~/.cache/p2plab); the bench works in its bench/ subdirectory.")
        var cache: String?

        @Option(help: "Parallel make jobs (default: the number of CPUs).")
        var jobs: Int?

        @Option(help: ArgumentHelp("Seconds one guest run may take.", valueName: "SECONDS"))
        var timeout: Double = LabLimits.standard.benchGuest

        @Option(help: ArgumentHelp(
            "Another built p2plab checkout to compare with in the warm cycles: its boots (its own p2plab boot, machine, init and guest binary; the same kernel, or one built with its lab config when that differs) alternate with this checkout's, and each cycle figure gets a ratio to it.",
            valueName: "DIR"))
        var against: String?

        func validate() throws {
            if repetitions < 1 { throw ValidationError("--repeat takes 1 or more, got \(repetitions)") }
            if coldRepeat < 1 { throw ValidationError("--cold-repeat takes 1 or more, got \(coldRepeat)") }
            if let jobs, jobs < 1 { throw ValidationError("--jobs takes 1 or more, got \(jobs)") }
            if let against {
                for name in ["p2plab", "p2plab-guest"] where !FileManager.default.isExecutableFile(atPath: AgainstCheckout(against).binary(name)) {
                    throw ValidationError("--against \(against): no .build/debug/\(name) there; run swift build in it first")
                }
            }
            if !list && !render && chosen.isEmpty {
                throw ValidationError("no measurement matches --only \(only.joined(separator: " ")) --skip \(skip.joined(separator: " ")); see --list")
            }
        }

        var chosen: [BenchMeasurement] { BenchMeasurement.select(only: only, skip: skip, matches: globMatches) }

        func run() async throws {
            if list {
                print(ColumnTable(rows: BenchMeasurement.allCases.map { [$0.rawValue, $0.summary] }).text)
                return
            }
            let root = try ProjectPaths.requireRoot()
            if render {
                let path = try BenchResultsStore(root: root).renderMarkdown()
                print("wrote \(path.path)")
                return
            }
            var session = try BenchSession(command: self, root: root)
            let run = try await session.run(chosen)
            let store = BenchResultsStore(root: root)
            let file = try store.write(run)
            let markdown = try store.renderMarkdown()
            print(BenchRenderer.figureTable(run.figures))
            for item in run.notReported { print("not reported: \(item.measurement) \(item.title): \(item.reason)") }
            print("results: \(file.path)")
            print("report: \(markdown.path)")
        }
    }
}

/// Where runs are recorded: `bench/results/*.json` and `BENCHMARKS.md` in the checkout.
struct BenchResultsStore {
    let root: URL

    var directory: URL { root.appendingPathComponent("bench/results") }
    var markdown: URL { root.appendingPathComponent("BENCHMARKS.md") }

    func write(_ run: BenchRun) throws -> URL {
        try FileManager.default.ensureDirectory(directory)
        let name = BenchRun.fileName(date: ISO8601DateFormatter().date(from: run.date) ?? Date(), host: run.machine.host)
        // Two runs started in the same minute each keep their file: the second is NAME-2.json.
        var url = directory.appendingPathComponent(name)
        var n = 2
        while FileManager.default.fileExists(atPath: url.path) {
            url = directory.appendingPathComponent(name.replacingOccurrences(of: ".json", with: "-\(n).json"))
            n += 1
        }
        try run.encoded().write(to: url, options: .withoutOverwriting)
        return url
    }

    /// Every readable run, by file name; an unreadable file is named on stderr and left out.
    func load() -> [(name: String, run: BenchRun)] {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []).filter { $0.hasSuffix(".json") }.sorted()
        return names.compactMap { name in
            guard let data = FileManager.default.contents(atPath: directory.appendingPathComponent(name).path),
                  let run = try? JSONDecoder().decode(BenchRun.self, from: data) else {
                progressLine("bench: \(name) is not a p2plab bench result; left out of BENCHMARKS.md")
                return nil
            }
            return (name, run)
        }
    }

    func renderMarkdown() throws -> URL {
        try BenchRenderer.markdown(runs: load()).write(to: markdown, atomically: true, encoding: .utf8)
        return markdown
    }
}

/// Seconds since `start` on the monotonic clock.
private func elapsed(since start: ContinuousClock.Instant) -> Double {
    let d = start.duration(to: .now)
    return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}

/// The first line of a file, trimmed.
private func firstLine(_ path: String) -> String {
    ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? "?"
}

/// One `p2plab bench` invocation: measures, then assembles the run.
struct BenchSession {
    let command: P2PLabCommand.Bench
    let root: URL
    let mainCache: CacheLayout
    /// The bench's own corner of the cache: checkout, object directories, modules, runs.
    let benchCache: CacheLayout
    let definition: MachineDefinition
    let runner = Runner()
    /// The pipeline on the lab's cache (read: cached kernels) and on the bench's own (built, timed).
    let mainPipeline: VariantPipeline
    let benchPipeline: VariantPipeline
    let session: URL
    let start = Date()
    let loadAtStart = BenchSession.loadAverage()

    var figures: [BenchFigure] = []
    var notReported: [BenchNotReported] = []
    var raw: [BenchRaw] = []
    var accelNote = "tcg as asked"
    var kvmWorks = false
    var seriesKernel: BuiltKernel?
    /// The series kernel `--against` boots: built with that checkout's lab config, which is this
    /// one's kernel unless the config differs.
    var againstKernel: BuiltKernel?
    /// Whether `againstKernel` is a kernel of its own (the other checkout's lab config differs).
    var againstHasItsOwnKernel = false
    var baselineKernel: BuiltKernel?
    var seriesBuild: BuildManifest? { seriesKernel?.manifest }
    var baselineBuild: BuildManifest? { baselineKernel?.manifest }

    init(command: P2PLabCommand.Bench, root: URL) throws {
        self.command = command
        self.root = root
        mainCache = CacheLayout(root: command.cache.map { URL(fileURLWithPath: $0) })
        benchCache = CacheLayout(root: mainCache.root.appendingPathComponent("bench"))
        definition = try MachineDefinition.load(named: command.machine, vmDirectory: root.appendingPathComponent("vm"))
        var limits = LabLimits.standard
        limits.suite = command.timeout
        let mainSetup = try LabSetup.forCommands(cache: mainCache, limits: limits)
        var benchSetup = mainSetup
        benchSetup.cache = benchCache
        mainPipeline = VariantPipeline(setup: mainSetup, runner: runner, progress: progressLine)
        benchPipeline = VariantPipeline(setup: benchSetup, runner: runner, progress: progressLine)
        let stamp = ISO8601DateFormatter().string(from: Date()).replacingOccurrences(of: ":", with: "")
        session = benchCache.runs.appendingPathComponent("bench-\(stamp)")
        try FileManager.default.ensureDirectory(session)
    }

    /// User + system seconds of every waited-for child process so far (getrusage RUSAGE_CHILDREN):
    /// the difference around a build is its CPU time, since the bench runs one build at a time.
    static func childrenCPUSeconds() -> Double {
        var usage = rusage()
        guard getrusage(RUSAGE_CHILDREN.rawValue, &usage) == 0 else { return .nan }
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }

    static func loadAverage() -> String {
        firstLine("/proc/loadavg").split(separator: " ").prefix(3).joined(separator: " ")
    }

    /// What the bench builds: the lab's Debian source, this checkout's series and config fragment.
    var recipe: KernelRecipe { recipe(fragment: benchPipeline.setup.labFragment) }

    /// The same with another lab config fragment (another checkout's, for `--against`).
    func recipe(fragment: URL) -> KernelRecipe {
        KernelRecipe(source: .defaultDebian, series: benchPipeline.setup.defaultSeries, fragments: [fragment],
                     jobs: command.jobs ?? ProcessInfo.processInfo.activeProcessorCount)
    }

    mutating func add(_ results: [Result<BenchFigure, BenchNotReported>]) {
        for result in results {
            switch result {
            case .success(let figure): figures.append(figure)
            case .failure(let missing): notReported.append(missing)
            }
        }
    }

    mutating func record(_ measurement: BenchMeasurement, _ variant: String, _ sample: GuestMeasurement) {
        raw.append(BenchRaw(measurement: measurement.rawValue, variant: variant, sample: sample))
    }

    // MARK: - the run

    mutating func run(_ chosen: [BenchMeasurement]) async throws -> BenchRun {
        let cold = chosen.contains(.coldBuild) ? ", cold builds \(command.coldRepeat)" : ""
        progressLine("bench: \(chosen.map(\.rawValue).joined(separator: ", ")); \(command.repetitions) repetition(s)\(cold); work in \(session.path)")
        let guests = chosen.filter(\.isGuest)
        let needsKernels = !guests.isEmpty || chosen.contains(.warmCycleTrue) || chosen.contains(.warmCycleSuite) || chosen.contains(.vngAnchor)
        if needsKernels {
            seriesKernel = try await kernel(.full)
            if let against = command.against, chosen.contains(.warmCycleTrue) || chosen.contains(.warmCycleSuite) {
                try await prepareAgainstKernel(AgainstCheckout(against))
            }
            if !guests.isEmpty { baselineKernel = try await kernel(.baseline) }
            if let seriesBuild {
                let decision = try await AccelProbe.decide(
                    .auto, kernel: URL(fileURLWithPath: seriesBuild.bzImage), cpu: definition.cpu, qemu: "qemu-system-x86_64",
                    cache: mainCache, workDirectory: session)
                accelNote = decision.note
                kvmWorks = decision.accel == .kvm
            }
        }
        if !guests.isEmpty { await guestMeasurements(guests) }
        for m in [BenchMeasurement.warmCycleTrue, .warmCycleSuite] where chosen.contains(m) {
            await warmCycles(m)
        }
        if chosen.contains(.vngAnchor) { await vngAnchor() }
        if chosen.contains(.seriesSwitch) || chosen.contains(.bisectStep) {
            do {
                try await prepareBenchSource()
                if chosen.contains(.seriesSwitch) { try await seriesSwitch() }
                if chosen.contains(.bisectStep) { try await bisectStep() }
            } catch {
                for m in [BenchMeasurement.seriesSwitch, .bisectStep] where chosen.contains(m) && !figures.contains(where: { $0.measurement == m.rawValue }) {
                    notReported.append(BenchNotReported(measurement: m.rawValue, title: m.summary, reason: "the bench checkout could not be built: \(error)"))
                }
            }
        }
        if chosen.contains(.coldBuild) { await coldBuilds() }
        return await assemble(chosen)
    }

    func assemble(_ chosen: [BenchMeasurement]) async -> BenchRun {
        let qemu = (try? await runner.capture(Command(["qemu-system-x86_64", "--version"]), timeout: LabLimits.standard.query).standardOutput)?
            .split(separator: "\n").first.map(String.init) ?? "unknown"
        let perftestPackage = (try? await runner.capture(Command(["dpkg-query", "-W", "-f", "${Version}", "perftest"]), timeout: LabLimits.standard.query))
            .flatMap { $0.succeeded ? $0.standardOutput : nil }
        let cpu = ((try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? "").split(separator: "\n")
            .first { $0.hasPrefix("model name") }.map { $0.split(separator: ":", maxSplits: 1).last!.trimmingCharacters(in: .whitespaces) } ?? "unknown"
        let builds = [seriesBuild, baselineBuild].compactMap { $0 }
        let kernel = builds.isEmpty ? "not booted" : (builds.first!.kernelRelease + " from " + builds.first!.source + ": "
            + builds.map { "\($0.variant) \($0.head.prefix(12))" }.joined(separator: ", ") + "; config \(builds.first!.configHash)")
        let gcc = (try? await runner.capture(Command(["gcc", "--version"]), timeout: LabLimits.standard.query).standardOutput)?
            .split(separator: "\n").first.map(String.init) ?? "unknown"
        let compiler = builds.first?.compiler ?? gcc
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "host"
        let machine = BenchMachine(
            host: host, cores: ProcessInfo.processInfo.activeProcessorCount, cpu: cpu,
            memoryMiB: Int(ProcessInfo.processInfo.physicalMemory >> 20), accel: "tcg", accelNote: accelNote,
            hostKernel: firstLine("/proc/sys/kernel/osrelease"), loadAtStart: loadAtStart, loadAtEnd: Self.loadAverage())
        let versions = BenchVersions(
            kernel: kernel, qemu: qemu, p2plab: ProjectPaths.version, compiler: compiler,
            perftest: perftestPackage.map { "perftest \($0)" } ?? "not installed")
        return BenchRun(
            date: ISO8601DateFormatter().string(from: start), command: shellQuote(["p2plab"] + CommandLine.arguments.dropFirst()),
            repetitions: command.repetitions, machine: machine, versions: versions, measured: chosen.map(\.rawValue),
            figures: figures, notReported: notReported, raw: raw)
    }

    // MARK: - kernels

    /// The cached build of `selection` (with its test module) for this checkout's series and config
    /// fragment, as KernelTree finds it: the lab's cache first (read only: its checkout is never
    /// switched), then the bench's own; else built in the bench's own checkout.
    func kernel(_ selection: PatchSelection, recipe: KernelRecipe? = nil) async throws -> BuiltKernel {
        let recipe = recipe ?? self.recipe
        for pipeline in [mainPipeline, benchPipeline] {
            if let found = try await pipeline.kernels.cached(recipe, selection) {
                progressLine("bench: \(selection.label) kernel: \(found.bzImage)")
                // The module goes into the bench's cache, built against the kernel's object directory.
                return try await benchPipeline.kernels.module(for: found, moduleSource: benchPipeline.setup.moduleSource)
            }
        }
        progressLine("bench: no cached \(selection.label) kernel; building it in \(benchCache.root.path)")
        try await prepareBenchSource()
        return try await benchPipeline.kernel(recipe, selection)
    }

    /// The kernel `--against` boots: this checkout's series kernel when the other checkout's lab
    /// config says the same, else one built with its config (found in the caches or built in the
    /// bench's), so a change of the lab config is measured side by side as well.
    mutating func prepareAgainstKernel(_ other: AgainstCheckout) async throws {
        againstKernel = seriesKernel
        let theirs = other.root.appendingPathComponent("kernel/config/p2plab.config")
        guard let their = FileManager.default.contents(atPath: theirs.path) else {
            progressLine("bench: --against: \(theirs.path) is missing; it boots this checkout's kernel")
            return
        }
        guard their != FileManager.default.contents(atPath: benchPipeline.setup.labFragment.path) else { return }
        progressLine("bench: --against: its lab config differs from this checkout's; it boots a series kernel built with its config")
        againstKernel = try await kernel(.full, recipe: recipe(fragment: theirs))
        againstHasItsOwnKernel = true
    }

    /// The lab's Debian source package and its cache id (`debian-6.12.117-1_deb12u1`), if prepared.
    func debianSource() async throws -> (deb: String, id: String)? {
        guard let source = try await mainPipeline.kernels.sources.preparedDebian() else { return nil }
        guard let deb = ((try? FileManager.default.contentsOfDirectory(atPath: mainCache.downloads.path)) ?? [])
            .filter({ $0.hasPrefix("linux-source-6.12_") && $0.hasSuffix(".deb") }).sorted().last else { return nil }
        return (deb, source.id)
    }

    /// The invocation of the suite in the guest on `kernel`, with the machine's host access: a boot
    /// through another checkout's `p2plab boot` (`--against`) answers the hot-unplug check's
    /// requests too, so both sides run the same checks.
    func suiteInvocation(_ kernel: BuiltKernel) -> GuestInvocation {
        var invocation = GuestInvocation(job: .suite(checks: []), limits: benchPipeline.setup.limits, module: kernel.module?.path,
                                         kernel: VariantPipeline.guestKernel(kernel.manifest))
        invocation.host = definition.hostAccess
        return invocation
    }

    // MARK: - kernel behaviour, in the guest

    /// Boots the baseline and the series alternately, one sample per boot and `--repeat` rounds,
    /// so boot-to-boot variation and a host getting busier mid-run fall on both kernels alike.
    mutating func guestMeasurements(_ chosen: [BenchMeasurement]) async {
        let builds = [baselineKernel, seriesKernel].compactMap { $0 }
        var reports: [String: GuestBenchReport] = [:]
        var problems: [String: String] = [:]
        for round in 0..<command.repetitions {
            for kernel in builds where problems[kernel.manifest.variant] == nil {
                let label = kernel.manifest.variant
                do {
                    let invocation = GuestInvocation(
                        job: .bench(only: chosen.map(\.rawValue), repetitions: 1), limits: benchPipeline.setup.limits,
                        module: kernel.module?.path, kernel: VariantPipeline.guestKernel(kernel.manifest))
                    progressLine("bench: [\(label)] round \(round + 1)/\(command.repetitions): boot \(kernel.manifest.kernelRelease), measure \(chosen.map(\.rawValue).joined(separator: ", "))")
                    let directory = session.appendingPathComponent("guest-\(label)-\(round)")
                    let outcome = try await benchPipeline.boot(kernel, machine: definition, accel: .tcg, job: .invocation(invocation),
                                                               directory: directory, timeout: command.timeout)
                    let file = outcome.run.guest.appendingPathComponent(GuestBenchReport.fileName)
                    guard let data = FileManager.default.contents(atPath: file.path),
                          let report = try? JSONDecoder().decode(GuestBenchReport.self, from: data) else {
                        problems[label] = "the \(label) guest wrote no \(GuestBenchReport.fileName) (\(outcome.kind.name), console \(outcome.console.path))"
                        continue
                    }
                    reports[label] = reports[label].map { $0.merging(report) } ?? report
                    if !outcome.findings.isEmpty {
                        // Expected on the baseline: refusing LONGTERM|P2PDMA WARNs in is_valid_gup_args().
                        progressLine("bench: [\(label)] the console shows \(outcome.findings.count) alarming line(s), first: \(outcome.findings[0].text)")
                    }
                } catch {
                    problems[label] = "the \(label) kernel could not be measured: \(error)"
                }
                if let problem = problems[label] { progressLine("bench: \(problem)") }
            }
        }
        for (label, report) in reports.sorted(by: { $0.key < $1.key }) {
            for m in report.measurements { record(Self.group(of: m.key), label, m) }
        }
        func side(_ label: String) -> KernelFigures.Side {
            KernelFigures.Side(label: label, report: problems[label] == nil ? reports[label] : nil,
                               problem: problems[label] ?? (reports[label] == nil ? "no \(label) kernel" : nil))
        }
        add(KernelFigures.all(chosen, baseline: side("baseline"), series: side("series")))
    }

    /// The measurement a guest key belongs to (`pin.…`, `regmr.…`, `rdma_write_bw.…`).
    static func group(of key: String) -> BenchMeasurement {
        BenchMeasurement(BenchGroup.of(key: key) ?? .rdmaWriteBandwidth)
    }

    // MARK: - warm cycles

    /// Times `measurement`'s boots under TCG (after one untimed boot that warms the page cache),
    /// and under KVM when the probe says it works.
    mutating func warmCycles(_ measurement: BenchMeasurement) async {
        guard let kernel = seriesKernel else {
            add([LabFigures.warmCycle(measurement, accel: "TCG", samples: [], problem: "no series kernel", note: nil)])
            return
        }
        var tcg: (samples: [Double], problem: String?) = ([], nil)
        for accel in kvmWorks ? [AccelChoice.tcg, .kvm] : [.tcg] {
            var samples: [Double] = []
            var bootSeconds: [Double] = []
            var suiteFailures = 0
            var problem: String?
            // The other checkout's boots, one after each of ours (TCG only: that is where it is compared).
            let other = accel == .tcg ? command.against.map(AgainstCheckout.init) : nil
            var otherSamples: [Double] = []
            var otherProblem: String?
            // A suite that ran to its end took the time a user waits even if a check failed
            // (exit 1); a crash, a timeout or a suite that could not start is no sample.
            let finished = measurement == .warmCycleTrue ? [Int32(0)] : [0, 1, LabExit.skipped.rawValue]
            do {
                let job: GuestJob = measurement == .warmCycleTrue ? .shell("true") : .invocation(suiteInvocation(kernel))
                for index in 0...command.repetitions {
                    let directory = session.appendingPathComponent("\(measurement.rawValue)-\(accel.rawValue)-\(index)")
                    // The other checkout's boot of this pair, before ours in every other pair: a
                    // boot that gains or loses from coming second (the one before it left the page
                    // cache, QEMU's files, the host's CPUs in some state) does so on both sides alike.
                    var otherSeconds: Double?
                    func bootOther() async {
                        guard let other, otherProblem == nil, let theirKernel = againstKernel else { return }
                        let otherDirectory = session.appendingPathComponent("\(measurement.rawValue)-against-\(index)")
                        do {
                            var selftests: URL?
                            if case .success(let dir)? = theirKernel.selftests { selftests = dir }
                            otherSeconds = try await other.boot(measurement, bzImage: theirKernel.manifest.bzImage, module: theirKernel.module,
                                                                selftests: selftests, invocation: suiteInvocation(theirKernel),
                                                                finished: finished, directory: otherDirectory, limits: benchPipeline.setup.limits, runner: runner)
                        } catch {
                            otherProblem = "\(error)"
                        }
                    }
                    let otherFirst = index % 2 == 1
                    if otherFirst { await bootOther() }
                    let outcome = try await benchPipeline.boot(kernel, machine: definition, accel: accel, job: job, directory: directory,
                                                               timeout: benchPipeline.setup.limits.suite)
                    guard case .exited(let status) = outcome.kind, finished.contains(status) else {
                        problem = "cycle \(index) ended \(outcome.kind.name) (exit \(outcome.exitCode)); see \(directory.path)"
                        break
                    }
                    if status != 0 && index > 0 { suiteFailures += 1 }
                    if !otherFirst { await bootOther() }
                    var line = String(format: "bench: %@ %@ cycle %d: %.2f s", measurement.rawValue, accel.rawValue, index, outcome.seconds)
                    if let seconds = otherSeconds {
                        if index > 0 { otherSamples.append(seconds) }
                        line += String(format: "; --against %.2f s%@", seconds, otherFirst ? " (booted first)" : "")
                    }
                    // The first boot only warms the page cache with the kernel, the binary and the libraries.
                    if index == 0 { continue }
                    samples.append(outcome.seconds)
                    if let ready = outcome.bootSeconds { bootSeconds.append(ready) }
                    progressLine(line + "; load " + Self.loadAverage())
                }
            } catch {
                problem = "\(error)"
            }
            if problem != nil { samples = [] }
            if let other {
                let what = measurement == .warmCycleTrue ? "boot → true → poweroff" : "boot → full suite → poweroff"
                let described = other.described
                let this = AgainstCheckout(root.path).described
                record(measurement, "against", GuestMeasurement(key: "\(measurement.rawValue).against", what: "\(measurement.summary), by \(described)",
                                                               unit: .seconds, samples: otherProblem == nil ? otherSamples : [], problem: otherProblem))
                add([BenchFigure.make(measurement, "\(what), series kernel, TCG, \(this)", unit: .seconds,
                                      samples: samples, problem: problem, comparedWith: "the same by \(described)",
                                      baselineSamples: otherProblem == nil ? otherSamples : [], baselineProblem: otherProblem,
                                      note: "alternating boot by boot, each side first in every other pair, each through its own p2plab boot, machine, init and guest binary"
                                          + (againstHasItsOwnKernel ? ", and each on a series kernel built with its own lab config" : ", on the same kernel"),
                                      paired: true)])
            }
            var notes: [String] = []
            if !bootSeconds.isEmpty { notes.append("QEMU start → init ready: median \(BenchStatistics.significant(BenchStatistics.median(bootSeconds))) s") }
            if suiteFailures > 0 { notes.append("the suite reported a failed check in \(suiteFailures) of \(samples.count) cycles") }
            let note = notes.isEmpty ? nil : notes.joined(separator: "; ")
            record(measurement, accel.rawValue, GuestMeasurement(key: "\(measurement.rawValue).\(accel.rawValue)", what: measurement.summary, unit: .seconds, samples: samples, problem: problem, note: note))
            if accel == .tcg {
                tcg = (samples, problem)
                add([LabFigures.warmCycle(measurement, accel: "TCG", samples: samples, problem: problem, note: note)])
            } else {
                add([LabFigures.warmCycleKVM(measurement, kvm: samples, kvmProblem: problem, tcg: tcg.samples, tcgProblem: tcg.problem)])
            }
        }
        if !kvmWorks {
            notReported.append(BenchNotReported(measurement: measurement.rawValue, title: "the same under KVM, compared with TCG",
                                                reason: "KVM does not work here: \(accelNote)"))
        }
    }

    // MARK: - virtme-ng, the anchor

    /// The tool users would pick instead: `vng --run BZIMAGE --disable-kvm --exec true` on the
    /// same bzImage, alternating boot by boot with p2plab's own boot → true → poweroff (one untimed
    /// boot of each first), so the machine's load falls on both alike.
    mutating func vngAnchor() async {
        let m = BenchMeasurement.vngAnchor
        let vng = ProcessInfo.processInfo.environment["P2PLAB_VNG"] ?? which("vng")
        guard let kernel = seriesKernel, let build = seriesBuild else {
            notReported.append(BenchNotReported(measurement: m.rawValue, title: m.summary, reason: "no series kernel"))
            return
        }
        guard let vng else {
            notReported.append(BenchNotReported(
                measurement: m.rawValue, title: m.summary,
                reason: "vng is not on PATH: pip install virtme-ng in a venv and put its bin/ on PATH (or set P2PLAB_VNG)"))
            return
        }
        var own: [Double] = [], anchor: [Double] = []
        var problem: String?
        var vngNote: String?
        // vng finds virtme-run beside itself only through PATH.
        let path = URL(fileURLWithPath: vng).deletingLastPathComponent().path + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        do {
            for index in 0...command.repetitions {
                let directory = session.appendingPathComponent("vng-anchor-\(index)")
                let outcome = try await benchPipeline.boot(kernel, machine: definition, accel: .tcg, job: .shell("true"), directory: directory,
                                                           timeout: LabLimits.standard.benchGuest)
                guard case .exited(0) = outcome.kind else {
                    problem = "p2plab boot \(index) ended \(outcome.kind.name); see \(directory.path)"
                    break
                }
                let start = ContinuousClock.now
                let result = try await runner.capture(
                    Command([vng, "--run", build.bzImage, "--disable-kvm", "--verbose", "--exec", "true"], in: session.path, environment: ["PATH": path]),
                    timeout: LabLimits.standard.benchGuest)
                let seconds = elapsed(since: start)
                switch Self.vngEnding(status: result.status, console: result.standardOutput + "\n" + result.standardError) {
                case .ran(let why):
                    if let why { vngNote = why }
                case .failed(let why):
                    problem = why
                }
                if problem != nil { break }
                if index == 0 { continue }
                own.append(outcome.seconds)
                anchor.append(seconds)
                progressLine(String(format: "bench: lab.vng_anchor %d: p2plab %.2f s, vng %.2f s; load %@", index, outcome.seconds, seconds, Self.loadAverage()))
            }
        } catch {
            problem = "\(error)"
        }
        if problem != nil { own = []; anchor = [] }
        let version = (try? await runner.capture(Command([vng, "--version"], environment: ["PATH": path]), timeout: LabLimits.standard.query))?.standardOutput
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "virtme-ng"
        record(m, "p2plab", GuestMeasurement(key: "vng_anchor.p2plab", what: "p2plab boot --exec true", unit: .seconds, samples: own, problem: problem))
        record(m, "vng", GuestMeasurement(key: "vng_anchor.vng", what: "vng --run --exec true", unit: .seconds, samples: anchor, problem: problem))
        add([BenchFigure.make(m, "boot → true → poweroff, p2plab's lab machine, series kernel, TCG", unit: .seconds, samples: own, problem: problem,
                              comparedWith: "\(version): vng --run BZIMAGE --disable-kvm --verbose --exec true, same bzImage", baselineSamples: anchor,
                              note: "alternating boot by boot; vng boots its own default machine (no NVMe, no switch, no rxe)" + (vngNote.map { "; \($0)" } ?? ""),
                              paired: true)])
    }

    /// How one `vng --run --verbose --exec true` ended.
    enum VngEnding: Equatable {
        /// `true` ran and exited 0 in vng's guest (with a note when that was read from its console).
        case ran(String?)
        case failed(String)
    }

    /// vng exits with the script's status, which its init sends back over a virtio-serial port
    /// that udev names; 255 means that status never arrived. On a kernel without what udev needs
    /// (inotify, file handles) the port is never named, and vng's init runs the script on the
    /// console instead and prints its exit code there: that line is the ending then.
    static func vngEnding(status: Int32, console: String) -> VngEnding {
        if status == 0 { return .ran(nil) }
        let marker = "virtme-ng-init: script exited with code "
        let code = console.split(separator: "\n").last { $0.contains(marker) }
            .flatMap { line in line.range(of: marker).map { line[$0.upperBound...].prefix { $0.isNumber } } }
        if status == 255, code == "0" {
            let udev = console.contains("cannot find script I/O ports")
                ? " (its init found no script I/O ports: udev, which names them, needs CONFIG_INOTIFY_USER and CONFIG_FHANDLE)" : ""
            return .ran("vng exited 255: the script's exit status never reached the host\(udev); its init's console says the script exited with code 0")
        }
        let said = console.split(separator: "\n").suffix(3).joined(separator: " ")
        var why = "vng --run exited \(status)"
        if let code { why += " (its init says the script exited with code \(code))" }
        return .failed(why + (said.trimmingCharacters(in: .whitespaces).isEmpty ? " and printed nothing" : ": \(said)"))
    }

    // MARK: - the bench's own checkout

    /// Gives the bench cache a checkout of the lab's Debian source that it may switch freely: a
    /// `git clone --shared` (objects borrowed, nothing copied) of the prepared source, at the
    /// pristine commit. Without a prepared source, the bench cache fetches and unpacks its own.
    func prepareBenchSource() async throws {
        let fm = FileManager.default
        guard let (deb, id) = try await debianSource() else { return }
        let mainSource = mainCache.sources.appendingPathComponent(id)
        let benchSource = benchCache.sources.appendingPathComponent(id)
        try fm.ensureDirectory(benchCache.downloads)
        let link = benchCache.downloads.appendingPathComponent(deb)
        if !fm.fileExists(atPath: link.path) {
            try fm.createSymbolicLink(at: link, withDestinationURL: mainCache.downloads.appendingPathComponent(deb))
        }
        guard !fm.fileExists(atPath: benchSource.appendingPathComponent(".git").path),
              fm.fileExists(atPath: mainSource.appendingPathComponent(".git").path) else { return }
        progressLine("bench: cloning \(mainSource.path) into \(benchSource.path) (shared objects, once)")
        try fm.ensureDirectory(benchCache.sources)
        let scratch = benchCache.sources.appendingPathComponent(".clone-\(id)")
        try? fm.removeItem(at: scratch)
        try await runner.checked(Command(["git", "clone", "-q", "--shared", "--branch", "p2plab/pristine", mainSource.path, scratch.path]), timeout: benchPipeline.setup.limits.git)
        try await runner.checked(Command(["git", "-C", scratch.path, "config", "gc.auto", "0"]))
        try fm.moveItem(at: scratch, to: benchSource)
    }

    /// Makes the bench cache forget `build`'s outputs, so the next build of it runs make.
    func invalidate(_ build: BuildManifest) throws {
        let outputs = URL(fileURLWithPath: build.bzImage).deletingLastPathComponent()
        guard outputs.path.hasPrefix(benchCache.root.path + "/") else {
            throw BuildError.buildFailed(log: outputs.path, errors: "refusing to invalidate a build outside the bench cache")
        }
        try? FileManager.default.removeItem(at: outputs.appendingPathComponent("manifest.json"))
    }

    // MARK: - series switch

    mutating func seriesSwitch() async throws {
        let kernels = benchPipeline.kernels
        progressLine("bench: lab.series_switch: building both variants in the bench checkout first (cold the first time; not timed)")
        var last: [String: BuildManifest] = [:]
        for selection in [PatchSelection.baseline, .full] { last[selection.label] = try await kernels.build(recipe, selection).manifest }
        var samples: [String: [Double]] = ["baseline": [], "series": []]
        var makeSeconds: [String: [Double]] = ["baseline": [], "series": []]
        var problem: String?
        do {
            for _ in 0..<command.repetitions {
                for selection in [PatchSelection.baseline, .full] {
                    try invalidate(last[selection.label]!)
                    let start = ContinuousClock.now
                    let built = try await kernels.build(recipe, selection).manifest
                    let seconds = elapsed(since: start)
                    last[selection.label] = built
                    samples[selection.label]!.append(seconds)
                    makeSeconds[selection.label]!.append(built.buildSeconds)
                    progressLine(String(format: "bench: lab.series_switch → %@: %.1f s (make %.1f s)", selection.label, seconds, built.buildSeconds))
                }
            }
        } catch {
            problem = "\(error)"
        }
        for (label, from) in [("series", "baseline"), ("baseline", "series")] {
            let s = problem == nil ? samples[label]! : []
            let make = makeSeconds[label]!
            let note = make.isEmpty ? nil : "checkout + make bzImage modules; make alone: median \(BenchStatistics.significant(BenchStatistics.median(make))) s, make -j\(command.jobs ?? ProcessInfo.processInfo.activeProcessorCount)"
            record(.seriesSwitch, "\(from)→\(label)", GuestMeasurement(key: "series_switch.\(from)-to-\(label)", what: "incremental rebuild \(from) → \(label)", unit: .seconds, samples: s, problem: problem, note: note))
            add([LabFigures.seriesSwitch("series switch \(from) → \(label): checkout + incremental rebuild", samples: s, problem: problem, note: note)])
        }
    }

    // MARK: - bisect step

    /// Bisect steps as `p2plab bisect --in-series --check 'pin.*'` takes them: build
    /// (incrementally), test module, boot, the chosen checks. Steps alternate between the first
    /// midpoint (2 patches) and the whole series, so every step rebuilds what the two differ in
    /// (mm/gup.c, drivers/infiniband/core/umem.c).
    mutating func bisectStep() async throws {
        let checks = BenchMeasurement.bisectChecks
        var suite = SuitePlan(machine: definition, accel: .tcg, checks: checks, expectedNames: SuiteCatalog.select(filters: checks).map(\.name))
        suite.needsSelftests = SuiteCatalog.needsSelftests(filters: checks)
        // Start from the whole series in the object directory, so the first step rebuilds.
        _ = try await benchPipeline.kernels.build(recipe, .full)
        var samples: [Double] = []
        var phases: [String: [Double]] = [:]
        var problem: String?
        let steps = [PatchSelection(upto: 2), .full]
        for index in 0..<command.repetitions {
            let selection = steps[index % 2]
            if let cached = try await benchPipeline.kernels.cached(recipe, selection) { try invalidate(cached) }
            let result = await benchPipeline.run(recipe, selection, suite: suite, directory: session.appendingPathComponent("bisect-step-\(index)-\(selection.label)"))
            guard result.problem == nil, case .exited = result.ending, result.run != nil else {
                problem = "step \(index) (\(selection.label)) could not test: \(result.problem ?? result.ending?.name ?? "no results") (\(result.runDirectory.path))"
                break
            }
            samples.append(result.seconds)
            for phase in result.times.phases { phases[phase.name, default: []].append(phase.seconds) }
            progressLine(String(format: "bench: lab.bisect_step %@: %.1f s (%@; %@)", selection.label, result.seconds,
                                result.run?.verdictLine ?? "", result.times.summary))
        }
        if problem != nil { samples = [] }
        let parts = ["build", "module", "boot", "suite"].compactMap { name in
            phases[name].map { seconds in
                // Below a millisecond nothing was built: the cached module was taken as it was.
                let median = BenchStatistics.median(seconds)
                return median < 0.001 ? "\(name) reused (under 1 ms)" : "\(name) \(BenchStatistics.significant(median)) s"
            }
        }
        let note = parts.isEmpty ? nil : "steps alternate upto-2 ↔ series, checks \(checks.joined(separator: " ")) (\(suite.expectedNames.count)); medians: " + parts.joined(separator: ", ")
        record(.bisectStep, "upto-2↔series", GuestMeasurement(key: "bisect_step", what: BenchMeasurement.bisectStep.summary, unit: .seconds, samples: samples, problem: problem, note: note))
        add([LabFigures.bisectStep(samples: samples, problem: problem, note: note)])
    }

    // MARK: - cold builds

    /// Two cold builds per repetition, by the lab's own builder (`KernelBuilder`, as `p2plab build`
    /// runs it), in the bench's own checkout at the pristine source, each into an empty scratch cache:
    /// the lean config (the lab's base recipe + fragment) and defconfig + kvm_guest.config.
    mutating func coldBuilds() async {
        let jobs = command.jobs ?? ProcessInfo.processInfo.activeProcessorCount
        if let load = Double(Self.loadAverage().split(separator: " ").first ?? ""), load > Double(jobs) * 0.75 {
            // Two builds that share the CPU with something else measure the something else.
            progressLine("bench: warning: load average \(load) on \(jobs) CPUs before the cold builds; their figures will be slow and noisy")
        }
        var samples: [String: [Double]] = ["lean": [], "defconfig": []]
        var cpuSamples: [String: [Double]] = ["lean": [], "defconfig": []]
        var problem: String?
        do {
            try await prepareBenchSource()
            let kernels = benchPipeline.kernels
            let source = try await kernels.sources.prepare(.defaultDebian)
            let scratchRoot = benchCache.root.appendingPathComponent("cold")
            try FileManager.default.ensureDirectory(scratchRoot)
            try await kernels.withCheckout(source.workdir.path) {
                let series = try PatchSeries.load(from: recipe.series)
                let variant = try await kernels.sources.checkout(source, series: series, selection: .baseline)
                for index in 0..<command.coldRepeat {
                    // Interleaved, so a machine that gets busier mid-run burdens both configs alike.
                    for config in ["lean", "defconfig"] {
                        let scratch = CacheLayout(root: scratchRoot.appendingPathComponent(config))
                        try? FileManager.default.removeItem(at: scratch.root)
                        let builder = KernelBuilder(
                            cache: scratch, runner: runner, jobs: jobs,
                            baseRecipe: config == "lean" ? baseConfigRecipe : ["defconfig", "kvm_guest.config"],
                            limits: benchPipeline.setup.limits, progress: { _ in })
                        progressLine("bench: lab.cold_build \(config) \(index + 1)/\(command.coldRepeat) in \(scratch.root.path)")
                        let start = ContinuousClock.now
                        let cpuBefore = Self.childrenCPUSeconds()
                        _ = try await builder.build(variant, fragmentFiles: config == "lean" ? recipe.fragments : [])
                        let seconds = elapsed(since: start)
                        let cpu = Self.childrenCPUSeconds() - cpuBefore
                        samples[config]!.append(seconds)
                        cpuSamples[config]!.append(cpu)
                        progressLine(String(format: "bench: lab.cold_build %@: %.0f s wall, %.0f s CPU; load %@", config, seconds, cpu, Self.loadAverage()))
                        try? FileManager.default.removeItem(at: scratch.root)
                    }
                }
            }
        } catch {
            problem = "\(error)"
        }
        if problem != nil { samples = ["lean": [], "defconfig": []]; cpuSamples = samples }
        for config in ["lean", "defconfig"] {
            record(.coldBuild, config, GuestMeasurement(key: "cold_build.\(config)", what: "cold build, \(config)", unit: .seconds, samples: samples[config]!, problem: problem))
            record(.coldBuild, config, GuestMeasurement(key: "cold_build.\(config).cpu", what: "cold build, \(config), CPU seconds", unit: .seconds, samples: cpuSamples[config]!, problem: problem))
        }
        let note = "p2plab's KernelBuilder, make -j\(jobs): config targets, then bzImage modules, empty object directory"
        add([LabFigures.coldBuild(lean: samples["lean"]!, defconfig: samples["defconfig"]!, problem: problem, defconfigProblem: problem, note: note),
             LabFigures.coldBuild(lean: cpuSamples["lean"]!, defconfig: cpuSamples["defconfig"]!, problem: problem, defconfigProblem: problem,
                                  note: note + "; CPU time of every process the build ran, which other load on the machine does not inflate", cpu: true)])
    }
}

/// Another p2plab checkout that `bench --against` boots alternately with this one: through its own
/// built `p2plab boot` (so its machine definition, init and kernel command line) and, for the suite,
/// its own guest binary, on the kernel ``BenchSession/prepareAgainstKernel(_:)`` chose for it.
struct AgainstCheckout: Sendable {
    let root: URL

    init(_ path: String) { root = URL(fileURLWithPath: path).standardizedFileURL }

    func binary(_ name: String) -> String { root.appendingPathComponent(".build/debug/\(name)").path }

    /// `DIR at COMMIT` (and "with uncommitted changes" when its tree is dirty).
    var described: String {
        let checkout = ProjectPaths.checkout(at: root)
        return "the checkout \(root.path)" + (checkout.map { " at \($0.commit)" } ?? "") + (checkout?.dirty == true ? " with uncommitted changes" : "")
    }

    /// One boot of `measurement`'s job on `kernel`; returns QEMU's start → exit seconds from the
    /// run's manifest (what this checkout's own boots report too).
    func boot(_ measurement: BenchMeasurement, bzImage: String, module: URL?, selftests: URL?, invocation: GuestInvocation,
              finished: [Int32], directory: URL, limits: LabLimits, runner: Runner, environment: [String: String] = [:]) async throws -> Double {
        let run = RunDirectory(directory)
        try FileManager.default.ensureDirectory(run.guest)
        var arguments = [binary("p2plab"), "boot", "--accel", "tcg", "--kernel", bzImage, "--output", directory.path,
                         "--timeout", String(limits.suite), "--env", "P2PLAB_ROOT=\(root.path)"]
        if measurement == .warmCycleTrue {
            arguments += ["--exec", "true"]
        } else {
            try invocation.write(into: run.guest)
            var shared = [binary("p2plab-guest"), root.path]
            if let module { shared.append(module.deletingLastPathComponent().path) }
            if let selftests { shared.append(selftests.path) }
            arguments += shared.flatMap { ["--share", $0] }
            arguments += ["--exec", shellQuote([binary("p2plab-guest"), "check", "--invocation"]) + " \"$P2PLAB_RESULTS/\(GuestInvocation.fileName)\""]
        }
        let result = try await runner.capture(Command(arguments, in: root.path, environment: environment), timeout: limits.boot + limits.suite + 60)
        guard let data = FileManager.default.contents(atPath: run.manifest.path),
              let manifest = try? LabJSON.decoder.decode(LabMachine.Manifest.self, from: data) else {
            let said = (result.standardOutput + "\n" + result.standardError).split(separator: "\n").suffix(3).joined(separator: " ")
            throw BenchAgainstError(message: "\(binary("p2plab")) boot exited \(result.status) and wrote no manifest: \(said)")
        }
        guard manifest.outcome == "exited", let status = manifest.guestExitStatus, finished.contains(status) else {
            throw BenchAgainstError(message: "its boot ended \(manifest.outcome) (guest exit \(manifest.guestExitStatus.map(String.init) ?? "-")); see \(directory.path)")
        }
        return manifest.seconds
    }
}

struct BenchAgainstError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}
