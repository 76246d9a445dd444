import Foundation
import KTAP
import LabSupport

/// Why a report's input could not be used.
public enum ReportError: LabError, Equatable {
    case unreadable(path: String, reason: String)
    case emptyRunDirectory(String)
    case badResultsJSON(path: String, reason: String)
    case cannotWrite(path: String, reason: String)
    case emptyInput(String)
    case mixedRuns(String)
    case submitFailed(String)

    public var exitCode: LabExit {
        switch self {
        case .submitFailed: .couldNotTest
        default: .usage
        }
    }

    public var description: String {
        switch self {
        case .unreadable(let path, let reason):
            "cannot read \(path): \(reason)"
        case .emptyRunDirectory(let path):
            "\(path) has no results.json, results.ktap or console.log; pass a run directory from p2plab test"
        case .badResultsJSON(let path, let reason):
            "\(path) is not a p2plab results file (\(reason)); try p2plab parse on its results.ktap or console.log"
        case .cannotWrite(let path, let reason):
            "cannot write \(path): \(reason)"
        case .mixedRuns(let what):
            "these runs do not belong to one matrix: \(what); merge runs of one source, series and config (or pass --allow-mixed)"
        case .submitFailed(let why):
            "KCIDB submission failed: \(why)"
        case .emptyInput(let path):
            "\(path) is empty: there is nothing to parse; pass a console log or dmesg capture"
        }
    }
}

/// Finds and reads a run's results, and writes them into a run directory.
public enum RunLoader {
    /// results.json, else results.ktap (with console.log scanned beside it), else console.log.
    public static func load(runDirectory: URL) throws -> TestRun {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: runDirectory.path, isDirectory: &isDirectory) else {
            throw ReportError.unreadable(path: runDirectory.path, reason: "no such directory; pass a run directory from p2plab test")
        }
        guard isDirectory.boolValue else {
            throw ReportError.unreadable(path: runDirectory.path, reason: "not a directory; for a log file use p2plab parse")
        }
        let json = runDirectory.appendingPathComponent(ReportFormat.json.fileName)
        let ktap = runDirectory.appendingPathComponent(ReportFormat.ktap.fileName)
        let console = runDirectory.appendingPathComponent("console.log")
        if fm.fileExists(atPath: json.path) {
            let data = try readData(json)
            do {
                return try JSONRenderer.decode(data)
            } catch {
                throw ReportError.badResultsJSON(path: json.path, reason: "\(error)")
            }
        }
        if fm.fileExists(atPath: ktap.path) {
            // The KTAP file is clean; a panic only shows in the console beside it.
            let consoleText = fm.fileExists(atPath: console.path) ? try readText(console) : nil
            return KTAPParser.parse(try readText(ktap), options: .init(consoleLog: consoleText))
        }
        if fm.fileExists(atPath: console.path) {
            return KTAPParser.parse(try readText(console))
        }
        throw ReportError.emptyRunDirectory(runDirectory.path)
    }

    /// A file (or stdin for nil) as text; serial captures carry stray bytes, so invalid UTF-8 is
    /// replaced rather than refused.
    public static func readText(_ url: URL?) throws -> String {
        let data = url == nil ? FileHandle.standardInput.readDataToEndOfFile() : try readData(url!)
        if data.isEmpty { throw ReportError.emptyInput(url?.path ?? "standard input") }
        return String(decoding: data, as: UTF8.self)
    }

    /// The file's bytes; works on pipes and devices too (`/dev/stdin`, a FIFO), which
    /// `Data(contentsOf:)` refuses with a misleading "permission" error.
    public static func readData(_ url: URL) throws -> Data {
        let fm = FileManager.default
        if fm.isDirectory(url) { throw ReportError.unreadable(path: url.path, reason: "it is a directory") }
        guard fm.fileExists(atPath: url.path) else { throw ReportError.unreadable(path: url.path, reason: "no such file") }
        guard fm.isReadableFile(atPath: url.path), let handle = FileHandle(forReadingAtPath: url.path) else {
            throw ReportError.unreadable(path: url.path, reason: "permission denied (try as its owner, or sudo)")
        }
        defer { try? handle.close() }
        do {
            return try handle.readToEnd() ?? Data()
        } catch {
            throw ReportError.unreadable(path: url.path, reason: "\(error)")
        }
    }

    /// results.ktap, results.json and junit.xml, the files `p2plab test` leaves in a run directory.
    public static func write(_ run: TestRun, into directory: URL) throws {
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw ReportError.cannotWrite(path: directory.path, reason: (error as NSError).localizedDescription)
        }
        for format in [ReportFormat.ktap, .json, .junit] {
            let url = directory.appendingPathComponent(format.fileName)
            do {
                try Data(format.render(run).utf8).write(to: url, options: .atomic)
            } catch {
                throw ReportError.cannotWrite(path: url.path, reason: (error as NSError).localizedDescription)
            }
        }
    }
}
