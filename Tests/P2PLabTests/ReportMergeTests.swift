import Foundation
import KTAP
import KernelTree
import LabSupport
import LabPipeline
import Testing
@testable import P2PLab

/// A run directory as `p2plab test` leaves it (results, variant.json, the series, the boot manifest),
/// made from KTAP text and the bundled v2 series; `configHash`/`base` let a test make mixed runs.
func makeRunDirectory(
    _ parent: URL, _ selection: PatchSelection, ktap: String, console: String? = nil, configHash: String = "ad692860c2c83bb5",
    base: String = "b068c38091908d01f87368f0c891530875665b2a", problem: String? = nil, series: String = "v2",
    recorded: [String: Any] = [:]
) throws -> URL {
    let directory = parent.appendingPathComponent(selection.label)
    let patches = try PatchSeries.load(from: repoRoot.appendingPathComponent("kernel/series/\(series)"))
    let applied = patches.patches.filter { patch in
        selection.upto.map { patch.index <= $0 } ?? true && !selection.without.contains(patch.index)
    }
    let manifestJSON: [String: Any] = [
        "baseCommit": base, "branch": "p2plab/\(selection.label)", "buildSeconds": 388.7, "bzImage": "/cache/builds/x/bzImage",
        "cacheHit": false, "compiler": "gcc (Debian 12.2.0-14+deb12u1) 12.2.0", "config": "/cache/builds/x/config",
        "configHash": configHash, "createdAt": "2026-12-01T09:44:14Z", "fragments": ["/work/kernel/config/p2plab.config"],
        "head": String(repeating: "5", count: 40), "kernelRelease": "6.12.117+", "log": "/cache/builds/x/build.log",
        "objectDir": "/cache/obj/x", "source": "Debian linux-source-6.12 6.12.117-1~deb12u1", "sourceDir": "/cache/src/x",
        "sourceId": "debian-6.12.117-1_deb12u1", "variant": selection.label,
        "patches": applied.map {
            ["author": $0.author, "commit": String(repeating: "a", count: 40), "contentHash": "0", "index": $0.index,
             "name": $0.name, "state": "applied", "subject": $0.subject] as [String: Any]
        },
    ]
    let manifest = try JSONDecoder().decode(BuildManifest.self, from: try JSONSerialization.data(withJSONObject: manifestJSON.merging(recorded) { $1 }))
    var run = KTAPParser.parse(ktap, options: .init(consoleLog: console))
    run.metadata[RunMetadata.Keys.machine] = "lab"
    run.metadata[RunMetadata.Keys.accel] = "tcg (forced)"
    run.metadata[RunMetadata.Keys.qemuCommandLine] = "qemu-system-x86_64 -machine q35 -accel tcg"
    let result = VariantResult(
        label: selection.label, selection: selection, manifest: manifest, run: problem == nil ? run : nil, runDirectory: directory,
        problem: problem, ending: problem == nil ? .exited(0) : nil, seconds: 42)
    if problem == nil { try RunLoader.write(run, into: directory) }
    if let console { try console.write(to: directory.appendingPathComponent("console.log"), atomically: true, encoding: .utf8) }
    try RunRecord(result, series: patches).write(into: directory)
    try RunRecord.writeSeries(patches, into: directory)
    let boot = #"{"started": "2026-12-01T09:50:00Z", "accel": "tcg", "machine": "lab", "outcome": "exited"}"#
    try boot.write(to: directory.appendingPathComponent("manifest.json"), atomically: true, encoding: .utf8)
    return directory
}

func scratch(_ name: String) throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-\(name)-\(UUID().uuidString.prefix(8))")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

@Suite("report --merge: variants from separate run directories")
struct ReportMergeTests {
    @Test("baseline and series from two directories give the table and verdict --compare gives")
    func comparison() throws {
        let parent = try scratch("merge")
        defer { try? FileManager.default.removeItem(at: parent) }
        let dirs = [try makeRunDirectory(parent, .full, ktap: passing), try makeRunDirectory(parent, .baseline, ktap: baselineFailing)]
        let merged = try MergedMatrix.load(dirs, allowMixed: false)
        let single = Matrix(results: [variant(.baseline, baselineFailing), variant(.full, passing)], identity: v2Identity)
        #expect(merged.groups.count == 1)
        #expect(merged.groups[0].kind == .comparison)
        #expect(MergedMatrix.table(merged.groups[0]) == single.comparisonTable())
        #expect(merged.verdict.exit == single.comparisonVerdict().exit)
        #expect(merged.verdict.line == single.comparisonVerdict().line)
        let markdown = merged.render(markdown: true)
        #expect(markdown.contains("| check | baseline | series | the series changes |"))
        #expect(markdown.contains("| regmr.p2pmem | FAIL EFAULT | pass | FAIL EFAULT → pass |"))
        #expect(markdown.contains("**verdict: PASS"))
    }

    @Test("leave-one-outs merge into the ablation matrix, checked against the predictions")
    func ablation() throws {
        let parent = try scratch("merge-ablate")
        defer { try? FileManager.default.removeItem(at: parent) }
        let dirs = [
            try makeRunDirectory(parent, PatchSelection(without: [1]), ktap: passing),
            try makeRunDirectory(parent, .baseline, ktap: baselineFailing),
            try makeRunDirectory(parent, PatchSelection(without: [2]), ktap: passing),
            try makeRunDirectory(parent, .full, ktap: passing),
        ]
        let merged = try MergedMatrix.load(dirs, allowMixed: false)
        let group = try #require(merged.groups.first)
        #expect(group.kind == .ablation)
        #expect(group.matrix.results.map(\.label) == ["baseline", "without-1", "without-2", "series"])
        // Without patch 1 the kernfs check must fail; these runs say it passed: the merge says so.
        #expect(merged.verdict.exit == 1)
        #expect(merged.verdict.line.contains("kernfs.page_mkwrite_attribute on without-1: expected fail, got pass"))
        #expect(MergedMatrix.table(group).contains("pass (expected fail)"))
    }

    @Test("runs of another config or base commit are refused unless --allow-mixed")
    func mixedRunsAreRefused() throws {
        let parent = try scratch("merge-mixed")
        defer { try? FileManager.default.removeItem(at: parent) }
        let series = try makeRunDirectory(parent, .full, ktap: passing)
        let other = try makeRunDirectory(parent, .baseline, ktap: baselineFailing, configHash: "0123456789abcdef")
        #expect(throws: ReportError.self) { try MergedMatrix.load([series, other], allowMixed: false) }
        do {
            _ = try MergedMatrix.load([series, other], allowMixed: false)
        } catch {
            #expect("\(error)".contains("config 0123456789abcdef"))
            #expect("\(error)".contains("--allow-mixed"))
        }
        #expect(try MergedMatrix.load([series, other], allowMixed: true).groups.count == 1)
        let rebased = try makeRunDirectory(try scratch("merge-base"), .baseline, ktap: baselineFailing, base: String(repeating: "c", count: 40))
        #expect(throws: ReportError.self) { try MergedMatrix.load([series, rebased], allowMixed: false) }
        let twice = try makeRunDirectory(try scratch("merge-twice"), .full, ktap: passing)
        #expect(throws: ReportError.self) { try MergedMatrix.load([series, twice], allowMixed: true) }
    }

    @Test("versions: with --allow-mixed each series gets its own block, and the worst verdict wins")
    func versions() throws {
        let v2 = try scratch("merge-v2"), v3 = try scratch("merge-v3")
        defer { try? FileManager.default.removeItem(at: v2); try? FileManager.default.removeItem(at: v3) }
        let dirs = [
            try makeRunDirectory(v2, .baseline, ktap: baselineFailing), try makeRunDirectory(v2, .full, ktap: passing),
            try makeRunDirectory(v3, .baseline, ktap: baselineFailing, series: "v3"), try makeRunDirectory(v3, .full, ktap: baselineFailing, series: "v3"),
        ]
        #expect(throws: ReportError.self) { try MergedMatrix.load(dirs, allowMixed: false) }
        let merged = try MergedMatrix.load(dirs, allowMixed: true)
        #expect(merged.groups.count == 2)
        #expect(merged.groups.map { $0.seriesName.hasSuffix("v2") || $0.seriesName.hasSuffix("v3") } == [true, true])
        #expect(merged.verdict.exit == 1)
    }

    @Test("whole-series runs of several versions merge into the checks × versions table test --versions prints")
    func versionTable() throws {
        let parent = try scratch("merge-versions")
        defer { try? FileManager.default.removeItem(at: parent) }
        var dirs: [URL] = []
        var runs: [VersionRun] = []
        for version in ["v5", "v2", "v3"] {
            let dir = try makeRunDirectory(parent.appendingPathComponent(version), .full, ktap: passing, series: version)
            dirs.append(dir)
            let series = try PatchSeries.load(from: repoRoot.appendingPathComponent("kernel/series/\(version)"))
            runs.append(VersionRun(name: version, identity: IdentifiedSeries(series), result: try VariantResult(runDirectory: dir)))
        }
        let merged = try MergedMatrix.load(dirs, allowMixed: false)
        let single = VersionMatrix(runs: runs.sorted { $0.name < $1.name })
        let versions = try #require(merged.versions)
        #expect(versions.runs.map(\.name) == ["v2", "v3", "v5"])
        #expect(versions.table() == single.table())
        #expect(merged.verdict.line == single.verdict().line)
        #expect(merged.verdict.exit == single.verdict().exit)
        #expect(merged.render(markdown: true).contains("| check | v2 | v3 | v5 |"))
        // Another config is still another lab.
        let other = try makeRunDirectory(parent.appendingPathComponent("v4"), .full, ktap: passing, configHash: "0123456789abcdef", series: "v4")
        #expect(throws: ReportError.self) { try MergedMatrix.load(dirs + [other], allowMixed: false) }
    }

    @Test("a directory without variant.json cannot be merged: its source is unknown")
    func unknownOrigin() throws {
        let parent = try scratch("merge-bare")
        defer { try? FileManager.default.removeItem(at: parent) }
        try RunLoader.write(KTAPParser.parse(passing), into: parent.appendingPathComponent("bare"))
        let series = try makeRunDirectory(parent, .full, ktap: passing)
        #expect(throws: ReportError.self) { try MergedMatrix.load([parent.appendingPathComponent("bare"), series], allowMixed: false) }
    }

    @Test("Matrix's aligned table becomes Markdown cell for cell")
    func markdownTable() {
        let text = "check  a     b\n-----  ----  ---\nx.y    FAIL EFAULT → pass  ok"
        #expect(MergedMatrix.markdownTable("check  a            b\n-----  -----------  --\nx.y    FAIL EFAULT  ok") ==
                "| check | a | b |\n| --- | --- | --- |\n| x.y | FAIL EFAULT | ok |")
        #expect(MergedMatrix.markdownTable(text).split(separator: "\n").count == 3)
    }
}
