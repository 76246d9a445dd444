import Foundation
import KTAP
import KernelTree
import LabPipeline
import LabSupport
import Machine

/// `variant.json` in a run directory: which variant ran, how it was built, and how it ended, so that a
/// run directory copied off another machine (a CI runner's artifact) can be merged into a matrix or
/// turned into KCIDB without rerunning anything.
struct RunRecord: Codable, Sendable, Equatable {
    static let fileName = "variant.json"
    /// The whole series as it was used (`series/series` plus the patch files), so a merge can make
    /// its predictions and KCIDB can link the applied patches without the original checkout.
    static let seriesDirectory = "series"

    var label: String
    var selection: PatchSelection
    /// Where the series came from (a directory or an mbox).
    var seriesOrigin: String?
    /// The series' content hash: runs of one matrix share it.
    var seriesHash: String?
    var manifest: BuildManifest?
    var problem: String?
    var problemExit: Int32?
    var bootOutcome: String?
    /// The guest command's exit status, when the boot ended with it.
    var guestExitStatus: Int32?
    var seconds: Double
    /// The exit code this variant alone would have given (`p2plab test`).
    var exitCode: Int32
    var p2plabVersion: String
    /// Where the time went, phase by phase (absent in records of older versions).
    var times: PhaseTimes?

    init(_ result: VariantResult, series: PatchSeries?) {
        label = result.label
        selection = result.selection
        seriesOrigin = series?.origin
        seriesHash = series?.contentHash
        manifest = result.manifest
        problem = result.problem
        problemExit = result.problemExit?.rawValue
        bootOutcome = result.ending?.name
        if case .exited(let status) = result.ending { guestExitStatus = status }
        seconds = (result.seconds * 10).rounded() / 10
        exitCode = result.exitCode
        p2plabVersion = ProjectPaths.version
        times = result.times.phases.isEmpty ? nil
            : PhaseTimes(result.times.phases.map { .init(name: $0.name, seconds: ($0.seconds * 1000).rounded() / 1000) })
    }

    func write(into directory: URL) throws {
        try FileManager.default.ensureDirectory(directory)
        try LabJSON.encode(self).write(to: directory.appendingPathComponent(Self.fileName), options: .atomic)
    }

    static func load(from directory: URL) throws -> RunRecord? {
        let url = directory.appendingPathComponent(fileName)
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        do {
            return try JSONDecoder().decode(RunRecord.self, from: try RunLoader.readData(url))
        } catch let error as ReportError {
            throw error
        } catch {
            throw ReportError.badResultsJSON(path: url.path, reason: "\(error)")
        }
    }

    /// Writes the series into the run directory as a quilt directory (`series/series` + patches).
    static func writeSeries(_ series: PatchSeries, into directory: URL) throws {
        let dir = directory.appendingPathComponent(seriesDirectory)
        try? FileManager.default.removeItem(at: dir)
        try FileManager.default.ensureDirectory(dir)
        var names: [String] = []
        for patch in series.patches {
            let name = patchFileName(patch.name)
            try Data(patch.text.utf8).write(to: dir.appendingPathComponent(name), options: .atomic)
            names.append(name)
        }
        try Data((names.joined(separator: "\n") + "\n").utf8).write(to: dir.appendingPathComponent("series"), options: .atomic)
    }

    /// The series a run directory recorded, if it did.
    static func loadSeries(from directory: URL) -> PatchSeries? {
        let dir = directory.appendingPathComponent(seriesDirectory)
        guard FileManager.default.fileExists(atPath: dir.appendingPathComponent("series").path) else { return nil }
        return try? PatchSeries.load(from: dir)
    }

    /// The files of the patches this variant applied, in order.
    func appliedPatchFiles(in directory: URL) -> [URL] {
        guard let manifest else { return [] }
        let dir = directory.appendingPathComponent(Self.seriesDirectory)
        return manifest.patches.filter { $0.state == .applied }.map { dir.appendingPathComponent(Self.patchFileName($0.name)) }
            .filter { FileManager.default.fileExists(atPath: $0.path) }
    }

    static func patchFileName(_ name: String) -> String {
        let file = name.replacingOccurrences(of: "/", with: "_")
        return file.hasSuffix(".patch") ? file : file + ".patch"
    }
}

extension VariantResult {
    /// A variant as a run directory recorded it: results.json (or the KTAP/console beside it) and
    /// variant.json.
    init(runDirectory: URL) throws {
        let record = try RunRecord.load(from: runDirectory)
        let run: TestRun? = (try? RunLoader.load(runDirectory: runDirectory))
        guard record != nil || run != nil else { throw ReportError.emptyRunDirectory(runDirectory.path) }
        self.init(
            label: record?.label ?? runDirectory.lastPathComponent, selection: record?.selection ?? .full,
            manifest: record?.manifest, run: record?.problem == nil ? run : nil, runDirectory: runDirectory,
            problem: record?.problem, problemExit: record?.problemExit.flatMap(LabExit.init(rawValue:)),
            ending: record?.bootOutcome.flatMap { BootOutcome.Kind(name: $0, status: record?.guestExitStatus ?? 0) },
            seconds: record?.seconds ?? 0)
    }
}
