/// A plain-text table in columns two spaces apart, the one layout every terminal table of p2plab
/// uses (`test` results, `--compare`/`--ablate` matrices, `check --list`, `bench --list`).
public struct ColumnTable: Sendable {
    public enum Alignment: Sendable { case left, right }

    /// Column titles, underlined with dashes; nil for a table without a header.
    public var headers: [String]?
    public var rows: [[String]]
    /// Per column; missing columns are left-aligned.
    public var alignments: [Alignment]

    public init(headers: [String]? = nil, rows: [[String]], alignments: [Alignment] = []) {
        self.headers = headers
        self.rows = rows
        self.alignments = alignments
    }

    /// The table's lines, without trailing blanks.
    public var lines: [String] {
        let all = (headers.map { [$0] } ?? []) + rows
        let columns = all.map(\.count).max() ?? 0
        var widths = [Int](repeating: 0, count: columns)
        for row in all { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        func line(_ cells: [String]) -> String {
            let text = cells.enumerated().map { i, cell in
                let pad = String(repeating: " ", count: max(0, widths[i] - cell.count))
                return (i < alignments.count && alignments[i] == .right) ? pad + cell : cell + pad
            }.joined(separator: "  ")
            return String(text.reversed().drop { $0 == " " }.reversed())
        }
        var out: [String] = []
        if let headers { out += [line(headers), line(widths.map { String(repeating: "-", count: $0) })] }
        return out + rows.map(line)
    }

    /// The lines joined with newlines.
    public var text: String { lines.joined(separator: "\n") }
}
