import Foundation
import LabSupport

/// One patch of a series, in `git format-patch` / mbox form.
public struct Patch: Sendable, Equatable, Codable {
    /// 1-based position in the series.
    public var index: Int
    /// File name (or a name made from the subject for mbox input).
    public var name: String
    /// The subject without the `[PATCH n/m]` prefix.
    public var subject: String
    /// `Name <email>` from the From: header.
    public var author: String
    /// The whole patch text, as `git am` takes it.
    public var text: String
    /// The Message-ID the patch was mailed with (without angle brackets), when the text says.
    public var messageID: String? = nil

    /// Files the patch touches, from its `diff --git` lines.
    public var files: [String] {
        text.split(separator: "\n").compactMap { line -> String? in
            guard line.hasPrefix("diff --git a/") else { return nil }
            let parts = line.split(separator: " ")
            guard parts.count >= 4 else { return nil }
            return String(parts[3].dropFirst(2))
        }
    }

    /// A stable content hash of the patch text (FNV-1a, 64 bit, hex).
    public var contentHash: String { fnv1a64Hex(text) }

    /// The SHA-256 of the patch text, as `sha256sum` prints it for the patch file.
    public var sha256: String { SHA256.hex(text) }
}

/// The cover letter (`[PATCH 0/N]`) a series was mailed with: it carries no diff, and its
/// Message-ID names the series on the list.
public struct CoverLetter: Sendable, Equatable {
    public var subject: String
    public var messageID: String?
    public var text: String
}

/// An ordered patch series.
public struct PatchSeries: Sendable, Equatable {
    public var patches: [Patch]
    /// Where it was read from.
    public var origin: String
    /// The cover letter, when the series came with one.
    public var coverLetter: CoverLetter?

    public init(patches: [Patch], origin: String, coverLetter: CoverLetter? = nil) {
        self.patches = patches
        self.origin = origin
        self.coverLetter = coverLetter
    }

    /// A hash over every patch's text, in order.
    public var contentHash: String { fnv1a64Hex(patches.map(\.text).joined(separator: "\u{0}")) }

    /// The series' id on the list: its cover letter's Message-ID, else its first patch's.
    public var id: String? { coverLetter?.messageID ?? patches.first?.messageID }

    /// KCIDB's patchset hash: the SHA-256 over the newline-terminated SHA-256 hex digests of each
    /// patch, in order (`sha256sum *.patch | cut -c-64 | sha256sum | cut -c-64`); empty when no
    /// patch is applied.
    public static func patchsetHash<Patches: Sequence>(_ patches: Patches) -> String where Patches.Element == Patch {
        let digests = patches.map { $0.sha256 + "\n" }
        return digests.isEmpty ? "" : SHA256.hex(digests.joined())
    }

    /// Loads a series: a directory holding a quilt-style `series` file, or one mbox file
    /// (as `b4 am` or `git format-patch --stdout` writes).
    public static func load(from path: URL) throws -> PatchSeries {
        let fm = FileManager.default
        guard fm.fileExists(atPath: path.path) else { throw SeriesError.missing(path.path) }
        if fm.isDirectory(path) {
            let seriesFile = path.appendingPathComponent("series")
            guard let listing = try? String(contentsOf: seriesFile, encoding: .utf8) else {
                throw SeriesError.noSeriesFile(path.path)
            }
            var patches: [Patch] = []
            for rawLine in listing.split(separator: "\n") {
                let line = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0]
                    .trimmingCharacters(in: .whitespaces)
                if line.isEmpty { continue }
                let name = String(line.split(separator: " ")[0])
                let file = path.appendingPathComponent(name)
                guard let text = try? String(contentsOf: file, encoding: .utf8) else {
                    throw SeriesError.missing(file.path)
                }
                patches.append(try parsePatch(text, index: patches.count + 1, name: name))
            }
            guard !patches.isEmpty else { throw SeriesError.empty(seriesFile.path) }
            // git format-patch --cover-letter names it 0000-cover-letter.patch; it is not in the series file.
            let cover = (try? String(contentsOf: path.appendingPathComponent("0000-cover-letter.patch"), encoding: .utf8)).map(parseCoverLetter)
            return PatchSeries(patches: patches, origin: path.path, coverLetter: cover)
        }
        guard let text = try? String(contentsOf: path, encoding: .utf8) else { throw SeriesError.unreadable(path.path) }
        var series = try parseMbox(text, origin: path.path)
        // b4 am writes the cover letter beside the patches: NAME.mbx and NAME.cover.
        if series.coverLetter == nil,
           let cover = try? String(contentsOf: path.deletingPathExtension().appendingPathExtension("cover"), encoding: .utf8) {
            series.coverLetter = parseCoverLetter(cover)
        }
        return series
    }

    /// Splits an mbox into patches. The cover letter (`[PATCH 0/N]`, no diff; `git am` stops at it
    /// with "Patch is empty") is kept aside as the series' cover; other messages without a diff
    /// (replies) are dropped.
    public static func parseMbox(_ text: String, origin: String) throws -> PatchSeries {
        var messages: [[Substring]] = []
        var current: [Substring] = []
        var previousBlank = true
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("From "), previousBlank, isMboxSeparator(line) {
                if !current.isEmpty { messages.append(current) }
                current = [line]
            } else {
                current.append(line)
            }
            previousBlank = line.trimmingCharacters(in: .whitespaces).isEmpty
        }
        if !current.isEmpty { messages.append(current) }
        var patches: [Patch] = []
        var cover: CoverLetter?
        for message in messages {
            let body = message.joined(separator: "\n")
            guard body.contains("\ndiff --git ") else {
                let letter = parseCoverLetter(body)
                if cover == nil, isCoverSubject(letter.subject) { cover = letter }
                continue
            }
            let patch = try parsePatch(body, index: patches.count + 1, name: nil)
            patches.append(patch)
        }
        guard !patches.isEmpty else { throw SeriesError.empty(origin) }
        return PatchSeries(patches: patches, origin: origin, coverLetter: cover)
    }

    /// `[PATCH v5 0/4] …`, `[RFC PATCH 00/12] …`: a cover letter's subject.
    static func isCoverSubject(_ subject: String) -> Bool {
        guard subject.hasPrefix("["), let close = subject.firstIndex(of: "]") else { return false }
        return subject[subject.index(after: subject.startIndex)..<close].split(separator: " ").contains { word in
            let parts = word.split(separator: "/", omittingEmptySubsequences: false)
            return parts.count == 2 && !parts[0].isEmpty && parts[0].allSatisfy { $0 == "0" } && Int(parts[1]) != nil
        }
    }

    static func parseCoverLetter(_ text: String) -> CoverLetter {
        let headers = parseHeaders(text)
        return CoverLetter(subject: headers.subject, messageID: headers.messageID, text: text)
    }

    /// The Subject (unfolded), From and Message-ID headers of one message; names are case-insensitive.
    static func parseHeaders(_ text: String) -> (subject: String, author: String, messageID: String?) {
        var subject = ""
        var author = ""
        var messageID: String?
        var current = ""
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.isEmpty { break }  // end of headers
            if line.first == " " || line.first == "\t" {
                if current == "subject" { subject += " " + line.trimmingCharacters(in: .whitespaces) }
                continue
            }
            guard let colon = line.firstIndex(of: ":") else { current = ""; continue }
            current = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            switch current {
            case "subject": subject = value
            case "from": author = value
            case "message-id":
                let id = value.trimmingCharacters(in: CharacterSet(charactersIn: "<>"))
                messageID = id.isEmpty ? nil : id
            default: break
            }
        }
        return (subject, author, messageID)
    }

    /// `From <40 hex or git@z> <date>` lines separate mbox messages.
    static func isMboxSeparator(_ line: Substring) -> Bool {
        let parts = line.split(separator: " ", omittingEmptySubsequences: true)
        return parts.count >= 3 && (parts[1].count == 40 || parts[1].contains("@"))
    }

    /// Parses one patch's headers, checking it carries a diff.
    static func parsePatch(_ text: String, index: Int, name: String?) throws -> Patch {
        let (subject, author, messageID) = parseHeaders(text)
        let displayName = name ?? String(format: "%04d-%@.patch", index, slug(stripPatchPrefix(subject)))
        guard text.contains("diff --git ") else { throw SeriesError.notAPatch(displayName) }
        guard !subject.isEmpty, !author.isEmpty else { throw SeriesError.noHeaders(displayName) }
        return Patch(index: index, name: displayName, subject: stripPatchPrefix(subject), author: author,
                     text: text.hasSuffix("\n") ? text : text + "\n", messageID: messageID)
    }

    /// `[PATCH v2 3/4] mm/gup: …` → `mm/gup: …`
    static func stripPatchPrefix(_ subject: String) -> String {
        var s = subject.trimmingCharacters(in: .whitespaces)
        while s.hasPrefix("["), let close = s.firstIndex(of: "]") {
            s = String(s[s.index(after: close)...]).trimmingCharacters(in: .whitespaces)
        }
        return s
    }

    /// The file-name part git format-patch makes of a subject: letters, digits, `_` and `.` kept,
    /// runs of anything else one `-`, at most 52 characters.
    static func slug(_ subject: String) -> String {
        var out = ""
        for ch in subject {
            if ch.isASCII && (ch.isLetter || ch.isNumber || ch == "_" || (ch == "." && out.last != ".")) { out.append(ch) }
            else if out.last != "-" { out.append("-") }
        }
        return String(out.trimmingCharacters(in: CharacterSet(charactersIn: "-.")).prefix(52)).trimmingCharacters(in: CharacterSet(charactersIn: "-."))
    }

    /// The patches a selection keeps, in order.
    public func selecting(_ selection: PatchSelection) throws -> [Patch] {
        for n in selection.without where n < 1 || n > patches.count {
            throw SeriesError.badSelection("--without \(n): the series has \(patches.count) patches")
        }
        if let upto = selection.upto, upto < 0 || upto > patches.count {
            throw SeriesError.badSelection("--upto \(upto): the series has \(patches.count) patches")
        }
        let limit = selection.upto ?? patches.count
        return patches.filter { $0.index <= limit && !selection.without.contains($0.index) }
    }
}

/// Which patches of a series to apply: the first `upto` (nil = all), minus `without`.
public struct PatchSelection: Sendable, Equatable, Hashable, Codable {
    public var upto: Int?
    public var without: [Int]

    public init(upto: Int? = nil, without: [Int] = []) {
        self.upto = upto
        self.without = without.sorted()
    }

    public static let full = PatchSelection()
    public static let baseline = PatchSelection(upto: 0)

    /// A short name for branches and run directories: `series`, `baseline`, `upto-2`, `without-1`, …
    public var label: String {
        var parts: [String] = []
        if upto == 0 { return "baseline" }
        if let upto { parts.append("upto-\(upto)") }
        if !without.isEmpty { parts.append("without-" + without.map(String.init).joined(separator: ",")) }
        return parts.isEmpty ? "series" : parts.joined(separator: "-")
    }
}

/// Problems with a patch series.
public enum SeriesError: LabError, Equatable {
    case missing(String)
    case noSeriesFile(String)
    case unreadable(String)
    case empty(String)
    case notAPatch(String)
    case noHeaders(String)
    case badSelection(String)
    case unknownVersion(String, bundled: [String])
    /// `renames`: identifiers the hunk spells otherwise than the tree; `bundled`: a bundled version
    /// with the same patches, rebased for the Debian source.
    case doesNotApply(patch: String, file: String, hunk: String, detail: String, renames: [IdentifierRename] = [], bundled: String? = nil)
    case ambiguousHunk(patch: String, file: String, hunk: String, candidates: [Int])
    case hunkNotFound(patch: String, file: String, hunk: String)

    public var exitCode: LabExit {
        switch self {
        case .doesNotApply: .patchDoesNotApply
        case .badSelection, .unknownVersion: .usage
        default: .badSeries
        }
    }

    public var description: String {
        switch self {
        case .missing(let p): "series not found: \(p): pass --series DIR (with a series file) or an mbox"
        case .noSeriesFile(let p): "no series file in \(p): list the patches, one per line, in \(p)/series"
        case .unreadable(let p): "cannot read \(p) as text: pass a directory with a series file or an mbox"
        case .empty(let p): "no patches found in \(p): expected git format-patch files or an mbox with diffs"
        case .notAPatch(let p): "\(p) holds no diff: is it a cover letter or a corrupt patch?"
        case .noHeaders(let p): "\(p) has no From:/Subject: headers: regenerate it with git format-patch"
        case .badSelection(let s): "bad patch selection: \(s)"
        case .unknownVersion(let name, let bundled):
            "no bundled series \(name): p2plab has \(bundled.joined(separator: ", ")); pass one of them or a path with --series"
        case .doesNotApply(let patch, let file, let hunk, let detail, let renames, let bundled):
            "patch \(patch) does not apply: \(file), hunk \(hunk)" + (detail.isEmpty ? "" : "\n\(detail)")
                + "\n" + Self.advice(renames: renames, bundled: bundled)
        case .ambiguousHunk(let patch, let file, let hunk, let candidates):
            "patch \(patch): \(file) hunk matches the tree in \(candidates.count) places (lines \(candidates.map(String.init).joined(separator: ", "))); fix the hunk by hand:\n\(hunk)"
        case .hunkNotFound(let patch, let file, let hunk):
            "patch \(patch): \(file) hunk does not match the tree anywhere; rebase it by hand:\n\(hunk)"
        }
    }
}

extension SeriesError {
    /// What to do about a patch that does not apply: "the hunk says kernfs_get_active; the tree
    /// calls it kernfs_get_active_of: rebase the hunk, or use the bundled --series v5".
    static func advice(renames: [IdentifierRename], bundled: String?) -> String {
        guard !renames.isEmpty else {
            return "rebase the series onto this tree, or pick another --base" + (bundled.map { ", or use the bundled --series \($0)" } ?? "")
        }
        let list = { (names: [String]) in
            names.count == 1 ? names[0] : names.dropLast().joined(separator: ", ") + " and " + names.last!
        }
        return "the hunk says \(list(renames.map(\.hunk))); the tree calls \(renames.count == 1 ? "it" : "them") \(list(renames.map(\.tree))): "
            + "rebase the hunk" + (bundled.map { ", or use the bundled --series \($0)" } ?? "")
    }
}
