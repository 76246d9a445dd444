import Foundation
import LabSupport

/// Fetches a series from the list archive by Message-ID with `b4 am`, the way kernel developers
/// get series, into a directory p2plab's `--series` takes.
public struct SeriesFetcher: Sendable {
    public let runner: Runner
    /// The b4 to run: `$P2PLAB_B4`, else `b4` on PATH; nil when there is none.
    public let b4: String?
    public var timeout: Double = 300

    public init(runner: Runner, b4: String? = SeriesFetcher.findB4()) {
        self.runner = runner
        self.b4 = b4
    }

    public static func findB4(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        if let explicit = environment["P2PLAB_B4"], !explicit.isEmpty { return explicit }
        return which("b4", path: environment["PATH"])
    }

    /// `<id>`, `id`, `https://lore.kernel.org/r/id/`, `https://patch.msgid.link/id` → `id`.
    public static func messageID(_ text: String) -> String {
        var s = text.trimmingCharacters(in: .whitespaces)
        if let scheme = s.range(of: "://") {
            let path = s[scheme.upperBound...].split(separator: "/").dropFirst()  // drop the host
                .map { $0.removingPercentEncoding ?? String($0) }
            s = path.last { $0.contains("@") } ?? s
        }
        return s.trimmingCharacters(in: CharacterSet(charactersIn: "<>"))
    }

    /// What `b4 am` wrote.
    public struct Fetched: Sendable {
        /// The `.mbx` to pass to `--series`.
        public var mbox: URL
        public var series: PatchSeries
    }

    /// Runs `b4 am -o OUTPUT MSGID` (with `-m MBOX`, offline, when the thread is already saved) and
    /// loads what it wrote.
    public func fetch(_ rawID: String, output: URL, mbox: URL? = nil) async throws -> Fetched {
        let id = Self.messageID(rawID)
        guard id.contains("@") else { throw FetchError.badMessageID(rawID) }
        guard let b4 else { throw FetchError.b4Missing(id: id, mbox: mbox?.path) }
        let fm = FileManager.default
        try fm.ensureDirectory(output)
        let before = Set((try? fm.contentsOfDirectory(atPath: output.path)) ?? [])
        var arguments = [b4]
        if mbox != nil { arguments.append("--offline-mode") }
        arguments += ["am", "--no-parent", "-o", output.path]
        if let mbox { arguments += ["-m", mbox.path] }
        arguments.append(id)
        let result: RunResult
        do {
            result = try await runner.capture(Command(arguments), timeout: timeout)
        } catch RunError.timedOut {
            throw FetchError.offline(id: id, reason: "b4 am gave no answer in \(Int(timeout)) s")
        }
        let said = result.standardError + result.standardOutput
        guard result.succeeded else {
            if mbox == nil, Self.isNetworkFailure(said) {
                throw FetchError.offline(id: id, reason: Self.reason(said))
            }
            throw FetchError.b4Failed(id: id, detail: said.lastLines(5))
        }
        let written = ((try? fm.contentsOfDirectory(atPath: output.path)) ?? []).filter { $0.hasSuffix(".mbx") }
        guard let name = written.first(where: { !before.contains($0) }) ?? written.sorted().last else {
            throw FetchError.b4Failed(id: id, detail: said.lastLines(5))
        }
        let file = output.appendingPathComponent(name)
        return Fetched(mbox: file, series: try PatchSeries.load(from: file))
    }

    /// b4 says so when the archive could not be reached (no network, no DNS, a proxy refusing).
    static func isNetworkFailure(_ text: String) -> Bool {
        ["Could not retrieve thread", "Failed to resolve", "Max retries exceeded", "Name or service not known",
         "Connection refused", "Network is unreachable", "timed out"].contains { text.contains($0) }
    }

    /// The shortest line of b4's output that says what failed.
    static func reason(_ text: String) -> String {
        for marker in ["Failed to resolve", "Connection refused", "Network is unreachable", "timed out"] where text.contains(marker) {
            return marker.lowercased() == "failed to resolve" ? "the archive's host name does not resolve" : marker.lowercased()
        }
        return "the archive could not be reached"
    }
}

/// Fetching a series failed.
public enum FetchError: LabError, Equatable {
    case badMessageID(String)
    case b4Missing(id: String, mbox: String?)
    case offline(id: String, reason: String)
    case b4Failed(id: String, detail: String)

    public var exitCode: LabExit {
        switch self {
        case .badMessageID: .usage
        case .b4Missing: .missingDependency
        case .offline: .badSource
        case .b4Failed: .badSeries
        }
    }

    public var description: String {
        switch self {
        case .badMessageID(let s):
            "not a Message-ID: \(s): pass the cover letter's Message-ID, like 20240808183340.483468-1-martin.oliveira@eideticom.com"
        case .b4Missing(let id, let mbox):
            if let mbox {
                "b4 is not installed: pass the mbox itself with --series \(shellQuote(mbox)), or install b4 (pip install b4) and run this again"
            } else {
                "b4 is not installed: install it (pip install b4) and run this again, or run `b4 am \(id)` where it is and pass the .mbx with --series"
            }
        case .offline(let id, let reason):
            "cannot fetch \(id): \(reason); on a machine with network run `b4 am -o DIR \(id)` and pass DIR's .mbx with --series, or save the thread as an mbox and run `p2plab series fetch \(id) --mbox FILE`"
        case .b4Failed(let id, let detail):
            "b4 am \(id) failed: \(detail.split(separator: "\n").last.map(String.init) ?? "no output"): check the Message-ID (the cover letter's or any patch's)"
        }
    }
}
