import ArgumentParser
import Foundation
import KTAP
import LabPipeline
import LabSupport

extension ReportFormat: ExpressibleByArgument {}

extension P2PLabCommand {
    /// Re-render a run directory in another format, merge run directories, or emit KCIDB.
    struct Report: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "report",
            abstract: "Re-render a run directory (table, JSON, JUnit, Markdown, KTAP, KCIDB), or merge several into one matrix.",
            discussion: """
                Reads RUN_DIR/results.json if present, else parses RUN_DIR/results.ktap, else \
                RUN_DIR/console.log. Exits 0 when every check passed or skipped, 1 when one failed, \
                crashed or timed out, 2 when there is nothing readable.

                --merge takes the run directories of variants that ran apart (one CI job each: the \
                baseline, the series, each leave-one-out) and prints the comparison or ablation table \
                a single `p2plab test --compare/--ablate` prints, checked against the predictions, with \
                its verdict and exit code; whole-series runs of several versions give the checks × \
                versions table of `test --versions`. Runs of different sources, base commits or \
                configs (or of different series otherwise) are refused unless --allow-mixed.

                --format kcidb writes KCIDB I/O schema v5.3 (checkout, build, one test per check, \
                path p2plab.CHECK). --submit URL posts it to a KCIDB submission endpoint with \
                the token in $KCIDB_TOKEN (or save the JSON and submit it with kci-dev).
                """)

        @Argument(help: "Run directories written by p2plab test or p2plab parse --output.")
        var runDirectories: [String]

        @Option(name: .shortAndLong, help: "table, json, junit, markdown, ktap or kcidb (with --merge: table or markdown).")
        var format: String = "table"

        @Flag(help: "Merge the variants' run directories into one comparison / ablation matrix.")
        var merge = false

        @Flag(help: "With --merge: accept runs of different sources, series or configs.")
        var allowMixed = false

        @Option(help: "With --format kcidb: the origin (CI system name, [a-z0-9_]+) that prefixes every id.")
        var origin: String = "p2plab"

        @Option(help: ArgumentHelp("With --format kcidb: link files as URL/<run dir>/<file> (where CI uploaded the runs) instead of file://.", valueName: "URL"))
        var urlBase: String?

        @Option(help: ArgumentHelp("With --format kcidb: POST the report to this KCIDB submission URL with $KCIDB_TOKEN.", valueName: "URL"))
        var submit: String?

        func validate() throws {
            if format != "kcidb" && ReportFormat(rawValue: format) == nil {
                throw ValidationError("--format is one of \((ReportFormat.allCases.map(\.rawValue) + ["kcidb"]).joined(separator: ", "))")
            }
            if merge && !["table", "markdown"].contains(format) { throw ValidationError("--merge prints a table or markdown, not \(format)") }
            if !merge && format != "kcidb" && runDirectories.count != 1 {
                throw ValidationError("give one run directory (or --merge, or --format kcidb for several)")
            }
            if origin.isEmpty || !origin.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "_") }) {
                throw ValidationError("--origin \(origin) is not a KCIDB origin: lowercase letters, digits and _")
            }
            if submit != nil && format != "kcidb" { throw ValidationError("--submit sends KCIDB: add --format kcidb") }
        }

        func run() async throws {
            let directories = runDirectories.map { URL(fileURLWithPath: $0).standardizedFileURL }
            if merge {
                let merged = try MergedMatrix.load(directories, allowMixed: allowMixed)
                let text = merged.render(markdown: format == "markdown")
                print(text, terminator: text.hasSuffix("\n") ? "" : "\n")
                throw ExitCode(merged.verdict.exit)
            }
            if format == "kcidb" {
                let report = KCIDBReport(origin: origin, urlBase: urlBase)
                let text = try report.render(directories)
                if let submit {
                    try await KCIDBReport.submit(text, to: submit)
                    return
                }
                print(text, terminator: "")
                return
            }
            let run = try RunLoader.load(runDirectory: directories[0])
            print(ReportFormat(rawValue: format)!.render(run), terminator: "")
            try exitForVerdict(run)
        }
    }

    /// Read KTAP out of any console or dmesg capture.
    struct Parse: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "parse",
            abstract: "Read KTAP out of a console or dmesg capture (a lab machine's serial log).",
            discussion: """
                Kernel messages, printk timestamps and carriage returns around the KTAP lines are \
                ignored; a log cut off by a panic marks the running check CRASHED. Use - to read stdin. \
                Exit codes as for report.
                """)

        @Argument(help: "The log file, or - for standard input.")
        var log: String

        @Option(name: .shortAndLong, help: "How to render the results.")
        var format: ReportFormat = .table

        @Option(name: .shortAndLong, help: "Also write results.ktap, results.json and junit.xml into this directory.")
        var output: String?

        @Flag(help: "The capture was stopped by a timeout: the running check is TIMEOUT, not CRASHED.")
        var timedOut = false

        func run() async throws {
            let text = try RunLoader.readText(log == "-" ? nil : URL(fileURLWithPath: log))
            let run = KTAPParser.parse(text, options: .init(timedOut: timedOut))
            if let output { try RunLoader.write(run, into: URL(fileURLWithPath: output)) }
            print(format.render(run), terminator: "")
            try exitForVerdict(run)
        }
    }
}

/// Exits the way kselftest and `git bisect run` expect: 0 when all checks passed or skipped, 1 when
/// one failed, 7 when one crashed or timed out (both bad to `git bisect run`), 2 when the input
/// held no results at all.
private func exitForVerdict(_ run: TestRun) throws {
    switch run.verdict {
    case .pass: return
    case .skipped: throw ExitCode(LabExit.skipped.rawValue)
    case .fail: throw ExitCode(LabExit.failed.rawValue)
    case .crashed, .timeout: throw ExitCode(LabExit.crashed.rawValue)
    case .noResults:
        FileHandle.standardError.write(Data("p2plab: no KTAP results in the input\n".utf8))
        throw ExitCode(LabExit.usage.rawValue)
    }
}

