import Foundation
import LabSupport

/// Imports a patch series from mail text whose whitespace was mangled on the way (web archives:
/// context lines lost their leading space, indentation was flattened), by matching each hunk
/// against the tree it is meant for and taking the exact text of context and removed lines from
/// the tree. Added lines get their indentation from the code around them.
public struct MangledImport: Sendable {
    /// One hunk match that was not exact (the tree differs a little from what the patch expected).
    public struct Note: Sendable, Equatable {
        public var patch: String
        public var file: String
        public var message: String
    }

    /// The result: repaired patches in `git format-patch` form, plus notes and what was missing.
    public struct Result: Sendable {
        public var patches: [Patch]
        public var notes: [Note]
        /// Patch numbers the text announces (`n/m`) but does not contain.
        public var missing: [Int]
        public var total: Int
    }

    /// Reads a file of the tree the series is meant for (relative path → lines), or nil.
    public let readFile: @Sendable (String) -> [String]?
    /// Fraction of a hunk's old lines that must equal the tree for a fuzzy match.
    public var fuzzyThreshold = 0.7

    public init(readFile: @escaping @Sendable (String) -> [String]?) {
        self.readFile = readFile
    }

    /// A reader over a directory tree.
    public static func treeReader(_ root: URL) -> @Sendable (String) -> [String]? {
        { path in
            guard let text = try? String(contentsOf: root.appendingPathComponent(path), encoding: .utf8) else { return nil }
            var lines = text.components(separatedBy: "\n")
            if lines.last == "" { lines.removeLast() }
            return lines
        }
    }

    // MARK: - Messages

    struct Message {
        var number: Int
        var total: Int
        var subject: String
        var author: String
        var date: String?
        var body: [String]
    }

    /// Splits the text into patch messages: `Subject: [PATCH … n/m] …` lines (not `Re:`), each
    /// running until the next message's header block.
    static func messages(in text: String) -> [Message] {
        let lines = text.components(separatedBy: "\n").map { $0.hasSuffix("\r") ? String($0.dropLast()) : $0 }
        var starts: [Int] = []
        for (i, line) in lines.enumerated() where line.hasPrefix("Subject:") { starts.append(i) }
        var result: [Message] = []
        for (k, start) in starts.enumerated() {
            let subjectLine = lines[start].dropFirst("Subject:".count).trimmingCharacters(in: .whitespaces)
            guard subjectLine.hasPrefix("["), !subjectLine.lowercased().hasPrefix("re:"),
                  let close = subjectLine.firstIndex(of: "]") else { continue }
            let tag = subjectLine[subjectLine.index(after: subjectLine.startIndex)..<close]
            guard tag.uppercased().contains("PATCH"),
                  let fraction = tag.split(separator: " ").last, fraction.contains("/"),
                  let n = Int(fraction.split(separator: "/")[0]), let m = Int(fraction.split(separator: "/")[1]), n >= 1 else { continue }
            let subject = subjectLine[subjectLine.index(after: close)...].trimmingCharacters(in: .whitespaces)
            // Header block above the Subject: "by Name" or "From: Name", and a date line.
            var author = ""
            var date: String?
            var j = start - 1
            let floor = k > 0 ? starts[k - 1] + 1 : 0
            while j >= floor && j >= start - 12 {
                let l = lines[j].trimmingCharacters(in: .whitespaces)
                if l.hasPrefix("by ") && author.isEmpty { author = String(l.dropFirst(3)) }
                if l.hasPrefix("From: ") && author.isEmpty { author = String(l.dropFirst(6)) }
                if date == nil, l.count >= 19, l.first?.isNumber == true, l.contains("-"), l.contains(":") { date = l }
                j -= 1
            }
            let end = k + 1 < starts.count ? headerStart(lines, before: starts[k + 1], floor: start + 1) : lines.count
            result.append(Message(number: n, total: m, subject: subject, author: author, date: date,
                                  body: Array(lines[(start + 1)..<max(start + 1, end)])))
        }
        return result
    }

    /// Where the header block (date, "by Name", "[permalink]") before a Subject line begins.
    static func headerStart(_ lines: [String], before subject: Int, floor: Int) -> Int {
        var j = subject - 1
        while j > floor && subject - j < 12 {
            let l = lines[j].trimmingCharacters(in: .whitespaces)
            if l.isEmpty || l.hasPrefix("by ") || l.hasPrefix("[permalink]") || l.hasPrefix("From: ") || l.hasPrefix("Date: ")
                || (l.first?.isNumber == true && l.contains(":")) {
                j -= 1
            } else { break }
        }
        return j + 1
    }

    // MARK: - Import

    /// Repairs every patch of `text` against the tree.
    public func run(text: String) throws -> Result {
        let messages = Self.messages(in: text)
        var patches: [Patch] = []
        var notes: [Note] = []
        var state: [String: [String]] = [:]
        var total = 0
        for message in messages where message.body.contains(where: { $0.hasPrefix("diff --git ") }) {
            total = max(total, message.total)
            let name = String(format: "%04d-%@.patch", message.number, PatchSeries.slug(message.subject))
            let (log, diffs) = Self.split(message.body)
            var repaired: [String] = []
            for diff in diffs {
                let (lines, fileNotes) = try repair(diff: diff, patch: name, state: &state)
                repaired += lines
                notes += fileNotes
            }
            let email = Self.email(for: message.author, in: log)
            var out = "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
            out += "From: \(message.author) <\(email)>\n"
            if let date = message.date, let rfc = Self.rfc2822(date) { out += "Date: \(rfc)\n" }
            out += "Subject: [PATCH \(message.number)/\(message.total)] \(message.subject)\n\n"
            out += log.joined(separator: "\n") + "\n---\n\n" + repaired.joined(separator: "\n") + "\n-- \np2plab series import\n\n"
            patches.append(Patch(index: message.number, name: name, subject: message.subject,
                                 author: "\(message.author) <\(email)>", text: out))
        }
        guard !patches.isEmpty else { throw SeriesError.empty("the imported text") }
        patches.sort { $0.index < $1.index }
        let present = Set(patches.map(\.index))
        let missing = total > 0 ? (1...total).filter { !present.contains($0) } : []
        return Result(patches: patches, notes: notes, missing: missing, total: total)
    }

    /// Splits a message body into the commit message and the per-file diffs.
    static func split(_ body: [String]) -> (log: [String], diffs: [[String]]) {
        var log: [String] = []
        var diffs: [[String]] = []
        var inLog = true
        for line in body {
            if line.hasPrefix("diff --git ") { inLog = false; diffs.append([line]); continue }
            if inLog {
                if line == "---" { inLog = false; continue }
                log.append(line)
            } else if !diffs.isEmpty {
                diffs[diffs.count - 1].append(line)
            }
        }
        while log.first?.trimmingCharacters(in: .whitespaces).isEmpty == true { log.removeFirst() }
        while log.last?.trimmingCharacters(in: .whitespaces).isEmpty == true { log.removeLast() }
        return (log, diffs)
    }

    /// The author's address from a matching Signed-off-by line, if the archive kept it.
    static func email(for author: String, in log: [String]) -> String {
        for line in log where line.hasPrefix("Signed-off-by: \(author) <") {
            let addr = line.split(separator: "<").last.map { String($0.dropLast()) } ?? ""
            if addr.contains("@") && !addr.contains(" ") && !addr.contains("[email") { return addr }
        }
        return "unknown@p2plab.invalid"
    }

    /// `2024-06-11 18:29:53` → `Tue, 11 Jun 2024 18:29:53 +0000`.
    static func rfc2822(_ text: String) -> String? {
        let parse = DateFormatter()
        parse.locale = Locale(identifier: "en_US_POSIX")
        parse.timeZone = TimeZone(identifier: "UTC")
        parse.dateFormat = "yyyy-MM-dd HH:mm:ss"
        guard let date = parse.date(from: text) else { return nil }
        let out = DateFormatter()
        out.locale = parse.locale
        out.timeZone = parse.timeZone
        out.dateFormat = "EEE, dd MMM yyyy HH:mm:ss Z"
        return out.string(from: date)
    }

    // MARK: - Hunks

    enum Kind { case context, removed, added }

    /// Repairs one file's diff; `state` carries each file as earlier patches left it.
    func repair(diff: [String], patch: String, state: inout [String: [String]]) throws -> ([String], [Note]) {
        guard let header = diff.first, let bPath = header.split(separator: " ").last, bPath.hasPrefix("b/") else {
            throw SeriesError.notAPatch(patch)
        }
        let file = String(bPath.dropFirst(2))
        guard var lines = state[file] ?? readFile(file) else {
            throw SeriesError.hunkNotFound(patch: patch, file: file, hunk: "(the file is not in the tree)")
        }
        var out = ["diff --git a/\(file) b/\(file)", "--- a/\(file)", "+++ b/\(file)"]
        var notes: [Note] = []
        var i = diff.firstIndex { $0.hasPrefix("@@ ") } ?? diff.count
        var delta = 0
        var searchFrom = 0
        while i < diff.count {
            let head = diff[i]
            guard head.hasPrefix("@@ "), let counts = Self.hunkCounts(head) else { i += 1; continue }
            let trailer = head.components(separatedBy: " @@").dropFirst().joined(separator: " @@")
            i += 1
            var body: [(Kind, String)] = []
            var oldSeen = 0, newSeen = 0
            while i < diff.count, oldSeen < counts.old || newSeen < counts.new {
                let raw = diff[i]
                if raw.hasPrefix("@@ ") || raw.hasPrefix("diff --git ") { break }
                if raw.hasPrefix("-") { body.append((.removed, String(raw.dropFirst()))); oldSeen += 1 }
                else if raw.hasPrefix("+") { body.append((.added, String(raw.dropFirst()))); newSeen += 1 }
                else { body.append((.context, raw.hasPrefix(" ") ? String(raw.dropFirst()) : raw)); oldSeen += 1; newSeen += 1 }
                i += 1
            }
            let hunkText = ([head] + body.map { ($0.0 == .added ? "+" : $0.0 == .removed ? "-" : " ") + $0.1 }).joined(separator: "\n")
            let old = body.filter { $0.0 != .added }.map { Self.normalize($0.1) }
            let (at, fuzzy) = try locate(old, in: lines, from: searchFrom, patch: patch, file: file, hunk: hunkText)
            if fuzzy > 0 {
                notes.append(Note(patch: patch, file: file, message: "hunk at line \(at + 1) matched with \(fuzzy) line(s) differing from the posting; the tree's lines were used"))
            }
            // Rebuild the hunk: old lines verbatim from the tree, added lines re-indented.
            var k = at
            var rebuilt: [(Kind, String)] = []
            var newLines: [String] = []
            for (kind, text) in body {
                switch kind {
                case .context, .removed:
                    let exact = lines[k]; k += 1
                    rebuilt.append((kind, exact))
                    if kind == .context { newLines.append(exact) }
                case .added:
                    let trimmed = text.trimmingCharacters(in: .whitespaces)
                    let line = trimmed.isEmpty ? "" : Self.indentation(after: newLines, lines: lines, before: at) + trimmed
                    rebuilt.append((.added, line))
                    newLines.append(line)
                }
            }
            let oldCount = body.filter { $0.0 != .added }.count
            let newCount = body.filter { $0.0 != .removed }.count
            out.append("@@ -\(at + 1),\(oldCount) +\(at + 1 + delta),\(newCount) @@" + (trailer.isEmpty ? "" : " " + trailer.trimmingCharacters(in: .whitespaces)))
            out += rebuilt.map { ($0.0 == .added ? "+" : $0.0 == .removed ? "-" : " ") + $0.1 }
            lines.replaceSubrange(at..<(at + oldCount), with: newLines)
            delta += newCount - oldCount
            searchFrom = at + newCount
        }
        state[file] = lines
        return (out, notes)
    }

    /// Finds where the old lines stand in the tree: exactly once, or (failing that) as the one
    /// clearly best near-match. Returns the index and how many lines differed.
    func locate(_ old: [String], in lines: [String], from: Int, patch: String, file: String, hunk: String) throws -> (Int, Int) {
        let normalized = lines.map(Self.normalize)
        guard !old.isEmpty, old.count <= normalized.count else { throw SeriesError.hunkNotFound(patch: patch, file: file, hunk: hunk) }
        var exact: [Int] = []
        var best = (index: -1, score: -1, ties: 0)
        for start in 0...(normalized.count - old.count) {
            var score = 0
            for j in 0..<old.count where normalized[start + j] == old[j] { score += 1 }
            if score == old.count { exact.append(start) }
            if score > best.score { best = (start, score, 1) } else if score == best.score { best.ties += 1 }
        }
        // Hunks of one file come in order; prefer matches after the previous hunk.
        let later = exact.filter { $0 >= from }
        if later.count == 1 { return (later[0], 0) }
        if exact.count == 1 { return (exact[0], 0) }
        if exact.count > 1 {
            throw SeriesError.ambiguousHunk(patch: patch, file: file, hunk: hunk, candidates: exact.map { $0 + 1 })
        }
        if best.ties == 1, Double(best.score) >= fuzzyThreshold * Double(old.count) {
            return (best.index, old.count - best.score)
        }
        throw SeriesError.hunkNotFound(patch: patch, file: file, hunk: hunk)
    }

    /// Whitespace-insensitive form of a line: mangling changed only whitespace.
    static func normalize(_ line: String) -> String {
        line.split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " ")
    }

    /// `@@ -a,b +c,d @@` → (b, d); a missing count is 1.
    static func hunkCounts(_ header: String) -> (old: Int, new: Int)? {
        let parts = header.split(separator: " ")
        guard parts.count >= 3, parts[1].hasPrefix("-"), parts[2].hasPrefix("+") else { return nil }
        func count(_ s: Substring) -> Int? {
            let f = s.dropFirst().split(separator: ",")
            return f.count > 1 ? Int(f[1]) : 1
        }
        guard let o = count(parts[1]), let n = count(parts[2]) else { return nil }
        return (o, n)
    }

    /// Kernel-style indentation for an added line from the lines before it: one tab deeper after
    /// an opening brace or a brace-less `if`/`for`/`while`/`else`, back out after that statement.
    static func indentation(after newLines: [String], lines: [String], before: Int) -> String {
        let previous = (newLines.reversed() + lines[..<before].reversed()).filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
        guard let prev = previous.first else { return "" }
        let indent = { (s: String) in String(s.prefix { $0 == " " || $0 == "\t" }) }
        let text = prev.trimmingCharacters(in: .whitespaces)
        if text.hasSuffix("{") || isBracelessHeader(text) { return indent(prev) + "\t" }
        if previous.count > 1, isBracelessHeader(previous[1].trimmingCharacters(in: .whitespaces)),
           indent(prev).count > indent(previous[1]).count {
            return indent(previous[1])
        }
        return indent(prev)
    }

    static func isBracelessHeader(_ text: String) -> Bool {
        let heads = ["if (", "if(", "for (", "while (", "else if (", "} else if ("]
        return (heads.contains { text.hasPrefix($0) } && text.hasSuffix(")")) || text == "else" || text == "} else"
    }
}
