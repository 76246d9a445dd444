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
