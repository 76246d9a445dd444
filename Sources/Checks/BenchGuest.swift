import Catalog
import Foundation
import LabSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The kernel-behaviour benchmarks that run inside the guest (`p2plab bench-guest`): pin
/// throughput through the test module, `ibv_reg_mr`/`ibv_dereg_mr` latency on rxe, and rxe RDMA
/// WRITE bandwidth with perftest. The host boots each kernel once and pairs the reports.
public enum BenchGuest {
    /// The measurement groups, as `p2plab bench --only` names them.
    public static let pinThroughput = BenchGroup.pinThroughput.rawValue
    public static let regMRLatency = BenchGroup.regMRLatency.rawValue
    public static let rdmaWriteBandwidth = BenchGroup.rdmaWriteBandwidth.rawValue
    public static let groups = BenchGroup.allCases.map(\.rawValue)

    public static let pinSizes = BenchPlan.pinSizes
    public static let regionSizes = BenchPlan.regionSizes
    public static let writeMessageBytes = BenchPlan.writeMessageBytes
    public static let writeSeconds = BenchPlan.writeSeconds

    /// The pin flag sets measured on both memories; `pinKey` names each.
    public static let pinCases: [(memory: String, flags: PinFlags)] = [
        ("p2pmem", [.longterm, .p2pdma, .write, .fast]),
        ("p2pmem", [.longterm, .p2pdma, .write]),
        ("p2pmem", [.p2pdma, .write, .fast]),
        ("p2pmem", [.p2pdma, .write]),
        ("anonymous", [.longterm, .write, .fast]),
        ("anonymous", [.longterm, .write]),
    ]

    /// The key of one pin measurement (`BenchPlan.pinKey`).
    public static func pinKey(memory: String, flags: PinFlags, pages: Int) -> String {
        BenchPlan.pinKey(memory: memory, flags: flags.description, pages: pages)
    }

    public static func regKey(_ bytes: Int) -> String { BenchPlan.regKey(bytes) }
    public static func deregKey(_ bytes: Int) -> String { BenchPlan.deregKey(bytes) }
    public static let writeKey = BenchPlan.writeKey

    /// What to measure and with what.
    public struct Options: Sendable {
        public var repetitions: Int
        /// Globs over `groups`; empty means all.
        public var only: [String]
        public var suite: SuiteOptions
        /// Kernel time one pin sample accumulates before it ends (more iterations for small pins).
        public var sampleBudgetNanoseconds: UInt64 = 20_000_000

        public init(repetitions: Int, only: [String], suite: SuiteOptions) {
            self.repetitions = repetitions
            self.only = only
            self.suite = suite
        }

        func wants(_ group: String) -> Bool {
            only.isEmpty || only.contains { globMatches($0, group) }
        }
    }

    /// Runs the chosen groups and returns what they measured; never throws: what cannot be
    /// measured is a measurement with a `problem`.
    public static func run(_ options: Options, log: @escaping @Sendable (String) -> Void) async -> GuestBenchReport {
        var measurements: [GuestMeasurement] = []
        if options.wants(pinThroughput) {
            log("bench: \(pinThroughput)")
            measurements += pins(options)
        }
        if options.wants(regMRLatency) {
            log("bench: \(regMRLatency)")
            measurements += registrations(options)
        }
        if options.wants(rdmaWriteBandwidth) {
            log("bench: \(rdmaWriteBandwidth)")
            measurements.append(await writeBandwidth(options, log: log))
        }
        return GuestBenchReport(kernelRelease: kernelRelease(), repetitions: options.repetitions, measurements: measurements)
    }

    /// `uname -r`. The corresponding C function is `uname`.
    public static func kernelRelease() -> String {
        var name = utsname()
        uname(&name)
        return withUnsafeBytes(of: &name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    // MARK: - pin throughput

    static func pins(_ options: Options) -> [GuestMeasurement] {
        let all = pinSizes.flatMap { pages in
            pinCases.map { (pinKey(memory: $0.memory, flags: $0.flags, pages: pages), $0, pages) }
        }
        func failed(_ why: String) -> [GuestMeasurement] {
            all.map { GuestMeasurement(key: $0.0, what: pinWhat($0.1.memory, $0.1.flags, $0.2), unit: .pagesPerSecond, problem: why) }
        }
        let (module, moduleProblem) = Discovery.module(path: options.suite.modulePath, debugfs: options.suite.debugfs)
        guard let module else { return failed(moduleProblem ?? "no test module") }
        let (provider, providerProblem) = Discovery.provider(in: options.suite.sysfs, preferred: options.suite.provider)
        guard let provider else { return failed(providerProblem ?? "no p2pmem provider") }
        let largest = pinSizes.max()!
        let p2pPages = min(largest, Int(provider.available) / pageSize)
        let p2pmem: MappedRegion
        let anonymous: MappedRegion
        do {
            p2pmem = try MappedRegion.shared(path: options.suite.sysfs.allocatePath(provider.address), length: p2pPages * pageSize)
            anonymous = try MappedRegion.anonymous(length: largest * pageSize)
        } catch {
            return failed("mapping \(p2pPages) pages of p2pmem of \(provider.address) and \(largest) anonymous pages failed: \(error)")
        }
        // Fault every page in first: the samples time pinning present pages, not the first touch.
        touch(p2pmem)
        touch(anonymous)
        return all.map { key, pinCase, pages in
            let region = pinCase.memory == "p2pmem" ? p2pmem : anonymous
            var measurement = GuestMeasurement(key: key, what: pinWhat(pinCase.memory, pinCase.flags, pages), unit: .pagesPerSecond)
            guard pages <= region.pages else {
                measurement.problem = "only \(region.pages) pages of \(pinCase.memory) could be mapped (p2pmem available: \(provider.available) bytes)"
                return measurement
            }
            var slowCalls: UInt64 = 0
            var calls: UInt64 = 0
            var slowKnown = true
            for _ in 0..<options.repetitions {
                var elapsed: UInt64 = 0
                var iterations: UInt64 = 0
                let wallStart = monotonicSeconds()
                // Small pins take microseconds: repeat until the sample holds enough kernel time to
                // be above the clock's noise, bounded in iterations and wall time for TCG.
                while elapsed < options.sampleBudgetNanoseconds && iterations < 5000 && monotonicSeconds() - wallStart < 2 {
                    switch module.pinResult(address: region.address, pages: pages, flags: pinCase.flags) {
                    case .failure(let errno):
                        measurement.refused = errno.name
                        measurement.samples = []
                        return measurement
                    case .success(let report):
                        guard report.pinned == pages else {
                            measurement.problem = "pinned \(report.pinned) of \(pages) pages"
                            measurement.samples = []
                            return measurement
                        }
                        elapsed += max(1, report.elapsedNanoseconds)
                        iterations += 1
                        if let slow = report.slowPathCalls { slowCalls += slow } else { slowKnown = false }
                        calls += 1
                    }
                }
                measurement.samples.append(Double(UInt64(pages) * iterations) * 1e9 / Double(elapsed))
            }
            measurement.note = slowKnown
                ? String(format: "slow-GUP entries per call: %.2f", Double(slowCalls) / Double(max(calls, 1)))
                : "slow-GUP entries not counted by this module build"
            return measurement
        }
    }

    static func pinWhat(_ memory: String, _ flags: PinFlags, _ pages: Int) -> String {
        let call = flags.contains(.fast) ? "pin_user_pages_fast" : "pin_user_pages"
        var shown = flags
        shown.remove(.fast)
        return "\(call)(\(shown)) of \(pages) page\(pages == 1 ? "" : "s") of \(memory)"
    }

    /// Writes one byte per page so every page is present before it is pinned.
    static func touch(_ region: MappedRegion) {
        let bytes = region.base.assumingMemoryBound(to: UInt8.self)
        for page in 0..<region.pages { bytes[page * pageSize] = UInt8(truncatingIfNeeded: page) }
    }

    // MARK: - ibv_reg_mr / ibv_dereg_mr

    static func registrations(_ options: Options) -> [GuestMeasurement] {
        var measurements: [GuestMeasurement] = []
        for bytes in regionSizes {
            measurements.append(GuestMeasurement(key: regKey(bytes), what: "ibv_reg_mr of \(byteCount(bytes)) of anonymous memory", unit: .microseconds))
            measurements.append(GuestMeasurement(key: deregKey(bytes), what: "ibv_dereg_mr of \(byteCount(bytes)) of anonymous memory", unit: .microseconds))
        }
        func failed(_ why: String) -> [GuestMeasurement] {
            measurements.map { var m = $0; m.problem = why; return m }
        }
        let (device, deviceProblem) = Discovery.rdmaDevice(in: options.suite.sysfs, names: Verbs.deviceNames(), preferred: options.suite.device)
        guard let device else { return failed(deviceProblem ?? "no RDMA device") }
        let context: VerbsContext
        do {
            context = try Verbs.open(device.name)
        } catch {
            return failed("opening \(device.name) failed: \(error)")
        }
        for (index, bytes) in regionSizes.enumerated() {
            let region: MappedRegion
            do {
                region = try MappedRegion.anonymous(length: bytes)
            } catch {
                measurements[2 * index].problem = "mmap of \(byteCount(bytes)) failed: \(error)"
                measurements[2 * index + 1].problem = measurements[2 * index].problem
                continue
            }
            touch(region)
            sampling: for _ in 0..<options.repetitions {
                var registerSeconds = 0.0, deregisterSeconds = 0.0
                var iterations = 0
                // As with pins: several registrations per sample for the small sizes.
                while registerSeconds + deregisterSeconds < Double(options.sampleBudgetNanoseconds) / 1e9 && iterations < 1000 {
                    let start = monotonicSeconds()
                    let registered = context.registerMRResult(address: region.base, length: bytes, writable: true)
                    let middle = monotonicSeconds()
                    guard case .success(let mr) = registered else {
                        if case .failure(let errno) = registered { measurements[2 * index].refused = errno.name }
                        measurements[2 * index + 1].problem = "ibv_reg_mr failed"
                        break sampling
                    }
                    let deregistered = mr.deregister()
                    let end = monotonicSeconds()
                    if case .failure(let errno) = deregistered {
                        measurements[2 * index + 1].refused = errno.name
                        break sampling
                    }
                    registerSeconds += middle - start
                    deregisterSeconds += end - middle
                    iterations += 1
                }
                measurements[2 * index].samples.append(registerSeconds * 1e6 / Double(iterations))
                measurements[2 * index + 1].samples.append(deregisterSeconds * 1e6 / Double(iterations))
            }
            if measurements[2 * index].refused != nil || measurements[2 * index + 1].refused != nil {
                measurements[2 * index].samples = []
                measurements[2 * index + 1].samples = []
            }
        }
        return measurements
    }

    // MARK: - ib_write_bw

    static func writeBandwidth(_ options: Options, log: @escaping @Sendable (String) -> Void) async -> GuestMeasurement {
        var measurement = GuestMeasurement(
            key: writeKey,
            what: "ib_write_bw RC RDMA WRITE of \(byteCount(writeMessageBytes)) messages for \(writeSeconds) s, server and client in the guest over rxe loopback",
            unit: .gigabitsPerSecond)
        let (device, deviceProblem) = Discovery.rdmaDevice(in: options.suite.sysfs, names: Verbs.deviceNames(), preferred: options.suite.device)
        guard let device else {
            measurement.problem = deviceProblem ?? "no RDMA device"
            return measurement
        }
        guard let tool = which("ib_write_bw") else {
            measurement.problem = "ib_write_bw not found: install perftest (apt-get install perftest)"
            return measurement
        }
        var common = [tool, "-d", device.name, "-F", "--report_gbits", "-s", String(writeMessageBytes), "-D", String(writeSeconds)]
        if let gid = ipv4GIDIndex(sysfs: options.suite.sysfs, device: device.name) {
            // RoCE needs a GID the peer can route to; the IPv4-mapped one works over loopback.
            common += ["-x", String(gid)]
        }
        let runner = Runner(echo: true, log: log)
        for sample in 0..<options.repetitions {
            // A fresh port per sample, so a server that lingers cannot take the next client.
            let port = ["-p", String(18515 + sample)]
            do {
                let output = try await runClientAndServer(server: Command(common + port), client: Command(common + port + ["127.0.0.1"]), runner: runner)
                guard let result = PerftestOutput.parse(output) else {
                    measurement.problem = "no result line in ib_write_bw's output: \(output.lastLines(5))"
                    measurement.samples = []
                    return measurement
                }
                measurement.samples.append(result.averageGigabitsPerSecond)
                measurement.note = "\(result.iterations) iterations in the last sample; MTU \(result.mtu.map(String.init) ?? "?")"
            } catch {
                measurement.problem = "\(error)"
                measurement.samples = []
                return measurement
            }
        }
        return measurement
    }

    /// Starts the server, then the client (retrying while the server is not yet listening), and
    /// returns the client's output.
    static func runClientAndServer(server: Command, client: Command, runner: Runner) async throws -> String {
        let limit = Double(writeSeconds) + 60
        async let served = runner.capture(server, timeout: limit)
        var last: RunResult?
        for _ in 0..<8 {
            try await Task.sleep(nanoseconds: 1_000_000_000)
            let result = try await runner.capture(client, timeout: limit)
            if result.succeeded {
                _ = try await served
                return result.standardOutput
            }
            last = result
            // "Couldn't connect": the server is still starting under TCG; anything else is final.
            if !(result.standardError + result.standardOutput).contains("onnect") { break }
        }
        throw RunError.nonZeroExit(
            command: client.description, status: last?.statusDescription ?? "?",
            stderrTail: ((last?.standardError ?? "") + (last?.standardOutput ?? "")).lastLines(8))
    }

    /// The index of the port's IPv4-mapped RoCE GID (`::ffff:a.b.c.d`), or nil.
    static func ipv4GIDIndex(sysfs: Sysfs, device: String) -> Int? {
        for index in 0..<16 {
            guard let gid = sysfs.read("class/infiniband/\(device)/ports/1/gids/\(index)") else { continue }
            if gid.hasPrefix("0000:0000:0000:0000:0000:ffff:") { return index }
        }
        return nil
    }
}

/// The result line of a perftest bandwidth run.
public struct PerftestOutput: Sendable, Equatable {
    public var messageBytes: Int
    public var iterations: Int
    public var averageGigabitsPerSecond: Double
    public var mtu: Int?

    public init(messageBytes: Int, iterations: Int, averageGigabitsPerSecond: Double, mtu: Int?) {
        self.messageBytes = messageBytes
        self.iterations = iterations
        self.averageGigabitsPerSecond = averageGigabitsPerSecond
        self.mtu = mtu
    }

    /// Reads perftest's table (`#bytes #iterations BW peak[Gb/sec] BW average[Gb/sec] MsgRate[Mpps]`
    /// and the line after it); MiB/s tables are converted (perftest: Gb = MiB × 2^20 × 8 / 10^9).
    /// Nil when there is no result line.
    public static func parse(_ text: String) -> PerftestOutput? {
        let lines = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        var mtu: Int?
        for line in lines where line.hasPrefix("Mtu") {
            mtu = line.split(separator: ":").dropFirst().first.flatMap { Int($0.trimmingCharacters(in: .whitespaces).prefix { $0.isNumber }) }
        }
        guard let header = lines.lastIndex(where: { $0.hasPrefix("#bytes") && $0.contains("BW average") }),
              header + 1 < lines.count else { return nil }
        let megabytes = lines[header].contains("BW average[MiB/sec]") || lines[header].contains("BW average[MB/sec]")
        let fields = lines[header + 1].split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard fields.count >= 4, let bytes = Int(fields[0]), let iterations = Int(fields[1]),
              let average = Double(fields[3]) else { return nil }
        let gigabits = megabytes ? average * 1_048_576 * 8 / 1e9 : average
        return PerftestOutput(messageBytes: bytes, iterations: iterations, averageGigabitsPerSecond: gigabits, mtu: mtu)
    }
}
