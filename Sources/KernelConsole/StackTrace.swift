/// A kernel report (oops, BUG, WARN, KASAN, lockdep, hung task) as a console printed it, and its
/// stack frames: what `decode_stacktrace.sh` reads and what the lab shows of it.
public enum StackTrace {
    /// The report that starts at `finding` (1-based line of `console`): that line and the kernel
    /// lines after it, printk timestamps dropped, up to the end of the report (`---[ end trace`,
    /// the panic line, the end of a hung task's stack) or `limit` lines. Lines of userspace (the
    /// suite's KTAP, init) that the console interleaves are left out.
    public static func report(in console: String, at finding: Int, limit: Int = 80) -> [String] {
        let lines = ConsoleLines.split(console)
        guard finding >= 1, finding <= lines.count else { return [] }
        var out: [String] = []
        for raw in lines[(finding - 1)...] {
            let text = raw
            guard isKernelLine(text) else { continue }
            let line = ConsoleScanner.stripPrefix(text)
            // A second report (after the first line) ends this one, unless it is the panic it caused.
            if !out.isEmpty, let kind = ConsoleScanner.classify(text), kind != .panic, !line.hasPrefix("Oops:"), !isPartOfReport(out, kind) {
                break
            }
            out.append(line)
            if line.hasPrefix("---[ end trace") || line.hasPrefix("Kernel panic - not syncing") { break }
            // A hung task's report ends with its stack; several tasks each get their own report.
            if line.trimmingSpaces == "</TASK>", out.first?.hasPrefix("INFO: task ") == true { break }
            if out.count >= limit { break }
        }
        return out
    }

    /// An oops is printed as `kernel BUG at …` / `BUG: …` and then `Oops: …`: one report.
    private static func isPartOfReport(_ sofar: [String], _ kind: ConsoleFindingKind) -> Bool {
        sofar.count < 3 && (kind == .oops || kind == .generalProtectionFault)
    }

    /// A printk line: `[    1.234567] …`.
    static func isKernelLine(_ text: String) -> Bool {
        let trimmed = text.drop { $0 == " " || $0 == "\r" }
        guard trimmed.first == "[", let close = trimmed.firstIndex(of: "]") else { return false }
        let stamp = trimmed[trimmed.index(after: trimmed.startIndex)..<close].filter { $0 != " " }
        return !stamp.isEmpty && stamp.allSatisfy { $0.isNumber || $0 == "." }
    }

    /// One frame of a report: `RIP: 0010:func+0x12/0x40 [mod]`, ` func+0x5a/0x1c0 [mod]`, or after
    /// decoding ` func (path/file.c:123) [mod]`.
    public struct Frame: Sendable, Equatable {
        public var function: String
        /// `+0x12/0x40` as printed (nil once decoded).
        public var offset: String?
        /// `file.c:123` once decoded with line info.
        public var location: String?
        public var module: String?
        /// The instruction pointer (`RIP:`), as opposed to a return address of the call trace.
        public var isIP: Bool
        /// A `? ` frame: the unwinder found the address on the stack but cannot vouch for it.
        public var guess = false

        /// `func (file.c:123)`, `func [mod]`, `func+0x12/0x40`: the shortest form that still says where.
        public var short: String {
            let mark = guess ? "? " : ""
            if let location { return "\(mark)\(function) (\(location))" }
            return mark + function + (offset ?? "") + (module.map { " [\($0)]" } ?? "")
        }
    }

    /// The frames of `report`: the instruction pointer first, then the call trace's reliable
    /// frames, each once. A kernel without a reliable unwinder (no frame pointers, no ORC) marks
    /// every frame `? ` (a guess from the stack's contents); then the guesses are the frames.
    public static func frames(_ report: [String]) -> [Frame] {
        var ips: [Frame] = []
        var reliable: [Frame] = []
        var guesses: [Frame] = []
        var inTrace = false
        for raw in report {
            let line = raw.trimmingSpaces
            if line.hasPrefix("Call Trace:") { inTrace = true; continue }
            if line.hasPrefix("RIP: ") {
                guard let colon = line.dropFirst(5).firstIndex(of: ":") else { continue }
                if let frame = parseFrame(String(line[line.index(after: colon)...]), isIP: true),
                   !ips.contains(where: { $0.function == frame.function }) {
                    ips.append(frame)
                }
                continue
            }
            guard inTrace, !line.hasPrefix("<") else { continue }
            if line.hasPrefix("---[") || line.hasPrefix("Modules linked in") { inTrace = false; continue }
            if line.hasPrefix("? ") {
                if var frame = parseFrame(String(line.dropFirst(2)), isIP: false) {
                    frame.guess = true
                    guesses.append(frame)
                }
            } else if let frame = parseFrame(line, isIP: false) {
                reliable.append(frame)
            }
        }
        let trace = reliable.isEmpty ? guesses : reliable
        return ips + trace.filter { frame in !ips.contains { $0.function == frame.function } }
    }

    /// One frame as printed (`func+0x5a/0x1c0 [mod]`) or as decode_stacktrace.sh prints it
    /// (`func (path/file.c:123) mod`, `func (??:?)` where there is no line info).
    public static func parseFrame(_ text: String, isIP: Bool) -> Frame? {
        let text = text.trimmingSpaces
        // Decoded: `func (path:line[ path:line…][ (discriminator N)]) [mod]`; the first location is
        // the innermost (addr2line -i lists inlined frames first).
        if let open = text.firstRange(of: " ("), let close = text.lastIndex(of: ")"), close > open.upperBound {
            let name = String(text[..<open.lowerBound])
            guard !name.isEmpty, name.allSatisfy(isSymbolCharacter) else { return nil }
            let inside = text[open.upperBound..<close]
            let first = inside.split(separator: " ").first.map(String.init) ?? ""
            var rest = String(text[text.index(after: close)...]).trimmingSpaces
            if rest.hasPrefix("["), rest.hasSuffix("]") { rest = String(rest.dropFirst().dropLast()) }
            let module = rest.isEmpty || !rest.allSatisfy(isSymbolCharacter) ? nil : rest
            return Frame(function: name, offset: nil, location: location(first), module: module, isIP: isIP)
        }
        var words = text.split(separator: " ").map(String.init)
        guard !words.isEmpty else { return nil }
        var module: String?
        if let last = words.last, last.hasPrefix("["), last.hasSuffix("]") {
            module = String(last.dropFirst().dropLast())
            words.removeLast()
        } else if words.count == 2, let last = words.last, !last.contains("+"), last.allSatisfy(isSymbolCharacter) {
            // decode_stacktrace.sh prints the module bare after the symbol it could not decode.
            module = last
            words.removeLast()
        }
        guard words.count == 1, let first = words.first, let plus = first.firstIndex(of: "+"), first[plus...].contains("/0x") else { return nil }
        let name = String(first[..<plus])
        guard !name.isEmpty, name.allSatisfy(isSymbolCharacter) else { return nil }
        return Frame(function: name, offset: String(first[plus...]), location: nil, module: module, isIP: isIP)
    }

    /// `file.c:123` from addr2line's answer; nil for `??:?`, `file.c:?` and `??:0` (no line info).
    static func location(_ path: String) -> String? {
        guard let colon = path.lastIndex(of: ":") else { return nil }
        let file = path[..<colon], line = path[path.index(after: colon)...]
        guard !file.isEmpty, file != "??", !line.isEmpty, line.allSatisfy(\.isNumber), line != "0" else { return nil }
        return shortPath(path)
    }

    static func isSymbolCharacter(_ c: Character) -> Bool { c.isLetter || c.isNumber || c == "_" || c == "." || c == "$" }

    /// `fs/kernfs/file.c:400` stays; an absolute path (an out-of-tree module's build directory) is its file.
    static func shortPath(_ path: String) -> String {
        guard path.hasPrefix("/") else { return path }
        return path.split(separator: "/").last.map(String.init) ?? path
    }

    /// Frames that say nothing about the cause: the scheduler and wait primitives a blocked task
    /// sits in, and the exception entry an oops passes through.
    static let plumbing: Set<String> = [
        "__schedule", "schedule", "schedule_timeout", "schedule_preempt_disabled", "io_schedule", "io_schedule_timeout",
        "__wait_for_common", "wait_for_common", "wait_for_completion", "wait_for_completion_timeout",
        "wait_for_completion_killable", "do_wait_for_common", "usleep_range_state",
    ]

    /// The first `count` frames that say where, joined with ` ← `: `p2plab_control_oops (p2plab_test.c:470) ←
    /// p2plab_ioctl (p2plab_test.c:512) ← __x64_sys_ioctl (fs/ioctl.c:51)`.
    public static func summary(_ frames: [Frame], count: Int = 4) -> String? {
        let useful = frames.filter {
            !plumbing.contains($0.function) && !$0.function.hasPrefix("asm_exc_") && !$0.function.hasPrefix("_raw_spin")
        }
        let chosen = (useful.isEmpty ? frames : useful).prefix(count)
        return chosen.isEmpty ? nil : chosen.map(\.short).joined(separator: " ← ")
    }

    /// Whether any frame carries a file and line.
    public static func hasLineInfo(_ frames: [Frame]) -> Bool { frames.contains { $0.location != nil } }
}

extension String {
    var trimmingSpaces: String {
        var text = Substring(self)
        while let first = text.first, first == " " || first == "\t" || first == "\r" { text = text.dropFirst() }
        while let last = text.last, last == " " || last == "\t" || last == "\r" { text = text.dropLast() }
        return String(text)
    }
}
