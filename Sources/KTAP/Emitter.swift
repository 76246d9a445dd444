import Foundation

/// Writes a ``TestRun`` back as KTAP version 1, in p2plab's own dialect: diagnostics before each
/// result line, structured fields as `# key: value`, metadata between the version line and the plan.
///
/// Statuses KTAP has no word for travel as `# ERROR CRASHED: …` and `# ERROR NOT RUN: …`, which
/// ``KTAPParser`` reads back, so results.ktap says as much as results.json about every test.
public enum KTAPEmitter {
    /// The run as KTAP text, one line per `\n`, ending in a newline.
    public static func render(_ run: TestRun) -> String {
        let sink = LineSink()
        let writer = KTAPWriter { sink.append($0) }
        writer.header()
        for entry in run.metadata { writer.diagnostic("\(entry.key): \(entry.value)") }
        write(run.tests, plan: max(run.plan ?? 0, run.tests.count), with: writer)
        for line in run.diagnostics { writer.diagnostic(line) }
        return sink.text
    }

    /// A subtest block for the test `name` written by `writer`: version line, `# Subtest:`, plan and
    /// `tests`, one level deeper. The caller writes the parent's diagnostics and result line after it.
    public static func writeSubtests(_ tests: [TestResult], of name: String, with writer: KTAPWriter) {
        let nested = writer.nested()
        nested.header()
        nested.diagnostic("Subtest: \(name)")
        write(tests, plan: tests.count, with: nested)
    }

    static func write(_ tests: [TestResult], plan: Int, with writer: KTAPWriter) {
        writer.plan(plan)
        for test in tests {
            if !test.subtests.isEmpty {
                let nested = writer.nested()
                nested.header()
                nested.diagnostic("Subtest: \(test.name)")
                write(test.subtests, plan: test.subtests.count, with: nested)
            }
            for line in test.diagnostics { writer.diagnostic(line) }
            if let errno = test.errno { writer.diagnostic("errno: \(errno)") }
            if let expected = test.expected { writer.diagnostic("expected: \(expected)") }
            if let observed = test.observed { writer.diagnostic("observed: \(observed)") }
            for splat in test.splats { writer.diagnostic("splat: \(splat)") }
            for line in test.trace { writer.diagnostic("trace: \(line)") }
            if let duration = test.duration { writer.diagnostic("duration_ms: \(milliseconds(duration))") }
            let (ok, directive, text) = resultLine(for: test)
            writer.result(test.number, test.name, ok: ok, directive: directive, text: text)
        }
    }

    static func resultLine(for test: TestResult) -> (ok: Bool, directive: String?, text: String?) {
        let expectedFailure = test.directive == "TODO" || test.directive == "XFAIL"
        switch test.status {
        case .pass: return (true, expectedFailure ? test.directive : nil, test.reason)
        case .fail: return (false, test.directive == "ERROR" ? "ERROR" : nil, test.reason)
        case .skip:
            if expectedFailure { return (false, test.directive, test.reason) }
            return (true, "SKIP", test.reason)
        case .timeout: return (false, "TIMEOUT", test.reason)
        case .crashed: return (false, "ERROR", "CRASHED" + (test.reason.map { ": \($0)" } ?? ""))
        case .notRun: return (false, "ERROR", "NOT RUN" + (test.reason.map { ": \($0)" } ?? ""))
        }
    }

    /// `12.5` for 0.0125 s: at most three decimals, so values survive a round trip to microseconds.
    static func milliseconds(_ seconds: Double) -> String {
        var text = String(format: "%.3f", seconds * 1000)
        while text.hasSuffix("0") { text.removeLast() }
        if text.hasSuffix(".") { text.removeLast() }
        return text
    }
}

/// Collects what a ``KTAPWriter`` emits; the writer wants a `@Sendable` sink.
final class LineSink: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []

    func append(_ line: String) {
        lock.lock()
        defer { lock.unlock() }
        lines.append(line)
    }

    var text: String {
        lock.lock()
        defer { lock.unlock() }
        return lines.map { $0 + "\n" }.joined()
    }
}
