/// What a kernel log line can say that means the kernel is unwell.
public enum ConsoleFindingKind: String, Sendable, Codable, CaseIterable {
    case warning = "WARNING"
    case bug = "BUG"
    case oops = "Oops"
    case generalProtectionFault = "general protection fault"
    case kasan = "KASAN"
    case kfence = "KFENCE"
    case ubsan = "UBSAN"
    /// lockdep: a possible deadlock (circular or recursive locking, inconsistent lock state, …).
    case lockdep = "lockdep"
    /// `BUG: sleeping function called from invalid context` (CONFIG_DEBUG_ATOMIC_SLEEP).
    case sleepInAtomic = "sleeping in atomic context"
    /// RCU CPU stall warnings.
    case rcuStall = "RCU stall"
    case softLockup = "soft lockup"
    case hungTask = "hung task"
    case panic = "Kernel panic"
}

/// One alarming line found in a console or dmesg capture.
public struct ConsoleFinding: Sendable, Codable, Equatable {
    public var kind: ConsoleFindingKind
    /// 1-based line number in the scanned text.
    public var line: Int
    public var text: String

    public init(kind: ConsoleFindingKind, line: Int, text: String) {
        self.kind = kind
        self.line = line
        self.text = text
    }
}

/// Scans kernel logs for splats, the way blktests' `_check_dmesg` and rcutorture's
/// `console-badness.sh` do: by the fixed words the kernel prints at the start of each report.
public enum ConsoleScanner {
    /// Classifies one log line, or nil when it is harmless.
    public static func classify(_ rawLine: String) -> ConsoleFindingKind? {
        let line = stripPrefix(rawLine)
        if line.hasPrefix("Kernel panic - not syncing") { return .panic }
        // lockdep prints its reports under WARNING: lines of its own; tell them apart from a WARN().
        if line.hasPrefix("WARNING: possible circular locking dependency")
            || line.hasPrefix("WARNING: possible recursive locking")
            || line.hasPrefix("WARNING: inconsistent lock state")
            || line.hasPrefix("WARNING: possible irq lock inversion")
            || line.hasPrefix("WARNING: suspicious RCU usage")
            || line.hasPrefix("WARNING: bad unlock balance")
            || line.hasPrefix("WARNING: held lock freed")
            || line.hasPrefix("WARNING: lock held when returning to user space")
        {
            return .lockdep
        }
        if line.hasPrefix("WARNING:") { return .warning }
        if line.hasPrefix("BUG: KASAN") || line.hasPrefix("KASAN:") { return .kasan }
        if line.hasPrefix("BUG: KFENCE") || line.hasPrefix("KFENCE:") { return .kfence }
        if line.hasPrefix("UBSAN:") { return .ubsan }
        if line.hasPrefix("BUG: sleeping function called from invalid context") || line.hasPrefix("BUG: scheduling while atomic") {
            return .sleepInAtomic
        }
        if line.contains("rcu: INFO:") && (line.contains("detected stall") || line.contains("self-detected stall"))
            || line.hasPrefix("INFO: rcu_sched detected stalls") || line.hasPrefix("INFO: rcu_preempt detected stalls")
        {
            return .rcuStall
        }
        if line.contains("BUG: soft lockup") { return .softLockup }
        if line.hasPrefix("INFO: task ") && line.contains("blocked for more than") { return .hungTask }
        if line.hasPrefix("BUG:") || line.hasPrefix("kernel BUG at") { return .bug }
        if line.hasPrefix("Oops:") || line.contains("] Oops:") { return .oops }
        if line.hasPrefix("general protection fault") || line.hasPrefix("Oops: general protection fault") {
            return .generalProtectionFault
        }
        return nil
    }

    /// Every alarming line of `text`, in order.
    public static func scan(_ text: String) -> [ConsoleFinding] {
        var findings: [ConsoleFinding] = []
        // A report that came while a program's line went out is found at its own line.
        for (index, line) in ConsoleLines.split(text).enumerated() {
            if let kind = classify(line) {
                findings.append(ConsoleFinding(kind: kind, line: index + 1, text: line))
            }
        }
        return findings
    }

    /// Drops a printk timestamp (`[    1.234567] `) and a dmesg-style facility prefix.
    public static func stripPrefix(_ line: String) -> String {
        var rest = Substring(line)
        while rest.first == " " || rest.first == "\r" { rest = rest.dropFirst() }
        if rest.first == "[", let close = rest.firstIndex(of: "]") {
            rest = rest[rest.index(after: close)...]
            while rest.first == " " { rest = rest.dropFirst() }
        }
        return String(rest)
    }
}

extension Character {
    /// A serial console ends lines with "\r\n", which Swift treats as one Character, not a "\n".
    public var isConsoleLineBreak: Bool { self == "\n" || self == "\r\n" }
}
