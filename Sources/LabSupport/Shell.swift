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

/// A command line without some of its options: each of `valued` with its value (`--seed 5` or
/// `--seed=5`), and every word in `words` (flags, the subcommand).
public func dropping(_ valued: Set<String>, words: Set<String> = [], from arguments: [String]) -> [String] {
    var out: [String] = []
    var skip = false
    for argument in arguments {
        if skip { skip = false; continue }
        if valued.contains(argument) { skip = true; continue }
        if words.contains(argument) || valued.contains(where: { argument.hasPrefix($0 + "=") }) { continue }
        out.append(argument)
    }
    return out
}

extension String {
    /// The last `count` lines of the string.
    public func lastLines(_ count: Int) -> String {
        let lines = split(separator: "\n", omittingEmptySubsequences: false)
        return lines.suffix(count).joined(separator: "\n")
    }

}

/// FNV-1a, 64 bit, as 16 hex digits: a cheap stable hash for cache keys (not for security).
public func fnv1a64Hex(_ text: String) -> String {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in text.utf8 {
        hash ^= UInt64(byte)
        hash = hash &* 0x100_0000_01b3
    }
    let hex = String(hash, radix: 16)
    return String(repeating: "0", count: 16 - hex.count) + hex
}
