import KernelConsole
import Foundation
import KTAP

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Where a check's kernel messages come from: /dev/kmsg in the guest, a fake in unit tests.
public protocol KernelLogSource: Sendable {
    /// Writes `marker` into the kernel log and forgets everything logged before it.
    func mark(_ marker: String)
    /// The kernel log lines since the last `mark`, message text only.
    func linesSinceMark() -> [String]
    /// Writes `line` into the kernel log without moving the mark.
    func note(_ line: String)
}

extension KernelLogSource {
    public func note(_ line: String) {}
}

/// /dev/kmsg, read non-blocking from a saved position (blktests `_check_dmesg` does the same with
/// a dmesg marker line).
public final class KmsgLog: KernelLogSource, @unchecked Sendable {
    // One reader fd per mark: seeking to the end skips what came before, and reads then return
    // one record each until EAGAIN. The suite runs one check at a time, so no lock is needed
    // beyond the one that guards the fd against the watchdog thread.
    private var reader: Int32 = -1
    private let lock = NSLock()

    public init() {}

    deinit {
        if reader >= 0 { close(reader) }
    }

    public func mark(_ marker: String) {
        lock.withLock {
            if reader >= 0 { close(reader) }
            reader = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC)
            if reader >= 0 { lseek(reader, 0, SEEK_END) }
            Self.write(marker)
        }
    }

    public func note(_ line: String) {
        Self.write(line)
    }

    static func write(_ line: String) {
        let writer = open("/dev/kmsg", O_WRONLY | O_CLOEXEC)
        guard writer >= 0 else { return }
        var text = Array((line + "\n").utf8)
        _ = Glibc.write(writer, &text, text.count)
        close(writer)
    }

    public func linesSinceMark() -> [String] {
        lock.withLock { reader >= 0 ? KmsgLog.drain(reader) : [] }
    }

    /// Every message line readable from a non-blocking /dev/kmsg descriptor, until EAGAIN: the
    /// one /dev/kmsg reader of the suite.
    static func drain(_ fd: Int32) -> [String] {
        var lines: [String] = []
        var buffer = [UInt8](repeating: 0, count: 8192)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count < 0 {
                // EPIPE: records were overwritten since the last read; keep going from the
                // oldest one still there.
                if errno == EPIPE { continue }
                break
            }
            if count == 0 { break }
            lines.append(contentsOf: parseRecord(buffer[..<count]))
        }
        return lines
    }

    /// The message lines of one /dev/kmsg record: `prio,seq,usec,flags;text\n` plus continuation
    /// lines starting with a space (`KEY=value` dictionary entries, which are dropped).
    static func parseRecord(_ bytes: ArraySlice<UInt8>) -> [String] {
        let text = String(decoding: bytes, as: UTF8.self)
        var lines: [String] = []
        for (index, line) in text.split(separator: "\n").enumerated() {
            if index == 0 {
                guard let semicolon = line.firstIndex(of: ";") else { continue }
                lines.append(unescape(String(line[line.index(after: semicolon)...])))
            } else if !line.hasPrefix(" ") {
                lines.append(unescape(String(line)))
            }
        }
        return lines
    }

    /// /dev/kmsg escapes non-printable bytes as `\xNN`; a WARNING line never needs them, but a
    /// marker or file name might.
    static func unescape(_ text: String) -> String {
        guard text.contains("\\x") else { return text }
        var out = ""
        var rest = Substring(text)
        while let range = rest.range(of: "\\x") {
            out += rest[..<range.lowerBound]
            let hex = rest[range.upperBound...].prefix(2)
            if hex.count == 2, let byte = UInt8(hex, radix: 16) {
                out.unicodeScalars.append(Unicode.Scalar(byte))
                rest = rest[rest.index(range.upperBound, offsetBy: 2)...]
            } else {
                out += "\\x"
                rest = rest[range.upperBound...]
            }
        }
        return out + rest
    }
}

/// The kernel-log findings that fail a check: every WARNING/BUG/Oops/… line since its marker.
public func splats(in lines: [String]) -> [String] {
    lines.filter { ConsoleScanner.classify($0) != nil }
}
