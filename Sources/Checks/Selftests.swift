import Catalog
import Foundation
import KTAP
import LabSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// How a program the suite ran ended.
public struct ProgramEnd: Sendable, Equatable {
    /// Exit status, or the signal number when `signaled`.
    public var status: Int32
    public var signaled: Bool

    public init(status: Int32, signaled: Bool) {
        self.status = status
        self.signaled = signaled
    }

    /// `exit 1`, `killed by signal 11 (SIGSEGV)`.
    public var description: String {
        guard signaled else { return "exit \(status)" }
        let names: [Int32: String] = [6: "SIGABRT", 7: "SIGBUS", 9: "SIGKILL", 11: "SIGSEGV", 15: "SIGTERM"]
        return "killed by signal \(status)" + (names[status].map { " (\($0))" } ?? "")
    }
}

/// The TAP a kselftest program prints (`TAP version 13`, `1..N`, `ok N text`, `# ` lines), turned
/// into nested results for the suite's KTAP.
public enum SelftestOutput {
    /// The program's cases, in its order.
    ///
    /// gup_longterm names every result by its verdict text ("Should have worked") and says which case
    /// it was in the `# [RUN] …` line before it; that line becomes the name and the verdict text the
    /// reason, so each case can be told apart. A program that died mid-run (a signal, or an exit
    /// without all its results) gets its case in progress as a failure that says so, and the rest as
    /// not run.
    public static func cases(program: String, output: String, end: ProgramEnd) -> [TestResult] {
        let parsed = KTAPParser.parse(output)
        var cases: [TestResult] = []
        var died = false
        for var test in parsed.tests {
            if let run = test.diagnostics.first(where: { $0.hasPrefix("[RUN] ") }) {
                let own = test.name
                test.name = String(run.dropFirst("[RUN] ".count))
                if !own.isEmpty, own != "(unnamed)" { test.reason = [own, test.reason].compactMap { $0 }.joined(separator: ": ") }
                test.diagnostics.removeAll { $0 == run }
            }
            switch test.status {
            case .crashed, .timeout:
                // The parser's word for "the log stops here": the program, not the kernel, stopped.
                test.status = .fail
                test.reason = "\(program) \(end.description) before this case's result line"
                died = true
            case .notRun where died || end.signaled || end.status != 0:
                test.reason = "\(program) stopped (\(end.description)) before this case"
            default:
                break
            }
            cases.append(test)
        }
        return cases
    }

    /// The `# Totals: pass:24 fail:0 …` line kselftest prints last, if any.
    public static func totals(_ output: String) -> String? {
        output.split(whereSeparator: \.isNewline).last { $0.hasPrefix("# Totals:") }.map { String($0.dropFirst(2)) }
    }
}

/// Runs `arguments` from a check's thread, collecting stdout and stderr, bounded by `timeout`.
func runProgram(_ arguments: [String], in directory: String? = nil, timeout: Double = 300) -> Result<RunResult, any Error> {
    let box = WatchdogBox<Result<RunResult, any Error>>()
    let done = DispatchSemaphore(value: 0)
    Task {
        do {
            box.value = .success(try await Runner().capture(Command(arguments, in: directory), timeout: timeout))
        } catch {
            box.value = .failure(error)
        }
        done.signal()
    }
    done.wait()
    return box.value ?? .failure(CheckFailure("\(arguments.first ?? "?") did not report"))
}

extension Suite {
    /// Path of one of the kernel's selftest programs, or a skip that says how to get it.
    static func selftestProgram(_ ctx: CheckContext, _ name: String) throws -> String {
        guard let dir = ctx.selftests else {
            throw CheckSkip(ctx.selftestsProblem ?? "no kernel selftests given (--selftests DIR)")
        }
        let path = dir + "/" + name
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw CheckFailure("\(path) is missing: rebuild the selftests (p2plab test builds them beside the kernel)")
        }
        return path
    }

    static let selftestChecks: [CheckDefinition] = [
        CheckDefinition("selftest.gup_longterm") { ctx, rec in
            let program = try selftestProgram(ctx, "gup_longterm")
            // Its "local tmpfile" cases use the working directory: put it on a real filesystem.
            var directory = "/tmp"
            var mounted: Mount?
            if let (controller, namespace) = ctx.sysfs.scratchNamespace() {
                let device = "/dev/\(namespace)"
                let ext4 = try mountScratch(device, at: "/run/p2plab-gup-longterm", rec: rec)
                rec.note("working directory \(ext4.path): ext4 on \(device) of \(controller.name): the 'local tmpfile' cases pin ext4 pages")
                directory = ext4.path
                mounted = ext4
            } else {
                rec.fail("no NVMe namespace without a CMB for ext4: the 'local tmpfile' cases would pin tmpfs, not a real filesystem (add a second NVMe)")
            }
            defer { mounted?.unmount(rec) }
            if !FileManager.default.fileExists(atPath: ctx.sysfs.path("kernel/mm/hugepages")) {
                rec.note("hugetlb: this kernel has no huge page sizes (CONFIG_HUGETLBFS off), so gup_longterm runs no hugetlb cases")
            }
            rec.note("+ cd \(directory) && \(program)")
            let ran = try runProgram([program], in: directory, timeout: LabLimits.standard.selftest).mapError { CheckFailure("\(program): \($0)") }.get()
            let end = ProgramEnd(status: ran.status, signaled: ran.signaled)
            let cases = SelftestOutput.cases(program: "gup_longterm", output: ran.standardOutput, end: end)
            rec.addSubtests(cases)
            if let totals = SelftestOutput.totals(ran.standardOutput) { rec.note("gup_longterm: \(totals) (\(end.description))") }
            for line in ran.standardError.split(whereSeparator: \.isNewline).suffix(5) { rec.note("gup_longterm stderr: \(line)") }
            let failed = cases.filter { $0.status != .pass }
            if cases.isEmpty {
                rec.fail("gup_longterm printed no results (\(end.description)): \(ran.standardOutput.lastLines(5))")
            }
            let sharedExt4 = cases.filter { $0.name.contains("R/W") && $0.name.contains("MAP_SHARED") && $0.name.hasSuffix("with local tmpfile") }
            if mounted != nil, sharedExt4.isEmpty, !cases.isEmpty { rec.fail("no R/W MAP_SHARED case ran on ext4 ('with local tmpfile')") }
            rec.expect(
                .gupLongtermCases, observed: failed.isEmpty && !cases.isEmpty ? .succeeded : .refused(nil),
                detail: "\(cases.count - failed.count) of \(cases.count) cases pass"
                    + (failed.isEmpty ? "" : "; not passing: " + failed.map { "\($0.number) \($0.name) (\($0.status.label))" }.joined(separator: "; ")))
        },
        CheckDefinition("selftest.gup_test") { ctx, rec in
            let program = try selftestProgram(ctx, "gup_test")
            let module = try ctx.requireModule()
            let provider = try ctx.requireProvider()
            let allocate = ctx.sysfs.allocatePath(provider.address)
            let log = KmsgLog()
            var subtests: [TestResult] = []
            for run in GupTestRun.all {
                log.mark("p2plab: gup_test \(run.arguments.joined(separator: " "))")
                let arguments = [program] + run.arguments + ["-f", allocate]
                let ran = try runProgram(arguments, timeout: LabLimits.standard.selftest).mapError { CheckFailure("\(program): \($0)") }.get()
                let kernel = splats(in: log.linesSinceMark())
                var test = TestResult(number: 0, name: run.name, status: .pass)
                test.diagnostics.append("+ " + shellQuote(arguments))
                for line in ran.standardOutput.split(whereSeparator: \.isNewline) { test.diagnostics.append("gup_test: \(line)") }
                for line in kernel { test.splats.append(line) }
                let oracle = GupTestRun.observation(output: ran.standardOutput, bytes: run.bytes, end: ProgramEnd(status: ran.status, signaled: ran.signaled))
                let region = try ctx.mapP2PMem(pages: pinPages)
                let mine = CheckRecorder.observation(module.pinResult(address: region.address, pages: pinPages, flags: run.moduleFlags))
                region.unmap()
                let problems = judge(run.operation, oracle: oracle, module: mine, what: "gup_test \(run.cli)", rec: rec)
                test.observed = "gup_test \(oracle.map(\.description) ?? "unreadable"), module \(mine)"
                test.expected = ExpectationTable.outcome(for: run.operation, on: ctx.reference).map(\.description)
                if !problems.isEmpty || !kernel.isEmpty {
                    test.status = .fail
                    test.reason = (problems + kernel.prefix(1).map { "kernel: \($0)" }).joined(separator: "; ")
                }
                subtests.append(test)
            }
            guard let gup = try? GupTest(debugfs: ctx.debugfs) else {
                rec.addSubtests(subtests)
                throw CheckFailure("cannot open \(ctx.debugfs)/gup_test for PIN_LONGTERM_TEST_START (CONFIG_GUP_TEST)")
            }
            // The positive control: START/READ really pins and reads back a tmpfs page's content.
            subtests.append(startReadControl(gup, rec: rec))
            for start in GupLongtermTestStart.all {
                let region = try ctx.mapP2PMem(pages: pinPages)
                let result = gup.startLongtermTest(address: region.address, length: region.length, write: start.write, fast: start.fast)
                if case .success = result { gup.stopLongtermTest() }
                let oracle = CheckRecorder.observation(result)
                let mine = CheckRecorder.observation(module.pinResult(address: region.address, pages: pinPages, flags: start.moduleFlags))
                region.unmap()
                let problems = judge(start.operation, oracle: oracle, module: mine, what: "PIN_LONGTERM_TEST_START \(start.label)", rec: rec)
                var test = TestResult(number: 0, name: "PIN_LONGTERM_TEST_START \(start.label) p2pmem", status: problems.isEmpty ? .pass : .fail)
                test.observed = "gup_test \(oracle), module \(mine)"
                test.expected = ExpectationTable.outcome(for: start.operation, on: ctx.reference).map(\.description)
                if !problems.isEmpty { test.reason = problems.joined(separator: "; ") }
                subtests.append(test)
            }
            rec.note("PIN_LONGTERM_TEST_START passes only FOLL_LONGTERM[|FOLL_WRITE] (never FOLL_PCI_P2PDMA): on p2pmem it shows the kernel's refusal, which the module's pins without P2PDMA must match")
            rec.addSubtests(subtests)
        },
    ]

    /// Compares gup_test's observation with the series' expectation and with the module's.
    /// - Returns: the problems, one line each (also recorded).
    static func judge(_ operation: KernelOperation, oracle: Observation?, module: Observation, what: String, rec: CheckRecorder) -> [String] {
        var problems: [String] = []
        guard let oracle else {
            let line = "\(what): output unreadable (no result line)"
            rec.fail(line)
            return [line]
        }
        if !rec.expect(operation, observed: oracle, detail: "\(what); module: \(module)") {
            problems.append("\(operation): expected \(ExpectationTable.outcome(for: operation, on: rec.reference).map(\.description) ?? "?"), gup_test \(oracle)")
        }
        if !oracle.agrees(with: module) {
            let line = "\(what): gup_test \(oracle) but the module's pin \(module): they disagree on the same operation"
            rec.fail(line)
            problems.append(line)
        }
        return problems
    }

    /// START + READ of a tmpfs page with a known pattern: the oracle's own positive control.
    static func startReadControl(_ gup: GupTest, rec: CheckRecorder) -> TestResult {
        var test = TestResult(number: 0, name: "PIN_LONGTERM_TEST_START/READ R/W tmpfs (control)", status: .pass)
        func fail(_ text: String) {
            test.status = .fail
            test.reason = text
            rec.fail("gup_test control: \(text)")
        }
        let path = "/dev/shm/p2plab-gup-control"
        let pages = 4
        guard FileManager.default.createFile(atPath: path, contents: Data(repeating: 0, count: pages * pageSize)),
              let region = try? MappedRegion.shared(path: path, length: pages * pageSize)
        else {
            fail("cannot map \(path)")
            return test
        }
        defer {
            region.unmap()
            try? FileManager.default.removeItem(atPath: path)
        }
        region.fill(seed: 7)
        switch gup.startLongtermTest(address: region.address, length: region.length, write: true, fast: false) {
        case .failure(let errno):
            fail("START on tmpfs failed: \(errno)")
        case .success:
            let copy = UnsafeMutableRawPointer.allocate(byteCount: region.length, alignment: pageSize)
            defer { copy.deallocate() }
            if case .failure(let errno) = gup.readLongtermTest(into: copy) {
                fail("READ failed: \(errno)")
            } else if memcmp(copy, region.base, region.length) != 0 {
                fail("READ returned other bytes than the pinned pages hold")
            } else {
                test.diagnostics.append("START pinned \(pages) tmpfs pages, READ returned their pattern intact")
            }
            gup.stopLongtermTest()
        }
        return test
    }
}

extension Observation {
    /// Whether two observations of the same operation say the same thing (an unknown errno agrees
    /// with any errno).
    func agrees(with other: Observation) -> Bool {
        switch (self, other) {
        case (.succeeded, .succeeded), (.fellBackToSlowPath, .fellBackToSlowPath): true
        case (.succeeded, .fellBackToSlowPath), (.fellBackToSlowPath, .succeeded): true
        case (.refused(let a), .refused(let b)): a == nil || b == nil || a == b
        default: false
        }
    }
}

/// One gup_test invocation on p2pmem and the module pin it must agree with.
struct GupTestRun: Sendable {
    /// `-L` or `-a`.
    var command: String
    var p2pdma: Bool
    var write: Bool
    /// 1 MiB: `-m 1`, in 256-page calls.
    var bytes: Int { 1 << 20 }

    static let all: [GupTestRun] = [
        GupTestRun(command: "-L", p2pdma: true, write: true), GupTestRun(command: "-L", p2pdma: true, write: false),
        GupTestRun(command: "-L", p2pdma: false, write: true), GupTestRun(command: "-a", p2pdma: true, write: true),
        GupTestRun(command: "-a", p2pdma: false, write: true),
    ]

    /// The kernel's FOLL_* numbering in 6.12: FOLL_PCI_P2PDMA is 1 << 10; gup_test adds FOLL_WRITE itself.
    var flagsArgument: String { p2pdma ? "0x400" : "0" }
    var arguments: [String] {
        [command, "-S", "-m", "1", "-n", "256", "-r", "1", "-F", flagsArgument] + (write ? [] : ["-W"])
    }
    var cli: String { "\(command)\(write ? "" : " -W") -F \(flagsArgument)" }
    var longterm: Bool { command == "-L" }
    var name: String {
        let which = longterm ? "PIN_LONGTERM_BENCHMARK" : "PIN_FAST_BENCHMARK"
        let flags = (longterm ? ["FOLL_LONGTERM"] : []) + (write ? ["FOLL_WRITE"] : []) + (p2pdma ? ["FOLL_PCI_P2PDMA"] : [])
        return "\(which) (gup_test \(cli)) \(flags.joined(separator: "|")) p2pmem"
    }
    /// -L is pin_user_pages(FOLL_LONGTERM|…), -a pin_user_pages_fast(…).
    var moduleFlags: PinFlags {
        var flags: PinFlags = []
        if longterm { flags.insert(.longterm) } else { flags.insert(.fast) }
        if write { flags.insert(.write) }
        if p2pdma { flags.insert(.p2pdma) }
        return flags
    }
    var operation: KernelOperation { .pin(.p2pmem, moduleFlags) }

    /// What gup_test's output says happened: its TAP says `ok` whatever was pinned, so the judge is
    /// the "truncated (size: N)" it prints when it pinned less than asked. nil: no result line.
    static func observation(output: String, bytes: Int, end: ProgramEnd) -> Observation? {
        guard output.contains("ok 1 ioctl status") else { return nil }
        if output.contains("not ok 1 ioctl status") { return .refused(nil) }
        if let range = output.range(of: "truncated (size: ", options: .caseInsensitive) {
            let digits = output[range.upperBound...].prefix { $0.isNumber }
            let pinned = Int(digits) ?? -1
            if pinned == 0 { return .refused(nil) }
            // Part of it: neither a refusal nor the whole; the caller shows the text.
            return pinned == bytes ? .succeeded : .refused(nil)
        }
        return .succeeded
    }
}

/// PIN_LONGTERM_TEST_START on p2pmem and the module pin of the same flags.
struct GupLongtermTestStart: Sendable {
    var write: Bool
    var fast: Bool

    static let all: [GupLongtermTestStart] = [
        GupLongtermTestStart(write: false, fast: false), GupLongtermTestStart(write: true, fast: false),
        GupLongtermTestStart(write: false, fast: true), GupLongtermTestStart(write: true, fast: true),
    ]

    var label: String { (write ? "R/W" : "R/O") + (fast ? " GUP-fast" : " GUP") }
    var moduleFlags: PinFlags {
        var flags: PinFlags = [.longterm]
        if write { flags.insert(.write) }
        if fast { flags.insert(.fast) }
        return flags
    }
    var operation: KernelOperation { .pin(.p2pmem, moduleFlags) }
}
