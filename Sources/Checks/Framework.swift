import Catalog
import Foundation
import KTAP
import LabSupport

/// Thrown from a check to skip it with a reason that says what to fix.
public struct CheckSkip: Error, CustomStringConvertible, Sendable {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// Thrown from a check for a failure that ends it early (setup went wrong, nothing to compare).
public struct CheckFailure: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Thrown from a check whose instrument is missing or not working (a disarmed probe, a counter
/// that does not count): the check is an ERROR with `reason`, never a PASS or a silent SKIP.
public struct CheckError: Error, CustomStringConvertible, Sendable {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// What one check said: its diagnostics, its expectations and whether they held.
public final class CheckRecorder: @unchecked Sendable {
    /// Free-form diagnostic lines, without the `# ` prefix.
    public private(set) var notes: [String] = []
    /// Failures, one line each.
    public private(set) var failures: [String] = []
    /// The structured keys: the first failed expectation, else the last one checked.
    public private(set) var expected: String?
    public private(set) var observed: String?
    public private(set) var errno: Errno?
    private var structuredFromFailure = false
    /// The device kind expectations are looked up for (the RDMA device under test, or the stand-in).
    public var device: DeviceKind?
    /// The kernel the checks assert: the effects of the series under test (on this kernel, the
    /// series may be carried only in part: then a check fails where the part differs).
    public var reference: KernelEffects
    /// The WARNINGs the reference kernel prints for what the check did, one per operation that
    /// prints one: the runner demands them in the kernel log and does not count them as splats.
    public private(set) var expectedWarnings: [WarningSite] = []
    /// Nested results: another tool's own test cases (the kernel's selftests), written as a KTAP
    /// subtest block before this check's result line.
    public private(set) var subtests: [TestResult] = []

    /// Adds nested results (see ``subtests``), numbered after those already added.
    public func addSubtests(_ tests: [TestResult]) {
        for var test in tests {
            test.number = subtests.count + 1
            subtests.append(test)
        }
    }

    public init(device: DeviceKind? = nil, reference: KernelEffects = SeriesVersion.defaultVersion.effects) {
        self.device = device
        self.reference = reference
    }

    /// Kernel-log lines this check provokes on purpose (the hung-task report of its own unbinding
    /// thread): each is reported as provoked instead of failing the check.
    public private(set) var expectedSplats: [(fragment: String, why: String)] = []

    /// What this check set going that ends after it returns and must be seen before the suite ends
    /// (a hung-task report that comes 1-2 s after its child blocked): the latest monotonic time the
    /// suite waits for, and why. A later check usually outlasts it; when none does, the runner waits.
    public private(set) var settle: (until: Double, why: String)?

    /// Adds a diagnostic line.
    public func note(_ text: String) { notes.append(text) }

    /// What the runner does when the check says it only waits from here on (``waitsFromHere()``).
    var onWait: (@Sendable () -> Void)?

    /// From here on the check only waits for the kernel or the host: the runner starts the checks
    /// that run beside it (``CheckInfo/beside``), if any, now instead of after it. Call it from the
    /// check's own thread once every task of the check that could hang has started (a task started
    /// later takes a PID after theirs, and a hung-task report of it would be charged to them).
    public func waitsFromHere() { onWait?() }

    /// Asks the runner not to end the suite before `seconds` from now have passed (see ``settle``).
    public func settle(seconds: Double, because why: String) {
        let until = monotonicSeconds() + seconds
        if until > settle?.until ?? 0 { settle = (until, why) }
    }

    /// Declares that a kernel-log splat containing `fragment` is what this check asked the kernel to print.
    public func expectSplat(containing fragment: String, because why: String) {
        expectedSplats.append((fragment, why))
    }

    /// Why `line` was provoked on purpose, or nil when it is an ordinary splat.
    public func provokedReason(for line: String) -> String? {
        expectedSplats.first { line.contains($0.fragment) }?.why
    }

    /// Records a failure that is not an expectation of the table.
    public func fail(_ text: String) {
        failures.append(text)
        notes.append("FAIL: " + text)
    }

    /// Compares what `operation` did with what the reference kernel does (`ExpectationTable`); a
    /// WARNING the reference prints is added to `expectedWarnings`.
    /// - Returns: whether it matched.
    @discardableResult
    public func expect(_ operation: KernelOperation, observed observation: Observation, device: DeviceKind? = nil, detail: String? = nil) -> Bool {
        let kind = device ?? self.device
        guard let row = ExpectationTable.expectation(for: operation, device: kind) else {
            fail("no expectation in the table for \(operation)")
            return false
        }
        let want = row.outcome(on: reference)
        let baseline = row.outcome(on: .baseline)
        if let site = want.warning { expectedWarnings.append(site) }
        let ok = observation.matches(want)
        var line = "\(operation): expected \(want), observed \(observation)"
        if baseline != want { line += " (baseline 6.12: \(baseline))" }
        if let detail { line += "; \(detail)" }
        notes.append(line)
        if !ok { failures.append(line) }
        if !structuredFromFailure {
            self.expected = "\(operation): \(want)"
            self.observed = "\(operation): \(observation)"
            if case .refused(let seen) = observation { self.errno = seen } else { self.errno = nil }
            structuredFromFailure = !ok
        }
        return ok
    }

    /// Observation of a `Result`: success, or refusal with its errno.
    public static func observation<T>(_ result: Result<T, Errno>) -> Observation {
        switch result {
        case .success: .succeeded
        case .failure(let errno): .refused(errno)
        }
    }
}

/// The host of the lab machine as a check sees it: the request channel and the devices it can
/// unplug and plug again.
public struct HostLink: Sendable {
    public var channel: HostChannel
    public var devices: [HostDevice]
    /// How long the host's monitor and a hot-plug may take (`qmp`, `hotplug`).
    public var limits: LabLimits

    public init(channel: HostChannel, devices: [HostDevice], limits: LabLimits = .standard) {
        self.channel = channel
        self.devices = devices
        self.limits = limits
    }
}

/// Everything a check may use; built once per run.
public final class CheckContext: @unchecked Sendable {
    public let sysfs: Sysfs
    /// The debugfs mount point (the module's and gup_test's files are below it).
    public let debugfs: String
    /// The p2pmem provider under test, if one is published.
    public let provider: P2PMemProvider?
    /// Why there is no provider, as a skip reason.
    public let providerProblem: String?
    /// The RDMA device under test.
    public let rdma: RDMADeviceInfo?
    public let rdmaProblem: String?
    /// The opened test module.
    public let module: TestModule?
    public let moduleProblem: String?
    /// How to start this program as the exit_releases holder child (argv), if the caller supports it.
    public let holderCommand: [String]?
    /// The directory with the kernel's mm selftests built from the running kernel's tree
    /// (`gup_longterm`, `gup_test`), if the caller has them.
    public let selftests: String?
    /// Why there are none, as a skip reason.
    public let selftestsProblem: String?
    /// Every message on stderr-like progress goes here (not KTAP).
    public let log: @Sendable (String) -> Void
    /// The kernel the checks assert (see `CheckRecorder.reference`).
    public let reference: KernelEffects
    /// The lab machine's host, which can unplug and plug devices while a check runs; nil on real
    /// hardware (no QEMU monitor).
    public let host: HostLink?

    public init(
        sysfs: Sysfs, debugfs: String = "/sys/kernel/debug", provider: P2PMemProvider?, providerProblem: String?,
        rdma: RDMADeviceInfo?, rdmaProblem: String?, module: TestModule?, moduleProblem: String?,
        holderCommand: [String]? = nil, reference: KernelEffects = SeriesVersion.defaultVersion.effects,
        selftests: String? = nil, selftestsProblem: String? = nil, host: HostLink? = nil,
        log: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        self.host = host
        self.selftests = selftests
        self.selftestsProblem = selftestsProblem
        self.reference = reference
        self.sysfs = sysfs
        self.debugfs = debugfs
        self.provider = provider
        self.providerProblem = providerProblem
        self.rdma = rdma
        self.rdmaProblem = rdmaProblem
        self.module = module
        self.moduleProblem = moduleProblem
        self.holderCommand = holderCommand
        self.log = log
    }

    /// Why `requirement` is not met, or nil when it is.
    public func problem(_ requirement: Requirement) -> String? {
        switch requirement {
        case .provider: provider == nil ? (providerProblem ?? "no p2pmem provider published") : nil
        case .rdmaDevice: rdma == nil ? (rdmaProblem ?? "no RDMA device") : nil
        case .module: module == nil ? (moduleProblem ?? "test module not loaded") : nil
        case .selftests: selftests == nil ? (selftestsProblem ?? "no kernel selftests given (--selftests DIR)") : nil
        }
    }

    /// The provider, or a skip.
    public func requireProvider() throws -> P2PMemProvider {
        guard let provider else { throw CheckSkip(problem(.provider)!) }
        return provider
    }

    /// The module, or a skip.
    public func requireModule() throws -> TestModule {
        guard let module else { throw CheckSkip(problem(.module)!) }
        return module
    }

    /// The RDMA device, or a skip.
    public func requireRDMA() throws -> RDMADeviceInfo {
        guard let rdma else { throw CheckSkip(problem(.rdmaDevice)!) }
        return rdma
    }

    /// Maps `pages` fresh pages of the provider's p2pmem (untouched: see the fast-pin expectation).
    public func mapP2PMem(pages: Int) throws -> MappedRegion {
        let provider = try requireProvider()
        do {
            return try MappedRegion.shared(path: sysfs.allocatePath(provider.address), length: pages * pageSize)
        } catch {
            throw CheckFailure("mmap of \(sysfs.allocatePath(provider.address)) (\(pages) pages) failed: \(error)")
        }
    }
}

/// One check of the suite: its catalog entry (name, summary, operations, needs) and its body.
public struct CheckDefinition: Sendable {
    public var info: CheckInfo
    public var body: @Sendable (CheckContext, CheckRecorder) throws -> Void

    public var name: String { info.name }
    public var summary: String { info.summary }
    public var operations: [KernelOperation] { info.operations }
    public var requirements: [Requirement] { info.requirements }

    /// The check `name` of `SuiteCatalog` with this body.
    public init(_ name: String, body: @escaping @Sendable (CheckContext, CheckRecorder) throws -> Void) {
        guard let info = SuiteCatalog.check(named: name) else {
            preconditionFailure("check \(name) is not in SuiteCatalog: add its CheckInfo there")
        }
        self.init(info, body: body)
    }

    /// A check with its own catalog entry (tests, and checks outside the suite).
    public init(_ info: CheckInfo, body: @escaping @Sendable (CheckContext, CheckRecorder) throws -> Void) {
        self.info = info
        self.body = body
    }
}
