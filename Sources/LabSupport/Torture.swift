import Foundation

/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", 2014): the
/// lab's one seeded generator. Swift's own generator cannot be seeded; a torture schedule must replay
/// exactly from its seed, on any machine, in any later version of p2plab, and a bench's bootstrap
/// interval must be the same on every render of the same samples.
public struct SplitMix64: RandomNumberGenerator, Sendable, Equatable {
    public private(set) var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A number in `0..<bound` (Lemire's multiply-shift; the bias is below 2⁻³² for the bounds used here).
    public mutating func below(_ bound: Int) -> Int {
        precondition(bound > 0, "below(\(bound))")
        return Int(next().multipliedFullWidth(by: UInt64(bound)).high)
    }

    /// The generator of stream `stream` of `seed`: each worker (and the provider loop) draws from its
    /// own stream, so one worker's schedule does not depend on how many others there are.
    public static func stream(_ stream: Int, of seed: UInt64) -> SplitMix64 {
        var mixer = SplitMix64(seed: seed ^ (UInt64(truncatingIfNeeded: stream + 1) &* 0xD1B5_4A32_D192_ED03))
        return SplitMix64(seed: mixer.next())
    }
}

/// The torture's generator: SplitMix64, named for what it drives.
public typealias TortureRandom = SplitMix64

/// What a torture worker does in one step.
public enum TortureOperation: String, Sendable, Codable, CaseIterable, Hashable {
    /// `ibv_reg_mr` of a fresh p2pmem mapping on the RDMA device, then `ibv_dereg_mr`.
    case regMRP2PMem = "regmr.p2pmem"
    /// `ibv_reg_mr` of anonymous memory, held, then `ibv_dereg_mr`.
    case regMRAnonymous = "regmr.anon"
    /// mmap of `p2pmem/allocate`, then munmap.
    case mmapP2PMem = "mmap.p2pmem"
    /// The module's LONGTERM|P2PDMA|WRITE pin through `pin_user_pages_fast()`, held, then released.
    case pinFast = "pin.fast"
    /// The same pin through `pin_user_pages()`.
    case pinSlow = "pin.slow"
    /// The module's `ib_umem_get()` on p2pmem for a P2P-capable stand-in HCA, held as an MR holds it.
    case umemHold = "umem.hold"
    /// fork() with a p2pmem mapping; the child writes to every page and exits.
    case fork

    /// How often the schedule picks it, relative to the others.
    var weight: Int {
        switch self {
        case .pinFast, .pinSlow, .umemHold: 3
        case .regMRP2PMem, .regMRAnonymous, .mmapP2PMem: 2
        case .fork: 1
        }
    }
}

/// One step of a worker's schedule.
public struct TortureStep: Sendable, Codable, Hashable, CustomStringConvertible {
    public var operation: TortureOperation
    /// Pages the step maps (and pins, registers, forks with).
    public var pages: Int
    /// How long what it took is held before it is given back, microseconds.
    public var holdMicroseconds: Int

    public init(operation: TortureOperation, pages: Int, holdMicroseconds: Int) {
        self.operation = operation
        self.pages = pages
        self.holdMicroseconds = holdMicroseconds
    }

    public var description: String { "\(operation.rawValue) \(pages) pages, held \(holdMicroseconds) µs" }
}

/// One cycle of the provider loop: stay bound, unbind (which waits for every pin), stay unbound, rebind.
public struct ProviderCycle: Sendable, Codable, Hashable {
    /// How long the provider stays bound before the unbind, milliseconds.
    public var boundMilliseconds: Int
    /// How long it stays unbound after the unbind returned, milliseconds.
    public var unboundMilliseconds: Int
}

/// The schedules of a torture run, all derived from its seed: the same seed gives every worker the
/// same steps in the same order, and the provider loop the same cycles.
public struct TortureSchedule: Sendable {
    public let seed: UInt64

    public init(seed: UInt64) { self.seed = seed }

    /// Pages a step may map: small, so that every worker's mapping fits in the pool at once.
    public static let pageChoices = [1, 2, 4, 8, 16]

    /// Worker `worker`'s steps (0-based), lazily: the n-th element is the same in every run of the seed.
    public func steps(worker: Int) -> WorkerSteps { WorkerSteps(random: .stream(worker, of: seed)) }

    /// The provider loop's cycles.
    public func providerCycles() -> ProviderCycles { ProviderCycles(random: .stream(-1, of: seed)) }

    public struct WorkerSteps: Sequence, IteratorProtocol, Sendable {
        var random: TortureRandom
        static let table: [TortureOperation] = TortureOperation.allCases.flatMap { Array(repeating: $0, count: $0.weight) }

        public mutating func next() -> TortureStep? {
            let operation = Self.table[random.below(Self.table.count)]
            let pages = TortureSchedule.pageChoices[random.below(TortureSchedule.pageChoices.count)]
            // Most holds are short; one in eight is long enough (20 ms) for an unbind to find it.
            let hold = random.below(8) == 0 ? 20_000 : random.below(2_000)
            return TortureStep(operation: operation, pages: pages, holdMicroseconds: hold)
        }
    }

    public struct ProviderCycles: Sequence, IteratorProtocol, Sendable {
        var random: TortureRandom

        public mutating func next() -> ProviderCycle? {
            // Bound long enough for the workers to find p2pmem most of the time: a rebind takes ~1 s under TCG.
            ProviderCycle(boundMilliseconds: 800 + random.below(2_000), unboundMilliseconds: random.below(300))
        }
    }
}

/// What `p2plab torture` asks of the guest.
public struct TorturePlan: Sendable, Codable, Equatable {
    public var seed: UInt64
    public var workers: Int
    /// Seconds the workers run.
    public var duration: Double
    /// Each worker stops after this many steps (a prefix of its schedule, to replay a failure); nil: no limit.
    public var operations: Int?
    /// Whether the provider loop unbinds and rebinds the provider's driver.
    public var unbind: Bool

    public init(seed: UInt64, workers: Int, duration: Double, operations: Int? = nil, unbind: Bool = true) {
        self.seed = seed
        self.workers = workers
        self.duration = duration
        self.operations = operations
        self.unbind = unbind
    }

    /// The KTAP test names of the run, in order: one per worker, then the invariants.
    public var testNames: [String] {
        (1...max(1, workers)).map { "torture.worker.\($0)" } + TortureInvariant.allCases.map(\.testName)
    }

    /// The options that make this plan, as `p2plab torture` takes them.
    public var arguments: [String] {
        var arguments = ["--seed", String(seed), "--workers", String(workers), "--duration", Self.number(duration)]
        if let operations { arguments += ["--ops", String(operations)] }
        if !unbind { arguments.append("--no-unbind") }
        return arguments
    }

    public static func number(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(value)
    }
}

/// What a torture run checks besides each operation's result.
public enum TortureInvariant: String, Sendable, Codable, CaseIterable {
    /// The provider was unbound and bound again at least once (the loop did run), and every unbind
    /// completed once nothing was held.
    case providerCycled = "provider_cycled"
    /// p2pmem `available` is back to its start value once everything is released.
    case availableRestored = "available_restored"
    /// The module holds no pin and no umem at the end, and counted some during the run; the kernel's
    /// `nr_foll_pin_acquired` equals `nr_foll_pin_released` again, and grew during the run.
    case noLeakedPins = "no_leaked_pins"
    /// No WARNING, BUG, Oops, KASAN, lockdep or other report the kernel was not expected to print.
    case noSplat = "no_splat"
    /// No hung-task report.
    case noHungTask = "no_hung_task"

    public var testName: String { "torture.\(rawValue)" }
}

/// Where a worker first did something the kernel should not have let it (or refused what it should have allowed).
public struct TortureFailure: Sendable, Codable, Equatable {
    /// 1-based, as in the KTAP.
    public var worker: Int
    /// 0-based index of the step in the worker's schedule.
    public var index: Int
    public var step: TortureStep
    public var observed: String
    public var allowed: [String]
    /// Whether the provider was unbinding, unbound or rebinding during the step.
    public var providerDisturbed: Bool
    /// The call of the step that returned the refusal (`the mmap of …/allocate`, `ibv_reg_mr`), when
    /// the step made several that could; nil for results that are not an errno.
    public var call: String?

    public init(worker: Int, index: Int, step: TortureStep, observed: String, allowed: [String], providerDisturbed: Bool,
                call: String? = nil) {
        self.worker = worker
        self.index = index
        self.step = step
        self.observed = observed
        self.allowed = allowed
        self.providerDisturbed = providerDisturbed
        self.call = call
    }

    public var line: String {
        "worker \(worker) operation #\(index) (\(step)): \(observed)" + (call.map { " from \($0)" } ?? "")
            + ", allowed \(allowed.joined(separator: " or "))"
            + (providerDisturbed ? " while the provider was unbinding or unbound" : "")
    }
}

/// What the guest writes beside the KTAP (`torture.json`) for the host's summary.
public struct TortureSummary: Sendable, Codable, Equatable {
    public static let fileName = "torture.json"

    public var plan: TorturePlan
    /// Seconds the workers really ran.
    public var elapsed: Double
    /// Operation → observed result → count.
    public var counts: [String: [String: Int]]
    /// Steps done per worker (index 0 is worker 1).
    public var operationsPerWorker: [Int]
    public var failures: [TortureFailure]
    public var providerCycles: Int
    /// Invariant name → nil when it held, else why not.
    public var invariantProblems: [String: String]

    public init(plan: TorturePlan, elapsed: Double = 0, counts: [String: [String: Int]] = [:], operationsPerWorker: [Int] = [],
                failures: [TortureFailure] = [], providerCycles: Int = 0, invariantProblems: [String: String] = [:]) {
        self.plan = plan
        self.elapsed = elapsed
        self.counts = counts
        self.operationsPerWorker = operationsPerWorker
        self.failures = failures
        self.providerCycles = providerCycles
        self.invariantProblems = invariantProblems
    }

    public var operations: Int { operationsPerWorker.reduce(0, +) }

    public var operationsPerSecond: Double { elapsed > 0 ? Double(operations) / elapsed : 0 }

    /// The counts as rows: operation, result, count (operations in schedule order, results by count).
    public var countRows: [[String]] {
        TortureOperation.allCases.flatMap { operation -> [[String]] in
            let results = counts[operation.rawValue] ?? [:]
            return results.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
                .map { [operation.rawValue, $0.key, String($0.value)] }
        }
    }

    public func write(into directory: URL) throws {
        try FileManager.default.ensureDirectory(directory)
        try LabJSON.encode(self).write(to: directory.appendingPathComponent(Self.fileName))
    }

    public static func read(from directory: URL) throws -> TortureSummary {
        try LabJSON.decoder.decode(TortureSummary.self, from: Data(contentsOf: directory.appendingPathComponent(fileName)))
    }
}

/// The command lines that replay a torture run, shortest first.
public enum TortureReproducer {
    /// `./p2plab torture --seed N --workers K --duration S [variant options]`, and when a worker
    /// failed, the same with `--ops` cut just after its failing step (the prefix that still
    /// contains it; a later step of any worker cannot have caused it).
    public static func commands(plan: TorturePlan, failure: TortureFailure?, variantArguments: [String]) -> [String] {
        var commands: [String] = []
        if let failure {
            var prefix = plan
            prefix.operations = min(plan.operations ?? Int.max, failure.index + 1)
            commands.append(line(prefix.arguments + variantArguments))
        }
        commands.append(line(plan.arguments + variantArguments))
        return commands
    }

    static func line(_ arguments: [String]) -> String {
        "./p2plab torture " + shellQuote(arguments)
    }

    /// The user's arguments without the ones a plan sets (`--seed 5`, `--seed=5`, `--no-unbind`, …).
    public static func variantArguments(_ arguments: [String]) -> [String] {
        dropping(["--seed", "--workers", "--duration", "--ops", "--output", "--shrink"], words: ["--no-unbind", "torture"], from: arguments)
    }
}

/// Shorter runs that may fail the same way, tried one after the other by `p2plab torture --shrink`.
public enum TortureShrink {
    /// The next smaller plan to try after `plan` failed: a failing worker's prefix alone (its
    /// schedule does not depend on how many workers run, so `--workers W` keeps worker W's steps),
    /// then the same without the unbind loop; without a failing worker (an invariant failed), half
    /// the workers and half the duration, down to one worker and 5 s. Nil: nothing smaller to try.
    public static func next(after plan: TorturePlan, failure: TortureFailure?) -> TorturePlan? {
        if let failure {
            var prefix = plan
            prefix.workers = failure.worker
            prefix.operations = min(plan.operations ?? Int.max, failure.index + 1)
            if prefix != plan { return prefix }
            if plan.unbind {
                prefix.unbind = false
                return prefix
            }
            return nil
        }
        var half = plan
        half.workers = max(1, (plan.workers + 1) / 2)
        half.duration = max(5, (plan.duration / 2).rounded())
        return half == plan ? nil : half
    }
}
