import KernelConsole
import Foundation
import LabSupport

/// The renderings `p2plab report` and `p2plab parse` can produce.
public enum ReportFormat: String, Sendable, CaseIterable {
    case table
    case json
    case junit
    case markdown
    case ktap

    /// `run` in this format, ending in a newline.
    public func render(_ run: TestRun) -> String {
        switch self {
        case .table: TableRenderer.render(run)
        case .json: JSONRenderer.render(run)
        case .junit: JUnitRenderer.render(run)
        case .markdown: MarkdownRenderer.render(run)
        case .ktap: KTAPEmitter.render(run)
        }
    }

    /// The conventional file name in a run directory (`results.json`, `junit.xml`, …).
    public var fileName: String {
        switch self {
        case .table: "results.txt"
        case .json: "results.json"
        case .junit: "junit.xml"
        case .markdown: "results.md"
        case .ktap: "results.ktap"
        }
    }
}

/// results.json: pretty, keys sorted so two runs diff line by line.
public enum JSONRenderer {
    static func encoder() -> JSONEncoder { LabJSON.encoder }

    /// The run as UTF-8 JSON.
    public static func data(_ run: TestRun) -> Data {
        (try? encoder().encode(run)) ?? Data("{}".utf8)
    }

    /// The run as JSON text, ending in a newline.
    public static func render(_ run: TestRun) -> String {
        String(decoding: data(run), as: UTF8.self) + "\n"
    }

    /// Reads a results.json back; `verdict` and `counts` in the file are ignored and recomputed.
    public static func decode(_ data: Data) throws -> TestRun {
        try LabJSON.decoder.decode(TestRun.self, from: data)
    }
}

/// Shared wording for the human-readable renderers.
enum Format {
    /// `0.2 ms`, `12.5 ms`, `1.23 s`, or `-` when unknown.
    static func duration(_ seconds: Double?) -> String {
        guard let seconds, seconds.isFinite else { return "-" }
        if seconds < 1 { return String(format: "%.1f ms", seconds * 1000) }
        return String(format: "%.2f s", seconds)
    }

    /// `text` cut to `width` characters with an ellipsis, on one line.
    static func clip(_ text: String, _ width: Int) -> String {
        let line = text.replacingOccurrences(of: "\n", with: " ")
        guard line.count > width, width > 1 else { return line }
        return String(line.prefix(width - 1)) + "…"
    }

    /// Each test with its nesting level, parents before their subtests.
    static func flatten(_ tests: [TestResult], level: Int = 0) -> [(level: Int, test: TestResult)] {
        tests.flatMap { [(level, $0)] + flatten($0.subtests, level: level + 1) }
    }

    /// `3 WARNING, 1 Oops` for the console findings, in order of first appearance.
    static func findingsSummary(_ findings: [ConsoleFinding]) -> String {
        var order: [ConsoleFindingKind] = []
        var count: [ConsoleFindingKind: Int] = [:]
        for finding in findings {
            if count[finding.kind] == nil { order.append(finding.kind) }
            count[finding.kind, default: 0] += 1
        }
        return order.map { "\(count[$0]!) \($0.rawValue)" }.joined(separator: ", ")
    }

    /// Why the run ended early, if it did.
    static func ending(_ run: TestRun) -> String? {
        switch run.ending {
        case .complete: nil
        case .truncated: "the log ends before the plan is complete"
        case .panic: "the kernel panicked"
        case .timedOut: "the host timed out waiting for the run"
        }
    }
}

/// The terminal table `p2plab test` and `p2plab report` print: check, result, errno/diagnostic, time,
/// then one verdict line.
public enum TableRenderer {
    /// Widest the errno/diagnostic column gets before it is clipped, so rows stay on one line.
    public static let diagnosticWidth = 60

    public static func render(_ run: TestRun) -> String {
        let rows = Format.flatten(run.tests).map { level, test in
            [
                String(repeating: "  ", count: level) + test.name, test.status.label,
                Format.clip(test.summary, diagnosticWidth), Format.duration(test.duration),
            ]
        }
        var out = ColumnTable(
            headers: ["check", "result", "errno/diagnostic", "time"], rows: rows, alignments: [.left, .left, .left, .right]
        ).lines
        for test in run.tests {
            if let at = test.traceSummary { out.append("trace: \(test.name): \(at)") }
        }
        for note in run.diagnostics where note.hasPrefix("no line info:") { out.append(note) }
        if !run.consoleFindings.isEmpty {
            let first = run.consoleFindings[0]
            out.append("console: \(Format.findingsSummary(run.consoleFindings)) (first at line \(first.line): "
                + Format.clip(KTAPLine.stripDecoration(Substring(first.text)), 80) + ")")
        }
        if let ending = Format.ending(run) { out.append("run: \(ending)") }
        if !run.parseErrors.isEmpty {
            out.append("parse: \(run.parseErrors.count) issue(s), first: \(run.parseErrors[0])")
        }
        out.append(run.verdictLine)
        return out.map { $0 + "\n" }.joined()
    }
}

/// A Markdown summary for CI job pages and pull-request comments.
public enum MarkdownRenderer {
    public static func render(_ run: TestRun) -> String {
        var out: [String] = ["# p2plab: \(run.verdict.rawValue)", "", "**\(run.verdictLine)**", ""]
        if let ending = Format.ending(run) { out += ["Run: \(ending).", ""] }
        if !run.metadata.isEmpty {
            out += ["| | |", "|---|---|"]
            out += run.metadata.map { "| \(cell($0.key)) | \(cell($0.value)) |" }
            out.append("")
        }
        out += ["| # | check | result | errno/diagnostic | time |", "|---:|---|---|---|---:|"]
        for (level, test) in Format.flatten(run.tests) {
            let name = String(repeating: "&nbsp;&nbsp;", count: level) + cell(test.name)
            out.append("| \(test.number) | \(name) | \(test.status.label) | \(cell(test.summary)) | \(Format.duration(test.duration)) |")
        }
        let failing = Format.flatten(run.tests).map(\.test).filter { $0.status.isFailure }
        if !failing.isEmpty {
            out += ["", "## Failures"]
            for test in failing {
                out += ["", "### \(test.name): \(test.status.label)", "", "```"]
                out += detailLines(test).map { $0.replacingOccurrences(of: "```", with: "'''") }
                out.append("```")
            }
        }
        if !run.consoleFindings.isEmpty {
            out += ["", "## Console", ""]
            out += run.consoleFindings.map { "- line \($0.line): \($0.kind.rawValue): `\(code($0.text))`" }
        }
        if !run.parseErrors.isEmpty {
            out += ["", "## Parse errors", ""]
            out += run.parseErrors.map { "- \(cell($0.description))" }
        }
        return out.map { $0 + "\n" }.joined()
    }

    /// Everything known about a failing test, one fact per line.
    static func detailLines(_ test: TestResult) -> [String] {
        // The check's own narrative first: it says what was attempted, the fields say what happened.
        var lines = test.diagnostics
        if let reason = test.reason { lines.append("reason: \(reason)") }
        if let errno = test.errno { lines.append("errno: \(errno)") }
        if let expected = test.expected { lines.append("expected: \(expected)") }
        if let observed = test.observed { lines.append("observed: \(observed)") }
        lines += test.splats.map { "splat: \($0)" }
        return lines.isEmpty ? ["(no diagnostics)"] : lines
    }

    /// Text safe inside a Markdown table cell: pipes escaped, line breaks as `<br>`, angle brackets
    /// as entities. Every Markdown table p2plab writes (results, BENCHMARKS.md) escapes with this.
    public static func cell(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;")
            .replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
            .replacingOccurrences(of: "|", with: "\\|")
            .replacingOccurrences(of: "\r", with: "")
            .replacingOccurrences(of: "\n", with: "<br>")
    }

    static func code(_ text: String) -> String {
        KTAPLine.stripDecoration(Substring(text)).replacingOccurrences(of: "`", with: "'")
    }
}

/// junit.xml for CI test reporters (GitHub, GitLab, Jenkins): one testsuite, one testcase per leaf
/// test; failed → `<failure>`, crashed/timeout → `<error>`, skipped/not run → `<skipped>`.
public enum JUnitRenderer {
    public static func render(_ run: TestRun, suiteName: String = "p2plab") -> String {
        let leaves = run.leaves
        let counts = run.counts
        let total = leaves.compactMap(\.test.duration).filter(\.isFinite).reduce(0, +)
        let errors = counts.crashed + counts.timedOut
        let skipped = counts.skipped + counts.notRun
        let suiteAttributes = "name=\"\(attr(suiteName))\" tests=\"\(leaves.count)\" failures=\"\(counts.failed)\" "
            + "errors=\"\(errors)\" skipped=\"\(skipped)\" time=\"\(seconds(total))\""
        var out = ["<?xml version=\"1.0\" encoding=\"UTF-8\"?>", "<testsuites \(suiteAttributes)>",
                   "  <testsuite \(suiteAttributes)>"]
        if !run.metadata.isEmpty {
            out.append("    <properties>")
            out += run.metadata.map { "      <property name=\"\(attr($0.key))\" value=\"\(attr($0.value))\"/>" }
            out.append("    </properties>")
        }
        for (path, test) in leaves {
            let classname = ([suiteName] + path).joined(separator: ".")
            let open = "    <testcase name=\"\(attr(test.name))\" classname=\"\(attr(classname))\" time=\"\(seconds(test.duration ?? 0))\""
            let body = MarkdownRenderer.detailLines(test).joined(separator: "\n")
            let message = attr(test.summary.isEmpty ? test.status.label : test.summary)
            switch test.status {
            case .pass:
                out.append(open + "/>")
            case .fail:
                out += [open + ">", "      <failure message=\"\(message)\" type=\"\(attr(test.errno ?? "failure"))\">\(text(body))</failure>", "    </testcase>"]
            case .crashed, .timeout:
                out += [open + ">", "      <error message=\"\(message)\" type=\"\(test.status.rawValue)\">\(text(body))</error>", "    </testcase>"]
            case .skip, .notRun:
                let reason = test.status == .notRun ? "not run: " + (test.reason ?? "") : (test.reason ?? "")
                out += [open + ">", "      <skipped message=\"\(attr(reason))\"/>", "    </testcase>"]
            }
        }
        var systemOut: [String] = []
        if let ending = Format.ending(run) { systemOut.append("run: \(ending)") }
        systemOut += run.consoleFindings.map { "console line \($0.line): \($0.text)" }
        systemOut += run.parseErrors.map { "parse: \($0)" }
        systemOut.append(run.verdictLine)
        out.append("    <system-out>\(text(systemOut.joined(separator: "\n")))</system-out>")
        out += ["  </testsuite>", "</testsuites>"]
        return out.map { $0 + "\n" }.joined()
    }

    static func seconds(_ value: Double) -> String {
        String(format: "%.3f", value.isFinite ? value : 0)
    }

    /// Escapes XML text content, dropping characters XML 1.0 cannot carry at all (serial consoles
    /// deliver stray control bytes).
    static func text(_ value: String) -> String {
        var out = ""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\t", "\n", "\r": out.unicodeScalars.append(scalar)
            default:
                if scalar.value < 0x20 || scalar.value == 0xFFFE || scalar.value == 0xFFFF { continue }
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// Escapes an attribute value; line breaks become character references so they survive parsing.
    static func attr(_ value: String) -> String {
        text(value)
            .replacingOccurrences(of: "\"", with: "&quot;")
            .replacingOccurrences(of: "'", with: "&apos;")
            .replacingOccurrences(of: "\n", with: "&#10;")
            .replacingOccurrences(of: "\r", with: "&#13;")
            .replacingOccurrences(of: "\t", with: "&#9;")
    }
}
