/// The lines the suite writes into the kernel log around each check, and what the host reads back
/// from them: which check was running, and which check a task belongs to.
///
/// Before each check's body the suite logs `p2plab: check N NAME begins` (the runner's marker) and,
/// from the check's own thread, `p2plab: check N NAME pid P`. The kernel hands out PIDs in
/// increasing order, so every thread and child a check starts has a PID at or above its own
/// thread's and below the next check's: a task named by a hung-task report (`INFO: task
/// NAME:PID blocked for more than N seconds`) belongs to the last check that started at or below
/// its PID, whichever check was running when the report fired.
public enum CheckMarkers {
    /// One check's start, as the console showed it.
    public struct Start: Sendable, Equatable {
        public var number: Int
        public var name: String
        public var pid: Int

        public init(number: Int, name: String, pid: Int) {
            self.number = number
            self.name = name
            self.pid = pid
        }
    }

    /// The line a check's thread logs as it starts.
    public static func pidLine(number: Int, name: String, pid: Int) -> String {
        "p2plab: check \(number) \(name) pid \(pid)"
    }

    /// The runner's marker before a check.
    public static func beginLine(number: Int, name: String) -> String {
        "p2plab: check \(number) \(name) begins"
    }

    /// The runner's marker after a check that ran beside another: its kernel log is what came
    /// between its begin and this.
    public static func endLine(number: Int, name: String) -> String {
        "p2plab: check \(number) \(name) ends"
    }

    /// How long after a task blocked a hung-task report of it is sure to be out when the detector is
    /// set to 1 s (timeout and check interval): it reports a task it saw blocked at two of its
    /// checks, so 1-2 s, with a second to spare for a loaded TCG guest. The hang controls hold the
    /// suite's end this long; the host says so when the report still did not come.
    public static let hungTaskReportWithin = 3.0

    /// The runner's marker when, its checks done, it waits for what one of them set going (a
    /// hung-task report still to come): what the kernel says after it came while no check ran.
    public static let settleLine = "p2plab: suite settles, no check running"

    /// Every check start in `text` (a console capture), in order.
    public static func starts(in text: String) -> [Start] {
        var starts: [Start] = []
        for line in ConsoleLines.split(text) {
            guard let range = line.firstRange(of: "p2plab: check ") else { continue }
            let words = line[range.upperBound...].split(separator: " ")
            guard words.count == 4, words[2] == "pid", let number = Int(words[0]),
                  let pid = Int(words[3].filter(\.isNumber)) else { continue }
            starts.append(Start(number: number, name: String(words[1]), pid: pid))
        }
        return starts
    }

    /// The names of the checks whose begin marker `text` shows.
    public static func begun(in text: String) -> [String] {
        ConsoleLines.split(text).compactMap { line in
            guard let range = line.firstRange(of: "p2plab: check ") else { return nil }
            let words = line[range.upperBound...].split(separator: " ")
            guard words.count == 3, words[2].hasPrefix("begins"), Int(words[0]) != nil else { return nil }
            return String(words[1])
        }
    }

    /// The diagnostic a check writes for each kernel report it provokes on purpose: `provokes
    /// "FRAGMENT": WHY`, a report containing FRAGMENT being the one meant.
    public static func provokesLine(fragment: String, why: String) -> String {
        "provokes \"\(fragment)\": \(why)"
    }

    /// The fragments and reasons of a check's `provokes` diagnostics.
    public static func provoked(in diagnostics: [String]) -> [(fragment: String, why: String)] {
        diagnostics.compactMap { line in
            guard line.hasPrefix("provokes \""), let close = line.dropFirst(10).firstIndex(of: "\"") else { return nil }
            let fragment = String(line[line.index(line.startIndex, offsetBy: 10)..<close])
            let rest = line[line.index(after: close)...]
            let why = rest.hasPrefix(": ") ? String(rest.dropFirst(2)) : String(rest)
            return fragment.isEmpty ? nil : (fragment, why)
        }
    }

    /// A hung-task report's task: `INFO: task p2plab-guest:1234 blocked for more than 3 seconds.`
    public static func hungTask(_ line: String) -> (comm: String, pid: Int)? {
        guard let start = line.firstRange(of: "INFO: task "), let end = line.firstRange(of: " blocked for more than") else { return nil }
        let task = line[start.upperBound..<end.lowerBound]
        guard let colon = task.lastIndex(of: ":"), let pid = Int(task[task.index(after: colon)...]) else { return nil }
        return (String(task[..<colon]), pid)
    }

    /// Whether the task of a hung-task report is a kernel thread, from the lines after its `INFO:
    /// task` line: its `task:` line says `ppid:2` (a child of kthreadd) or `ppid:0`. A kernel thread
    /// (a kworker, pciehp's thread) was not started by a check, whatever its PID says.
    public static func isKernelThread<Lines: Sequence>(after lines: Lines) -> Bool where Lines.Element: StringProtocol {
        for element in lines.prefix(6) {
            let line = String(element)
            guard let range = line.firstRange(of: "task:"), let ppid = line[range.upperBound...].firstRange(of: "ppid:") else { continue }
            let digits = line[ppid.upperBound...].drop { $0 == " " }.prefix { $0.isNumber }
            guard let parent = Int(digits) else { return false }
            return parent == 2 || parent == 0
        }
        return false
    }

    /// The check that started the task `pid`: its own thread's PID exactly, else the last check
    /// that started at or below it. Nil when the task is older than every check (the suite's
    /// main thread, or a task of the system).
    public static func owner(of pid: Int, starts: [Start]) -> Start? {
        if let exact = starts.last(where: { $0.pid == pid }) { return exact }
        // PIDs wrap at pid_max; only starts in increasing order can be compared.
        var increasing: [Start] = []
        for start in starts where start.pid > (increasing.last?.pid ?? Int.min) { increasing.append(start) }
        return increasing.last { $0.pid <= pid }
    }
}
