import KernelConsole
import Foundation

/// Reads KTAP version 1 (Documentation/dev-tools/ktap.rst) out of any text: a clean results file, or a
/// serial console capture where the suite's lines are mixed with kernel messages, printk timestamps
/// and carriage returns.
///
/// It never throws: what it cannot understand becomes a ``ParseIssue`` on the result, the way
/// tools/testing/kunit/kunit_parser.py collects errors instead of stopping. p2plab's suite prints a
/// check's `# ` diagnostics before its result line, so pending diagnostics belong to the next result;
/// `# errno:`, `# expected:`, `# observed:`, `# splat:` and `# duration_ms:` also fill fields.
public enum KTAPParser {
    /// What the host knows about the run that the log cannot say.
    public struct Options: Sendable {
        /// The host stopped the run because it took too long: the running test is TIMEOUT, not CRASHED.
        public var timedOut: Bool
        /// A separate console capture to scan for splats and panics, when the KTAP came over another
        /// channel (a clean results file, a second serial port). Nil scans the parsed text itself.
        public var consoleLog: String?
        /// The checks the suite planned to run, in order, so tests the log never reached get names.
        public var expectedNames: [String]
        /// Run metadata; it wins over `# key: value` lines in the KTAP header.
        public var metadata: RunMetadata

        public init(
            timedOut: Bool = false, consoleLog: String? = nil, expectedNames: [String] = [],
            metadata: RunMetadata = [:]
        ) {
            self.timedOut = timedOut
            self.consoleLog = consoleLog
            self.expectedNames = expectedNames
            self.metadata = metadata
        }
    }

    /// Diagnostic keys that also fill a field of ``TestResult``.
    public static let structuredKeys: Set<String> = ["duration_ms", "errno", "expected", "observed", "splat", "trace"]

    /// Parses `text`; see ``Options`` for what the host can add.
    public static func parse(_ text: String, options: Options = Options()) -> TestRun {
        var state = ParseState(options: options)
        let findings = ConsoleScanner.scan(options.consoleLog ?? text)
        state.findings = findings
        state.panic = findings.first { $0.kind == .panic }
        // Line numbers of findings only match ours when they come from the same text.
        state.findingsShareLines = options.consoleLog == nil
        var number = 0
        // A line of the suite's that a kernel message cut in two is read whole, at its continuation.
        for raw in ConsoleLines.split(text) {
            number += 1
            state.feed(KTAPLine(cleaning: Substring(raw)), at: number)
        }
        return state.finish(lineCount: text.last?.isConsoleLineBreak == true ? number - 1 : number)
    }

    /// Parses `text`; `timedOut` says the host gave up waiting, so the running test is TIMEOUT.
    public static func parse(_ text: String, timedOut: Bool) -> TestRun {
        parse(text, options: Options(timedOut: timedOut))
    }
}

/// One input line, stripped of console decoration and classified.
struct KTAPLine: Equatable {
    enum Kind: Equatable {
        case version
        case plan(count: Int, skipReason: String?)
        case result(ok: Bool, number: Int, name: String, directive: String?, data: String?)
        case diagnostic(String)
        case unknown
    }

    /// Nesting level: two spaces (or one tab, as older KUnit printed) per level.
    var depth: Int
    var kind: Kind

    init(depth: Int, kind: Kind) {
        self.depth = depth
        self.kind = kind
    }

    init(cleaning raw: Substring) {
        let line = Self.stripDecoration(raw)
        var width = 0
        var rest = Substring(line)
        while let first = rest.first, first == " " || first == "\t" {
            width += first == "\t" ? 2 : 1
            rest = rest.dropFirst()
        }
        depth = width / 2
        kind = Self.classify(rest)
    }

    /// Drops `\r`, ANSI escapes, a syslog level `<6>` and printk prefixes (`[    3.141592] `,
    /// `[    3.141592][    T1] `, dmesg -T dates) so the KTAP indentation is what remains.
    static func stripDecoration(_ raw: Substring) -> String {
        var chars: [Character] = []
        chars.reserveCapacity(raw.count)
        var iterator = raw.makeIterator()
        while let c = iterator.next() {
            if c == "\r" { continue }
            if c == "\u{1B}" {
                // CSI sequences from firmware and getty (`ESC [ ... letter`); a lone ESC is dropped.
                guard let next = iterator.next() else { break }
                if next == "[" {
                    while let p = iterator.next(), !(p.isLetter || p == "~") {}
                }
                continue
            }
            chars.append(c)
        }
        var rest = Substring(String(chars))
        if rest.first == "<", let close = rest.firstIndex(of: ">"),
            rest[rest.index(after: rest.startIndex)..<close].allSatisfy(\.isNumber)
        {
            rest = rest[rest.index(after: close)...]
        }
        var stripped = false
        // KTAP lines never start with "[", so any bracket group there is decoration.
        while rest.first == "[", let close = rest.firstIndex(of: "]"),
            rest.distance(from: rest.startIndex, to: close) < 48
        {
            rest = rest[rest.index(after: close)...]
            stripped = true
        }
        // printk separates its prefix from the message with exactly one space; the rest is indent.
        if stripped, rest.first == " " { rest = rest.dropFirst() }
        return String(rest)
    }

    static func classify(_ text: Substring) -> Kind {
        if text.hasPrefix("KTAP version ") || text.hasPrefix("TAP version ") { return .version }
        // "# text" or a bare "#"; kernel lines such as "#PF: supervisor read access" are not KTAP.
        if text == "#" || text.hasPrefix("# ") {
            return .diagnostic(String(text.dropFirst(2).trimmingTrailingWhitespace()))
        }
        if text.hasPrefix("1..") { return plan(text.dropFirst(3)) }
        if text.hasPrefix("ok ") { return result(ok: true, text.dropFirst(3)) }
        if text.hasPrefix("not ok ") { return result(ok: false, text.dropFirst(7)) }
        return .unknown
    }

    private static func plan(_ text: Substring) -> Kind {
        let digits = text.prefix(while: \.isNumber)
        guard let count = Int(digits) else { return .unknown }
        let tail = text.dropFirst(digits.count).trimmingCharacters(in: .whitespaces)
        if tail.isEmpty { return .plan(count: count, skipReason: nil) }
        guard tail.hasPrefix("#") else { return .unknown }
        let (directive, data) = splitDirective(tail.dropFirst())
        return .plan(count: count, skipReason: directive == "SKIP" ? (data ?? "") : nil)
    }

    private static func result(ok: Bool, _ text: Substring) -> Kind {
        let digits = text.prefix(while: \.isNumber)
        // A number is what tells a result line from a kernel message that happens to start with "ok".
        guard let number = Int(digits) else { return .unknown }
        var rest = text.dropFirst(digits.count)
        guard rest.isEmpty || rest.first == " " || rest.first == "#" else { return .unknown }
        var directive: String?
        var data: String?
        if let hash = rest.firstIndex(of: "#") {
            (directive, data) = splitDirective(rest[rest.index(after: hash)...])
            rest = rest[..<hash]
        }
        var name = rest.trimmingCharacters(in: .whitespaces)
        if name.hasPrefix("- ") { name = String(name.dropFirst(2)).trimmingCharacters(in: .whitespaces) }
        return .result(ok: ok, number: number, name: name, directive: directive, data: data)
    }

    static let directives = ["SKIP", "TODO", "XFAIL", "TIMEOUT", "ERROR"]

    /// Splits `SKIP reason` into the directive word and its data; unknown words are all data.
    private static func splitDirective(_ text: Substring) -> (String?, String?) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let word = trimmed.prefix { !$0.isWhitespace }
        let upper = word.uppercased()
        // TAP allows "skip", "Skipped" and friends.
        if let directive = directives.first(where: { upper.hasPrefix($0) }) {
            let data = trimmed.dropFirst(word.count).trimmingCharacters(in: .whitespaces)
            return (directive, data.isEmpty ? nil : data)
        }
        return (nil, trimmed.isEmpty ? nil : trimmed)
    }
}

extension Substring {
    fileprivate func trimmingTrailingWhitespace() -> Substring {
        var end = endIndex
        while end > startIndex, self[index(before: end)].isWhitespace { end = index(before: end) }
        return self[startIndex..<end]
    }
}

/// One level of nesting while parsing.
private struct Frame {
    var depth: Int
    /// From a `# Subtest: name` line (TAP14 / KUnit), used when the parent's result never comes.
    var name: String?
    var plan: Int?
    var tests: [TestResult] = []
    /// Diagnostics since the last result line, with their line numbers: they belong to the next test.
    var pending: [(line: Int, text: String)] = []
    /// A finished subtest block waiting for its parent's result line at this level.
    var child: [TestResult]?
    var childName: String?
    /// `# ` lines of a subtest block before its plan (KUnit's `# module:`): they describe the parent.
    var header: [String] = []
    var childHeader: [String] = []
    /// Tests of earlier KTAP documents at the top level, so numbering restarts per document.
    var numberBase = 0
    var hasContent: Bool { plan != nil || !tests.isEmpty || !pending.isEmpty || child != nil }

    init(depth: Int) { self.depth = depth }
}

private struct ParseState {
    let options: KTAPParser.Options
    var findings: [ConsoleFinding] = []
    var panic: ConsoleFinding?
    var findingsShareLines = true
    var stack: [Frame] = [Frame(depth: 0)]
    var sawKTAP = false
    var runDiagnostics: [String] = []
    var metadata: RunMetadata = [:]
    var issues: [ParseIssue] = []
    var totalPlan: Int?
    var lastResultLine = 0

    init(options: KTAPParser.Options) { self.options = options }

    mutating func feed(_ line: KTAPLine, at number: Int) {
        if case .unknown = line.kind { return }
        if !sawKTAP {
            switch line.kind {
            case .version: break
            case .diagnostic: return  // `#` lines before any KTAP are console noise.
            default:
                issues.append(ParseIssue(line: number, message: "KTAP line before any version line"))
            }
            sawKTAP = true
            if case .version = line.kind, line.depth == 0 { return }
        }
        let depth = line.depth
        switch line.kind {
        case .diagnostic(let text):
            if depth < top.depth { close(to: depth) }
            if text.hasPrefix("Subtest: ") {
                if depth > top.depth { open(to: depth) }
                if top.name == nil, top.tests.isEmpty, top.plan == nil {
                    top.name = String(text.dropFirst("Subtest: ".count))
                    return
                }
            }
            top.pending.append((number, text))
        case .version:
            if depth < top.depth { close(to: depth) }
            if depth > top.depth {
                open(to: depth)
            } else if depth == 0 {
                startAnotherDocument(at: number)
            } else if top.hasContent {
                issues.append(
                    ParseIssue(line: number, message: "a subtest block starts before the previous one got its parent's result line"))
                close(to: depth - 1)
                open(to: depth)
            }
        case .plan(let count, let skipReason):
            if depth < top.depth { close(to: depth) }
            if depth > top.depth { open(to: depth) }
            takePlan(count, skipReason: skipReason, at: number)
        case .result(let ok, let resultNumber, let name, let directive, let data):
            if depth < top.depth { close(to: depth) }
            if depth > top.depth { open(to: depth) }
            addResult(ok: ok, number: resultNumber, name: name, directive: directive, data: data, at: number)
        case .unknown:
            break
        }
    }

    var top: Frame {
        get { stack[stack.count - 1] }
        set { stack[stack.count - 1] = newValue }
    }

    mutating func open(to depth: Int) {
        while top.depth < depth { stack.append(Frame(depth: top.depth + 1)) }
    }

    /// Pops frames deeper than `depth`; each becomes the pending subtests of its parent.
    mutating func close(to depth: Int, reason: String? = nil) {
        while top.depth > depth {
            let frame = stack.removeLast()
            if reason == nil, let plan = frame.plan, frame.tests.count < plan {
                issues.append(ParseIssue(
                    line: 0, message: "subtest block ends after \(frame.tests.count) of \(plan) results"))
            }
            let tests = closeFrame(frame, reason: reason)
            if top.child != nil {
                issues.append(ParseIssue(line: 0, message: "subtests of '\(top.childName ?? "?")' had no parent result line; dropped"))
            }
            top.child = tests
            top.childName = frame.name
            top.childHeader = frame.header
        }
    }

    /// A frame's tests, completed: the one cut off is CRASHED/TIMEOUT when `reason` is set, any the plan
    /// promised beyond are not run.
    func closeFrame(_ frame: Frame, reason: String?) -> [TestResult] {
        var tests = frame.tests
        let done = tests.count - frame.numberBase
        let planned = frame.plan.map { $0 + frame.numberBase }
        let cutOff = reason != nil
            && ((frame.plan.map { done < $0 } ?? false) || frame.child != nil || (!frame.pending.isEmpty && frame.plan == nil))
        if cutOff, let reason {
            let number = done + 1
            var running = TestResult(
                number: number, name: frame.childName ?? name(for: number, in: frame),
                status: options.timedOut ? .timeout : .crashed, reason: reason)
            apply(frame.pending, to: &running)
            if let child = frame.child {
                running.subtests = child
                running.diagnostics = frame.childHeader + running.diagnostics
            }
            if frame.child == nil, findingsShareLines {
                // The splat that took the kernel down was printed while this test ran.
                for finding in findings where finding.line > lastResultLine && finding.kind != .panic {
                    let text = KTAPLine.stripDecoration(Substring(finding.text))
                    if !running.splats.contains(text) { running.splats.append(text) }
                }
            }
            tests.append(running)
        } else if let child = frame.child {
            // A subtest block with no parent result and no crash: keep it rather than lose results.
            tests.append(TestResult(number: done + 1, name: frame.childName ?? name(for: done + 1, in: frame),
                                    status: child.contains { $0.status.isFailure } ? .fail : .pass,
                                    reason: "no result line for this suite", subtests: child))
        }
        if let planned, tests.count < planned {
            let stoppedAt = tests.count - frame.numberBase
            for index in tests.count..<planned {
                let number = index - frame.numberBase + 1
                tests.append(TestResult(
                    number: number, name: name(for: number, in: frame), status: .notRun,
                    reason: cutOff ? "the run stopped during test \(stoppedAt)" : "its result line is missing"))
            }
        }
        return tests
    }

    func name(for number: Int, in frame: Frame) -> String {
        if frame.depth == 0, frame.numberBase == 0, number >= 1, number <= options.expectedNames.count {
            return options.expectedNames[number - 1]
        }
        return "(unnamed)"
    }

    /// A second top-level version line: KUnit ran at boot, or the suite ran twice. Tests are appended.
    mutating func startAnotherDocument(at line: Int) {
        guard top.hasContent else { return }
        issues.append(ParseIssue(line: line, message: "another KTAP document starts here; its tests are appended"))
        let incomplete = (top.plan.map { top.tests.count - top.numberBase < $0 } ?? false) || top.child != nil
        let old = top
        var fresh = Frame(depth: 0)
        fresh.tests = closeFrame(old, reason: incomplete ? "KTAP restarted at line \(line) before its result" : nil)
        if !incomplete { runDiagnostics += old.pending.map(\.text) }
        fresh.numberBase = fresh.tests.count
        top = fresh
    }

    mutating func takePlan(_ count: Int, skipReason: String?, at line: Int) {
        if top.plan != nil {
            issues.append(ParseIssue(line: line, message: "second plan 1..\(count) ignored"))
            return
        }
        top.plan = count
        if top.depth == 0 {
            totalPlan = (totalPlan ?? 0) + count
            if top.tests.count == top.numberBase {
                // Lines between the version line and the plan describe the run, not test 1.
                for (_, text) in top.pending { header(text) }
                top.pending = []
            }
            if let skipReason { runDiagnostics.append("all tests skipped: \(skipReason)") }
        } else if top.tests.isEmpty {
            top.header = top.pending.map(\.text)
            top.pending = []
        }
    }

    mutating func header(_ text: String) {
        if let (key, value) = keyValue(text), !key.contains(" ") {
            if metadata[key] == nil { metadata[key] = value }
        } else {
            runDiagnostics.append(text)
        }
    }

    mutating func addResult(ok: Bool, number: Int, name: String, directive: String?, data: String?, at line: Int) {
        let expectedNumber = top.tests.count - top.numberBase + 1
        if number != expectedNumber {
            issues.append(ParseIssue(line: line, message: "test number \(number) where \(expectedNumber) was expected"))
        }
        if let plan = top.plan, number > plan {
            issues.append(ParseIssue(line: line, message: "test \(number) is beyond the plan 1..\(plan)"))
        }
        var test = TestResult(number: number, name: name, status: ok ? .pass : .fail, directive: directive, reason: data)
        switch directive {
        case "SKIP"?: test.status = .skip
        case "TODO"?, "XFAIL"?: test.status = ok ? .pass : .skip  // an expected failure does not fail the run
        case "TIMEOUT"?: test.status = .timeout
        case "ERROR"?:
            // How ``KTAPEmitter`` writes the host's verdicts back as KTAP, so they survive a round trip.
            test.status = .fail
            if let data, data.hasPrefix("CRASHED") {
                test.status = .crashed
                test.reason = Self.afterLabel(data, "CRASHED")
                test.directive = nil
            } else if let data, data.hasPrefix("NOT RUN") {
                test.status = .notRun
                test.reason = Self.afterLabel(data, "NOT RUN")
                test.directive = nil
            }
        default: break
        }
        apply(top.pending, to: &test)
        top.pending = []
        if let child = top.child {
            test.subtests = child
            test.diagnostics = top.childHeader + test.diagnostics
            top.child = nil
            top.childName = nil
            top.childHeader = []
        }
        top.tests.append(test)
        lastResultLine = line
    }

    static func afterLabel(_ data: String, _ label: String) -> String? {
        var rest = data.dropFirst(label.count)
        if rest.first == ":" { rest = rest.dropFirst() }
        let text = rest.trimmingCharacters(in: .whitespaces)
        return text.isEmpty ? nil : text
    }

    func keyValue(_ text: String) -> (String, String)? {
        guard let colon = text.firstIndex(of: ":") else { return nil }
        let key = text[..<colon]
        guard !key.isEmpty, key.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "." }) else { return nil }
        return (String(key), text[text.index(after: colon)...].trimmingCharacters(in: .whitespaces))
    }

    func apply(_ pending: [(line: Int, text: String)], to test: inout TestResult) {
        for (_, text) in pending {
            guard let (key, value) = keyValue(text), KTAPParser.structuredKeys.contains(key) else {
                test.diagnostics.append(text)
                continue
            }
            switch key {
            case "errno": test.errno = value
            case "expected": test.expected = value
            case "observed": test.observed = value
            case "splat": test.splats.append(value)
            case "trace": test.trace.append(value)
            case "duration_ms":
                if let ms = Double(value) { test.duration = ms / 1000 } else { test.diagnostics.append(text) }
            default: test.diagnostics.append(text)
            }
        }
    }

    mutating func finish(lineCount: Int) -> TestRun {
        let outer = stack[0]
        let incomplete = stack.count > 1
            || (outer.plan.map { outer.tests.count - outer.numberBase < $0 } ?? false)
            || outer.child != nil
            || (outer.plan == nil && !outer.pending.isEmpty && (panic != nil || options.timedOut))
        let reason: String? =
            if !incomplete { nil }
            else if options.timedOut { "timed out: the host stopped the run before its result" }
            else if let panic { KTAPLine.stripDecoration(Substring(panic.text)) }
            else { "the log ends before its result (no panic in the console)" }
        // Open subtest blocks were cut off too: their running test is the innermost crashed one.
        close(to: 0, reason: reason)
        let frame = top
        let tests = closeFrame(frame, reason: reason)
        if !incomplete { runDiagnostics += frame.pending.map(\.text) }
        if let plan = frame.plan, frame.tests.count - frame.numberBase > plan {
            issues.append(ParseIssue(line: 0, message: "\(frame.tests.count - frame.numberBase) results for a plan of \(plan)"))
        }
        if !sawKTAP {
            issues.append(ParseIssue(line: 0, message: "no KTAP output found in \(lineCount) lines"))
        } else if incomplete {
            let done = frame.tests.count
            issues.append(ParseIssue(
                line: lineCount,
                message: "log ends after \(done) of \(frame.plan.map { "\($0 + frame.numberBase)" } ?? "an unknown number of") tests"))
        }
        var meta = metadata
        for entry in options.metadata { meta[entry.key] = entry.value }
        // Caller's order first, then what the header added.
        var ordered = options.metadata
        for entry in meta where ordered[entry.key] == nil { ordered[entry.key] = entry.value }
        let ending: RunEnding =
            if options.timedOut { .timedOut }
            else if panic != nil { .panic }
            else if incomplete { .truncated }
            else { .complete }
        return TestRun(
            metadata: ordered, plan: totalPlan, tests: tests, diagnostics: runDiagnostics, ending: ending,
            parseErrors: issues, consoleFindings: findings)
    }
}
