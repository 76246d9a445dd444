import Foundation
import KTAP
import KernelTree
import LabPipeline
import LabSupport

/// `p2plab report --merge`: variants that ran as separate jobs (one CI runner each) put back into
/// the matrix one machine prints, with the same cells, predictions and verdict (`Matrix`).
struct MergedMatrix {
    /// One matrix per series (several only with --allow-mixed: a version table, one block per version).
    struct Group {
        var series: PatchSeries?
        var seriesName: String
        var matrix: Matrix
        var kind: Kind
    }

    enum Kind { case comparison, ablation }

    var groups: [Group]
    /// Whole-series runs of several versions: the checks × versions table `test --versions` prints.
    var versions: VersionMatrix?

    /// Reads each run directory's variant.json and results, checks that they belong together, and
    /// orders them as `p2plab test` does (baseline, upto-N, leave-one-outs, series).
    static func load(_ directories: [URL], allowMixed: Bool) throws -> MergedMatrix {
        guard !directories.isEmpty else { throw ReportError.emptyRunDirectory("(no run directory given)") }
        var entries: [(result: VariantResult, record: RunRecord?, series: PatchSeries?)] = []
        for directory in directories {
            let result = try VariantResult(runDirectory: directory)
            entries.append((result, try RunRecord.load(from: directory), RunRecord.loadSeries(from: directory)))
        }
        // Whole-series runs of different series are versions side by side: that is what they are for.
        let seriesHashes = Set(entries.map { $0.record?.seriesHash ?? "unknown" })
        let isVersionTable = seriesHashes.count > 1 && entries.allSatisfy { $0.result.selection == .full && $0.series != nil }
        if !allowMixed {
            try checkSameOrigin(entries.map { ($0.result.runDirectory, $0.record) }, sameSeries: !isVersionTable)
        }
        if isVersionTable {
            let runs = entries.map { entry in
                let origin = entry.record?.seriesOrigin ?? entry.result.runDirectory.path
                return VersionRun(name: URL(fileURLWithPath: origin).lastPathComponent, identity: IdentifiedSeries(entry.series!), result: entry.result)
            }
            var names = Set<String>()
            for run in runs where !names.insert(run.name).inserted {
                throw ReportError.mixedRuns("two runs of version \(run.name) (\(run.result.runDirectory.path))")
            }
            return MergedMatrix(groups: [], versions: VersionMatrix(runs: runs.sorted { $0.name.compare($1.name, options: .numeric) == .orderedAscending }))
        }
        var labels = Set<String>()
        for entry in entries where !labels.insert("\(entry.record?.seriesHash ?? "")|\(entry.result.label)").inserted {
            throw ReportError.mixedRuns("two runs of \(entry.result.label) (\(entry.result.runDirectory.path))")
        }
        // Group by series: one group is the usual case; several are versions side by side.
        var order: [String] = []
        var bySeries: [String: [(result: VariantResult, record: RunRecord?, series: PatchSeries?)]] = [:]
        for entry in entries {
            let key = entry.record?.seriesHash ?? "unknown"
            if bySeries[key] == nil { order.append(key) }
            bySeries[key, default: []].append(entry)
        }
        let groups = order.map { key -> Group in
            let members = bySeries[key]!.sorted { rank($0.result.selection).lexicographicallyPrecedes(rank($1.result.selection)) }
            let series = members.lazy.compactMap(\.series).first
            // Without the series' text there is nothing to recognise the patches by: no predictions.
            let matrix = Matrix(results: members.map(\.result), identity: series.map(IdentifiedSeries.init))
            let isComparison = members.count == 2 && members.first?.result.selection == .baseline && members.last?.result.selection == .full
            let origin = members.lazy.compactMap(\.record?.seriesOrigin).first ?? series?.origin
            let name = origin.map { "series " + URL(fileURLWithPath: $0).lastPathComponent } ?? "unknown series"
            return Group(series: series, seriesName: name, matrix: matrix, kind: isComparison ? .comparison : .ablation)
        }
        return MergedMatrix(groups: groups, versions: nil)
    }

    /// Source, base commit and config must be the same for every run; so must the series unless the
    /// runs are versions of it (also --allow-mixed).
    static func checkSameOrigin(_ runs: [(URL, RunRecord?)], sameSeries: Bool = true) throws {
        var seen: [String: (value: String, path: String)] = [:]
        for (directory, record) in runs {
            guard let record else {
                throw ReportError.mixedRuns("\(directory.path) has no \(RunRecord.fileName) (written by p2plab test): its source and config are unknown")
            }
            var facts: [(String, String?)] = sameSeries ? [("series", record.seriesHash)] : []
            if let manifest = record.manifest {
                facts += [("source", "\(manifest.sourceId) at \(manifest.baseCommit.prefix(12))"), ("config", manifest.configHash)]
            }
            for (name, value) in facts {
                guard let value else { continue }
                if let first = seen[name], first.value != value {
                    throw ReportError.mixedRuns("\(name) \(value) in \(directory.path) but \(first.value) in \(first.path)")
                }
                seen[name] = seen[name] ?? (value, directory.path)
            }
        }
    }

    /// baseline, upto-1…, without-1…, series: the order `p2plab test --ablate` runs them in.
    static func rank(_ selection: PatchSelection) -> [Int] {
        if selection == .baseline { return [0, 0] }
        if selection == .full { return [3, 0] }
        if let upto = selection.upto { return [1, upto] }
        return [2] + selection.without
    }

    /// The worst verdict of the groups (a version that fails fails the merge).
    var verdict: (line: String, exit: Int32) {
        if let versions { return versions.verdict() }
        let verdicts = groups.map(Self.verdict)
        // Could not test (its cause's code, or 125) is worse than a failed check (1).
        let worst = verdicts.first { $0.exit != 0 && $0.exit != LabExit.failed.rawValue } ?? verdicts.first { $0.exit != 0 } ?? verdicts[0]
        return groups.count == 1 ? worst : (verdicts.map(\.line).joined(separator: "\n"), worst.exit)
    }

    static func verdict(_ group: Group) -> (line: String, exit: Int32) {
        group.kind == .comparison ? group.matrix.comparisonVerdict() : group.matrix.ablationVerdict()
    }

    static func table(_ group: Group) -> String {
        group.kind == .comparison ? group.matrix.comparisonTable() : group.matrix.ablationTable()
    }

    /// The tables and verdicts, as a terminal table or as Markdown (for a CI job summary).
    func render(markdown: Bool) -> String {
        var out: [String] = []
        if let versions {
            let verdict = versions.verdict()
            let runs = versions.runs.map { "\($0.name): \($0.result.runDirectory.path)" }
            if markdown {
                out += ["### p2plab: checks × versions", "", Self.markdownTable(versions.table()), ""]
                out += verdict.line.split(separator: "\n").enumerated().map { $0.offset == 0 ? "**\($0.element)**" : "- \($0.element.trimmingCharacters(in: .whitespaces))" }
                out += ["", "<details><summary>run directories</summary>\n"] + runs.map { "- `\($0)`" } + ["\n</details>\n"]
            } else {
                out += [versions.table(), verdict.line, "runs: " + runs.joined(separator: ", "), ""]
            }
            return out.joined(separator: "\n")
        }
        for group in groups {
            let table = Self.table(group)
            let verdict = Self.verdict(group)
            let runs = group.matrix.results.map { "\($0.label): \($0.runDirectory.path)" }
            if markdown {
                out.append("### p2plab: \(group.kind == .comparison ? "baseline vs series" : "patch × check matrix") (\(group.seriesName))")
                out.append("")
                out.append(Self.markdownTable(table))
                out.append("")
                out.append("**\(verdict.line.split(separator: "\n").first ?? "")**")
                let rest = verdict.line.split(separator: "\n").dropFirst()
                if !rest.isEmpty { out.append(""); out += rest.map { "- \($0.trimmingCharacters(in: .whitespaces))" } }
                out.append("")
                out.append("<details><summary>run directories</summary>\n")
                out += runs.map { "- `\($0)`" }
                out.append("\n</details>\n")
            } else {
                if groups.count > 1 { out.append("== \(group.seriesName)") }
                out.append(table)
                out.append(verdict.line)
                out.append("runs: " + runs.joined(separator: ", "))
                out.append("")
            }
        }
        return out.joined(separator: "\n")
    }

    /// Matrix's aligned table (header, dashes, rows; two or more spaces between cells) as Markdown.
    static func markdownTable(_ text: String) -> String {
        let lines = text.split(separator: "\n").map(String.init)
        guard lines.count >= 2 else { return text }
        // Column starts come from the dash line, so cells with single spaces stay whole.
        let dashes = Array(lines[1])
        var starts: [Int] = []
        for (i, c) in dashes.enumerated() where c == "-" && (i == 0 || dashes[i - 1] == " ") { starts.append(i) }
        func cells(_ line: String) -> [String] {
            let chars = Array(line)
            return starts.enumerated().map { index, start in
                let end = index + 1 < starts.count ? starts[index + 1] : max(chars.count, start)
                guard start < chars.count else { return "" }
                return String(chars[start..<min(end, chars.count)]).trimmingCharacters(in: .whitespaces)
            }
        }
        func row(_ cells: [String]) -> String {
            "| " + cells.map { $0.replacingOccurrences(of: "|", with: "\\|") }.joined(separator: " | ") + " |"
        }
        return ([row(cells(lines[0])), row(starts.map { _ in "---" })] + lines.dropFirst(2).map { row(cells($0)) }).joined(separator: "\n")
    }
}
