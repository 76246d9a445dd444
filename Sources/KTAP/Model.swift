import KernelConsole

/// How one test ended, as the host sees it.
///
/// KTAP itself only knows ok/not ok plus directives; `crashed`, `timeout` and `notRun` are what the
/// host infers when the log stops early (kunit_parser.py does the same with its CRASHED status).
public enum TestStatus: String, Sendable, Codable, CaseIterable {
    case pass
    case fail
    case skip
    case crashed
    case timeout
    case notRun

    /// Upper-case word for tables and verdict lines.
    public var label: String {
        switch self {
        case .pass: "PASS"
        case .fail: "FAIL"
        case .skip: "SKIP"
        case .crashed: "CRASHED"
        case .timeout: "TIMEOUT"
        case .notRun: "NOT RUN"
        }
    }

    /// True for outcomes that make a run fail.
    public var isFailure: Bool {
        switch self {
        case .fail, .crashed, .timeout: true
        case .pass, .skip, .notRun: false
        }
    }
}

/// One test (a check, or a suite with subtests) and everything the log said about it.
public struct TestResult: Sendable, Codable, Equatable {
    /// The number on its result line (1-based within its parent).
    public var number: Int
    public var name: String
    public var status: TestStatus
    /// The KTAP directive word as printed (`SKIP`, `TODO`, `XFAIL`, `TIMEOUT`, `ERROR`), if any.
    public var directive: String?
    /// Why it skipped, failed or crashed: the text after `#` on the result line, or the host's reason.
    public var reason: String?
    /// Free-form `# ` lines printed before the result line (structured keys are lifted out of these).
    public var diagnostics: [String]
    /// `# errno: …`: the error the check observed, e.g. `EREMOTEIO`.
    public var errno: String?
    /// `# expected: …`
    public var expected: String?
    /// `# observed: …`
    public var observed: String?
    /// `# splat: …` lines: kernel WARN/BUG/Oops lines the suite saw during this check.
    public var splats: [String]
    /// `# duration_ms: …`, in seconds.
    public var duration: Double?
    public var subtests: [TestResult]
    /// `# trace: …` lines: the kernel report of this test's crash or splat, decoded with the tree's
    /// `scripts/decode_stacktrace.sh` (file:line where the kernel has debug info).
    public var trace: [String]

    public init(
        number: Int, name: String, status: TestStatus, directive: String? = nil, reason: String? = nil,
        diagnostics: [String] = [], errno: String? = nil, expected: String? = nil, observed: String? = nil,
        splats: [String] = [], duration: Double? = nil, subtests: [TestResult] = [], trace: [String] = []
    ) {
        self.trace = trace
        self.number = number
        self.name = name
        self.status = status
        self.directive = directive
        self.reason = reason
        self.diagnostics = diagnostics
        self.errno = errno
        self.expected = expected
        self.observed = observed
        self.splats = splats
        self.duration = duration
        self.subtests = subtests
    }

    enum CodingKeys: String, CodingKey {
        case number, name, status, directive, reason, diagnostics, errno, expected, observed, splats
        case duration, subtests, trace
    }

    // Hand-written so that a results.json written by hand or by an older p2plab, which omits empty
    // arrays, still loads.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        number = try c.decode(Int.self, forKey: .number)
        name = try c.decode(String.self, forKey: .name)
        status = try c.decode(TestStatus.self, forKey: .status)
        directive = try c.decodeIfPresent(String.self, forKey: .directive)
        reason = try c.decodeIfPresent(String.self, forKey: .reason)
        diagnostics = try c.decodeIfPresent([String].self, forKey: .diagnostics) ?? []
        errno = try c.decodeIfPresent(String.self, forKey: .errno)
        expected = try c.decodeIfPresent(String.self, forKey: .expected)
        observed = try c.decodeIfPresent(String.self, forKey: .observed)
        splats = try c.decodeIfPresent([String].self, forKey: .splats) ?? []
        duration = try c.decodeIfPresent(Double.self, forKey: .duration)
        subtests = try c.decodeIfPresent([TestResult].self, forKey: .subtests) ?? []
        trace = try c.decodeIfPresent([String].self, forKey: .trace) ?? []
    }

    // Empty lists are left out so results.json stays readable; the decoder above restores them.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(number, forKey: .number)
        try c.encode(name, forKey: .name)
        try c.encode(status, forKey: .status)
        try c.encodeIfPresent(directive, forKey: .directive)
        try c.encodeIfPresent(reason, forKey: .reason)
        if !diagnostics.isEmpty { try c.encode(diagnostics, forKey: .diagnostics) }
        try c.encodeIfPresent(errno, forKey: .errno)
        try c.encodeIfPresent(expected, forKey: .expected)
        try c.encodeIfPresent(observed, forKey: .observed)
        if !splats.isEmpty { try c.encode(splats, forKey: .splats) }
        try c.encodeIfPresent(duration, forKey: .duration)
        if !subtests.isEmpty { try c.encode(subtests, forKey: .subtests) }
        if !trace.isEmpty { try c.encode(trace, forKey: .trace) }
    }

    /// The first frames of ``trace`` that say where, `func (file.c:123) ← caller (…)`, or nil.
    public var traceSummary: String? {
        trace.isEmpty ? nil : StackTrace.summary(StackTrace.frames(trace))
    }

    /// One short phrase for the "errno/diagnostic" column: errno, reason, expectation, first splat.
    public var summary: String {
        var parts: [String] = []
        let outcome = (reason?.isEmpty ?? true) ? observedAgainstExpected : nil
        // The errno leads unless the observed outcome already says it.
        if let errno, !(outcome?.contains(errno) ?? false) { parts.append(errno) }
        if let reason, !reason.isEmpty {
            parts.append(reason)
        } else if let outcome {
            parts.append(outcome)
        }
        if let splat = splats.first { parts.append(splat) }
        // A crash leads with where it happened: the reason is the panic line, the same for every crash.
        if status == .crashed, let at = traceSummary { parts.insert("at " + at, at: 0) }
        if parts.isEmpty, status != .pass, let last = diagnostics.last { parts.append(last) }
        return parts.joined(separator: "; ")
    }

    /// What was observed first, then whether it was expected: "ibv_reg_mr p2pmem: EREMOTEIO, as
    /// expected" or "ibv_reg_mr p2pmem: EFAULT, expected EREMOTEIO", so a clipped column still
    /// shows the word that matters.
    public var observedAgainstExpected: String? {
        guard let observed else { return nil }
        guard let expected else { return observed }
        func split(_ text: String) -> (String, String) {
            guard let range = text.range(of: ": ", options: .backwards) else { return ("", text) }
            return (String(text[..<range.lowerBound]), String(text[range.upperBound...]))
        }
        let (what, got) = split(observed), (wanted, want) = split(expected)
        if got == want || (status == .pass && what == wanted) { return "\(observed), as expected" }
        return "\(observed), expected \(what == wanted ? want : expected)"
    }
}

/// A line of the input the parser could not make sense of, or a KTAP rule the input broke.
public struct ParseIssue: Sendable, Codable, Equatable, CustomStringConvertible {
    /// 1-based line number in the parsed text; 0 when the issue is about the whole input.
    public var line: Int
    public var message: String

    public init(line: Int, message: String) {
        self.line = line
        self.message = message
    }

    public var description: String { line > 0 ? "line \(line): \(message)" : message }
}

/// Run-level facts the caller records (kernel, series commits, machine, …), kept in insertion order.
///
/// The KTAP room does not interpret them, it only carries them into every rendering. In JSON they are
/// an object with sorted keys so two results.json files diff cleanly; decoding therefore yields them
/// sorted by key.
public struct RunMetadata: Sendable, Equatable, Codable, ExpressibleByDictionaryLiteral, Sequence {
    /// Keys the rest of p2plab uses, so every writer spells them the same way.
    public enum Keys {
        public static let kernel = "kernel"
        public static let seriesCommits = "series_commits"
        public static let configHash = "config_hash"
        public static let machine = "machine"
        public static let accel = "accel"
        public static let qemuCommandLine = "qemu_command_line"
        public static let p2plabVersion = "p2plab_version"
        /// "1" when the kernel ran with panic_on_warn=1.
        public static let panicOnWarn = "panic_on_warn"
    }

    public struct Entry: Sendable, Equatable {
        public var key: String
        public var value: String
    }

    public private(set) var entries: [Entry] = []

    public init() {}

    public typealias Key = String
    public typealias Value = String

    public init(dictionaryLiteral elements: (String, String)...) {
        for (key, value) in elements { self[key] = value }
    }

    /// The value for `key`; assigning nil removes it, assigning a new key appends it.
    public subscript(key: String) -> String? {
        get { entries.first { $0.key == key }?.value }
        set {
            let index = entries.firstIndex { $0.key == key }
            switch (index, newValue) {
            case let (index?, value?): entries[index].value = value
            case let (index?, nil): entries.remove(at: index)
            case let (nil, value?): entries.append(Entry(key: key, value: value))
            case (nil, nil): break
            }
        }
    }

    public var isEmpty: Bool { entries.isEmpty }

    public func makeIterator() -> IndexingIterator<[Entry]> { entries.makeIterator() }

    struct DynamicKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: DynamicKey.self)
        for key in c.allKeys.sorted(by: { $0.stringValue < $1.stringValue }) {
            self[key.stringValue] = try c.decode(String.self, forKey: key)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: DynamicKey.self)
        for entry in entries { try c.encode(entry.value, forKey: DynamicKey(stringValue: entry.key)) }
    }
}

/// How the log of a run ended.
public enum RunEnding: String, Sendable, Codable, CaseIterable {
    /// Every planned test reported a result (or there was no plan to hold it to).
    case complete
    /// The log stopped before the plan was complete and shows no panic: something killed the suite
    /// or the capture.
    case truncated
    /// The console shows a kernel panic.
    case panic
    /// The host gave up waiting (QEMU timeout).
    case timedOut
}

/// The overall outcome of a run, worst first.
public enum Verdict: String, Sendable, Codable, CaseIterable {
    case timeout = "TIMEOUT"
    case crashed = "CRASHED"
    case fail = "FAIL"
    /// No KTAP was found at all: nothing can be said about the kernel.
    case noResults = "NO RESULTS"
    /// Every test skipped: nothing was tested, which is not a pass (kselftest's exit 4).
    case skipped = "SKIPPED"
    case pass = "PASS"
}

/// How many leaf tests ended each way.
public struct TestCounts: Sendable, Codable, Equatable {
    public var passed = 0
    public var failed = 0
    public var skipped = 0
    public var crashed = 0
    public var timedOut = 0
    public var notRun = 0

    public init() {}

    public var total: Int { passed + failed + skipped + crashed + timedOut + notRun }

    mutating func add(_ status: TestStatus) {
        switch status {
        case .pass: passed += 1
        case .fail: failed += 1
        case .skip: skipped += 1
        case .crashed: crashed += 1
        case .timeout: timedOut += 1
        case .notRun: notRun += 1
        }
    }

    /// `12 passed, 1 failed, 3 skipped`: only the non-zero counts, in a fixed order.
    public var phrase: String {
        let parts = [
            (passed, "passed"), (failed, "failed"), (crashed, "crashed"), (timedOut, "timed out"),
            (skipped, "skipped"), (notRun, "not run"),
        ].filter { $0.0 > 0 }.map { "\($0.0) \($0.1)" }
        return parts.isEmpty ? "no tests" : parts.joined(separator: ", ")
    }
}

/// Everything known about one run of the suite: what the caller recorded, what the log said.
public struct TestRun: Sendable, Equatable, Codable {
    public var metadata: RunMetadata
    /// The top-level plan (`1..N`), if the log had one.
    public var plan: Int?
    public var tests: [TestResult]
    /// `# ` lines that belong to no test: before the plan, or after the last result.
    public var diagnostics: [String]
    public var ending: RunEnding
    public var parseErrors: [ParseIssue]
    public var consoleFindings: [ConsoleFinding]

    public init(
        metadata: RunMetadata = [:], plan: Int? = nil, tests: [TestResult] = [], diagnostics: [String] = [],
        ending: RunEnding = .complete, parseErrors: [ParseIssue] = [], consoleFindings: [ConsoleFinding] = []
    ) {
        self.metadata = metadata
        self.plan = plan
        self.tests = tests
        self.diagnostics = diagnostics
        self.ending = ending
        self.parseErrors = parseErrors
        self.consoleFindings = consoleFindings
    }

    /// The tests that carry the outcome: tests without subtests, plus any parent whose own failure
    /// is not explained by one of its subtests (so a failed teardown is not lost).
    public var leaves: [(path: [String], test: TestResult)] {
        var out: [(path: [String], test: TestResult)] = []
        func walk(_ test: TestResult, _ parents: [String]) {
            if test.subtests.isEmpty {
                out.append((parents, test))
                return
            }
            let before = out.count
            for sub in test.subtests { walk(sub, parents + [test.name]) }
            if test.status.isFailure, !out[before...].contains(where: { $0.test.status.isFailure }) {
                out.append((parents, test))
            }
        }
        for test in tests { walk(test, []) }
        return out
    }

    public var counts: TestCounts {
        var counts = TestCounts()
        for leaf in leaves { counts.add(leaf.test.status) }
        return counts
    }

    public var crashed: Bool {
        ending == .panic || ending == .truncated || leaves.contains { $0.test.status == .crashed }
    }

    public var verdict: Verdict {
        let counts = counts
        if ending == .timedOut || counts.timedOut > 0 { return .timeout }
        if crashed { return .crashed }
        if counts.failed > 0 { return .fail }
        if counts.total == 0 { return .noResults }
        if counts.passed == 0 && counts.skipped > 0 { return .skipped }
        return .pass
    }

    /// `verdict: PASS (12 passed, 3 skipped)`
    public var verdictLine: String { "verdict: \(verdict.rawValue) (\(counts.phrase))" }

    enum CodingKeys: String, CodingKey {
        case metadata, plan, tests, diagnostics, ending, parseErrors, consoleFindings
        // Written for readers of results.json (CI, jq); recomputed, not trusted, on decode.
        case verdict, counts
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        metadata = try c.decodeIfPresent(RunMetadata.self, forKey: .metadata) ?? [:]
        plan = try c.decodeIfPresent(Int.self, forKey: .plan)
        tests = try c.decodeIfPresent([TestResult].self, forKey: .tests) ?? []
        diagnostics = try c.decodeIfPresent([String].self, forKey: .diagnostics) ?? []
        ending = try c.decodeIfPresent(RunEnding.self, forKey: .ending) ?? .complete
        parseErrors = try c.decodeIfPresent([ParseIssue].self, forKey: .parseErrors) ?? []
        consoleFindings = try c.decodeIfPresent([ConsoleFinding].self, forKey: .consoleFindings) ?? []
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(metadata, forKey: .metadata)
        try c.encodeIfPresent(plan, forKey: .plan)
        try c.encode(tests, forKey: .tests)
        try c.encode(diagnostics, forKey: .diagnostics)
        try c.encode(ending, forKey: .ending)
        try c.encode(parseErrors, forKey: .parseErrors)
        try c.encode(consoleFindings, forKey: .consoleFindings)
        try c.encode(verdict, forKey: .verdict)
        try c.encode(counts, forKey: .counts)
    }
}
