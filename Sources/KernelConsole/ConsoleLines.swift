/// A serial console capture cut into lines, with the lines a kernel message cut in two made whole.
///
/// A program's output reaches a serial console through the tty layer, which sends it later, a
/// character at a time, while printk writes a kernel message to the UART at once. A message that comes
/// while a program's line is still going out lands inside it:
///
///     ok 7 pin.longter[   73.814383] p2plab: check 8 pin.fast_path begins
///     m_p2pdma.slow
///
/// The kernel's own lines are never cut (printk holds the port while it writes). So a line that does
/// not start with a printk timestamp but has one further on is a program's text with a kernel message
/// after it, and the program's text goes on at the next line that has no timestamp at its start.
/// ``split(_:)`` gives the kernel message the cut line's place and puts the program's line back
/// together in its continuation's, so every kernel line keeps its line number.
public enum ConsoleLines {
    /// The lines of `text` (a serial capture or a clean file), split at "\n" and "\r\n", with every cut
    /// line put back together. The count only grows by one, at the end, when the capture ends inside a
    /// cut line.
    public static func split(_ text: String) -> [String] {
        var lines: [String] = []
        lines.reserveCapacity(text.utf8.count / 48)
        // The start of a program's line a kernel message cut, waiting for its continuation.
        var held: Substring?
        for raw in text.split(omittingEmptySubsequences: false, whereSeparator: \.isConsoleLineBreak) {
            var line = raw
            if let start = held, printkStamp(at: line) == nil {
                line = Substring(String(start) + line)
                held = nil
            }
            if printkStamp(at: line) == nil, let cut = firstPrintkStamp(in: line) {
                // Program text before the timestamp, then a whole kernel line. A second cut of the same
                // program line shows in its continuation, once that is joined.
                held = line[..<cut]
                lines.append(String(line[cut...]))
            } else {
                lines.append(String(line))
            }
        }
        if let held { lines.append(String(held)) }
        return lines
    }

    /// Where a printk timestamp starts in `line` after its first character, if it has one.
    static func firstPrintkStamp(in line: Substring) -> Substring.Index? {
        var index = line.startIndex
        while let open = line[index...].dropFirst().firstIndex(of: "[") {
            if printkStamp(at: line[open...]) != nil { return open }
            index = open
        }
        return nil
    }

    /// The end of the printk timestamp `[%5lu.%06lu]` (then a space, or the `[T1]` caller field) that
    /// `text` starts with (after a "\r" the console may add), or nil.
    static func printkStamp(at text: Substring) -> Substring.Index? {
        var rest = text
        while rest.first == "\r" { rest = rest.dropFirst() }
        guard rest.first == "[" else { return nil }
        rest = rest.dropFirst()
        while rest.first == " " { rest = rest.dropFirst() }
        let seconds = rest.prefix(while: \.isASCIIDigit)
        guard !seconds.isEmpty else { return nil }
        rest = rest[seconds.endIndex...]
        guard rest.first == "." else { return nil }
        rest = rest.dropFirst()
        let micros = rest.prefix(while: \.isASCIIDigit)
        guard micros.count == 6 else { return nil }
        rest = rest[micros.endIndex...]
        guard rest.first == "]" else { return nil }
        rest = rest.dropFirst()
        guard rest.isEmpty || rest.first == " " || rest.first == "[" else { return nil }
        return rest.startIndex
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}
