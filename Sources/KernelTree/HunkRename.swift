/// An identifier the failing hunk spells one way and the tree another (`kernfs_get_active` in the
/// hunk, `kernfs_get_active_of` in 6.12): the usual reason a patch mailed for an older kernel stops
/// applying, and one the user fixes by rebasing the hunk.
public struct IdentifierRename: Sendable, Equatable, Codable {
    /// The name in the hunk.
    public var hunk: String
    /// The name in the tree.
    public var tree: String

    public init(hunk: String, tree: String) {
        self.hunk = hunk
        self.tree = tree
    }
}

/// Finds where a hunk that does not apply was meant to go, and whether the tree differs there only
/// by renamed identifiers.
public enum HunkRenames {
    /// The renames that explain why `hunk` (its old side: context and removed lines) does not match
    /// `tree`, or [] when the hunk's place cannot be found or the tree differs there in more than names.
    public static func explain(oldSide hunk: [String], tree: [String]) -> [IdentifierRename] {
        let n = hunk.count
        guard n >= 3, tree.count >= n else { return [] }
        let wanted = hunk.map(normalized)
        let lines = tree.map(normalized)
        // The window of the tree with the most lines equal to the hunk's; ties go to the first.
        var best = (start: -1, equal: 0)
        for start in 0...(lines.count - n) {
            var equal = 0
            for i in 0..<n where lines[start + i] == wanted[i] { equal += 1 }
            if equal > best.equal { best = (start, equal) }
        }
        let mismatches = n - best.equal
        guard best.start >= 0, mismatches >= 1, mismatches <= max(2, n / 3) else { return [] }
        var renames: [IdentifierRename] = []
        for i in 0..<n where lines[best.start + i] != wanted[i] {
            let found = renamesInLine(hunk: wanted[i], tree: lines[best.start + i])
            guard !found.isEmpty else { return [] }
            for rename in found where !renames.contains(rename) { renames.append(rename) }
        }
        return renames
    }

    /// The identifiers of `hunk` missing from `tree`, each paired with the tree identifier that is
    /// evidently the same name (one contains the other, or they share most of a long prefix).
    static func renamesInLine(hunk: String, tree: String) -> [IdentifierRename] {
        let hunkNames = identifiers(hunk)
        let treeNames = identifiers(tree)
        let onlyHunk = hunkNames.filter { !treeNames.contains($0) }
        let onlyTree = treeNames.filter { !hunkNames.contains($0) }
        var renames: [IdentifierRename] = []
        for old in onlyHunk where old.count >= 4 {
            let candidates = onlyTree.filter { new in
                guard new.count >= 4 else { return false }
                if new.contains(old) || old.contains(new) { return true }
                let common = zip(old, new).prefix { $0 == $1 }.count
                return common >= 6 && Double(common) >= 0.7 * Double(min(old.count, new.count))
            }
            let pick = candidates.max { commonPrefix(old, $0) < commonPrefix(old, $1) }
            if let pick, !renames.contains(where: { $0.tree == pick }) {
                renames.append(IdentifierRename(hunk: old, tree: pick))
            }
        }
        return renames
    }

    static func commonPrefix(_ a: String, _ b: String) -> Int { zip(a, b).prefix { $0 == $1 }.count }

    /// C identifiers in order of first appearance.
    static func identifiers(_ line: String) -> [String] {
        var names: [String] = []
        var current = ""
        for ch in line + " " {
            if ch == "_" || (ch.isASCII && (ch.isLetter || (ch.isNumber && !current.isEmpty))) {
                current.append(ch)
            } else {
                if !current.isEmpty, !names.contains(current) { names.append(current) }
                current = ""
            }
        }
        return names
    }

    /// Lines compare without trailing whitespace (mail and editors disagree about it).
    static func normalized(_ line: String) -> String {
        var s = Substring(line)
        while let last = s.last, last == " " || last == "\t" || last == "\r" { s = s.dropLast() }
        return String(s)
    }

    /// The old side (context and removed lines, without their first column) of the hunk of
    /// `file` whose header starts at old line `oldStart`.
    public static func oldSide(in patch: String, file: String, oldStart: Int) -> [String] {
        var inFile = false
        var inHunk = false
        var lines: [String] = []
        for line in patch.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("diff --git ") {
                if inHunk { break }
                inFile = line.hasSuffix(" b/\(file)")
                continue
            }
            if line.hasPrefix("@@ ") {
                if inHunk { break }
                inHunk = inFile && (line.hasPrefix("@@ -\(oldStart),") || line.hasPrefix("@@ -\(oldStart) "))
                continue
            }
            guard inHunk else { continue }
            if line == "-- " { break }  // the signature after the last hunk
            if line.hasPrefix(" ") || line.hasPrefix("-") { lines.append(String(line.dropFirst())) }
            else if !line.hasPrefix("+") && !line.hasPrefix("\\") { break }
        }
        return lines
    }
}
