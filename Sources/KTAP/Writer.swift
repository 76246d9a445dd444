import Foundation

/// The result of one KTAP test line.
public enum KTAPStatus: String, Sendable, Codable, CaseIterable {
    case pass = "ok"
    case fail = "not ok"
    case skip = "SKIP"
}

/// Writes KTAP version 1 (Documentation/dev-tools/ktap.rst): a version line, a plan,
/// one result line per test, `# ` diagnostics; nested suites indented two spaces.
/// Every line goes to `emit` as soon as it is known, so a crash loses nothing already said.
public struct KTAPWriter: Sendable {
    public let indent: String
    private let emit: @Sendable (String) -> Void

    public init(indentLevel: Int = 0, emit: @escaping @Sendable (String) -> Void) {
        self.indent = String(repeating: "  ", count: indentLevel)
        self.emit = emit
    }

    /// `KTAP version 1`
    public func header() { emit(indent + "KTAP version 1") }

    /// `1..N`
    public func plan(_ count: Int) { emit(indent + "1..\(count)") }

    /// `ok N name`, `not ok N name`, or `ok N name # SKIP reason`.
    public func result(_ number: Int, _ name: String, _ status: KTAPStatus, reason: String? = nil) {
        switch status {
        case .pass: emit(indent + "ok \(number) \(name)")
        case .fail: emit(indent + "not ok \(number) \(name)")
        case .skip: emit(indent + "ok \(number) \(name) # SKIP" + (reason.map { " \($0)" } ?? ""))
        }
    }

    /// Any result line: `ok N name`, `not ok N name # DIRECTIVE text`, or `ok N name # text`.
    ///
    /// For re-emitting parsed runs, whose statuses go beyond ``KTAPStatus``. A `#` or line break in
    /// `name` or `text` would end the field early, so they are replaced.
    public func result(_ number: Int, _ name: String, ok: Bool, directive: String?, text: String?) {
        var line = indent + (ok ? "ok" : "not ok") + " \(number)"
        let cleanName = Self.field(name, allowingHash: false)
        if !cleanName.isEmpty { line += " " + cleanName }
        let cleanText = text.map { Self.field($0, allowingHash: true) } ?? ""
        if directive != nil || !cleanText.isEmpty {
            line += " #" + (directive.map { " " + $0 } ?? "") + (cleanText.isEmpty ? "" : " " + cleanText)
        }
        emit(line)
    }

    private static func field(_ text: String, allowingHash: Bool) -> String {
        var out = ""
        for c in text {
            if c == "\n" || c == "\r" { out.append(" ") } else if c == "#" && !allowingHash { out.append("_") } else { out.append(c) }
        }
        return out.trimmingCharacters(in: .whitespaces)
    }

    /// `# text`, one line per line of text.
    public func diagnostic(_ text: String) {
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            emit(indent + "# " + line)
        }
    }

    /// A writer for a nested suite, indented one level further.
    public func nested() -> KTAPWriter {
        KTAPWriter(indentLevel: indent.count / 2 + 1, emit: emit)
    }
}
