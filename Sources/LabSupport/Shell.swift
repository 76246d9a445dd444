import Foundation

/// Quotes one argument for a POSIX shell, so printed command lines can be pasted back.
public func shellQuote(_ argument: String) -> String {
    if argument.isEmpty { return "''" }
    let safe = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%^")
    if argument.allSatisfy({ safe.contains($0) }) { return argument }
    return "'" + argument.replacingOccurrences(of: "'", with: "'\\''") + "'"
}

/// Quotes a whole argument vector for a POSIX shell.
public func shellQuote(_ arguments: [String]) -> String {
    arguments.map { shellQuote($0) }.joined(separator: " ")
}

extension String {
    /// The last `count` lines of the string.
    public func lastLines(_ count: Int) -> String {
        let lines = split(separator: "\n", omittingEmptySubsequences: false)
        return lines.suffix(count).joined(separator: "\n")
    }

}
