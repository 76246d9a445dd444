import Catalog
import Foundation
import LabSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Runs an external command (mkfs.ext4, mount, …) from a check's thread and throws with its
/// command line and stderr tail when it fails. Checks run on plain threads, so waiting here for
/// the async runner blocks no cooperative-pool thread.
func runCommand(_ arguments: [String], recorder: CheckRecorder, timeout: Double = 120) throws {
    let command = Command(arguments)
    recorder.note("+ \(command)")
    let box = WatchdogBox<Result<Void, any Error>>()
    let done = DispatchSemaphore(value: 0)
    Task {
        do {
            try await Runner().checked(command, timeout: timeout)
            box.value = .success(())
        } catch {
            box.value = .failure(error)
        }
        done.signal()
    }
    done.wait()
    if case .failure(let error)? = box.value { throw CheckFailure("\(error)") }
}

/// Writes `text` to a sysfs control file (unbind, bind). The corresponding C functions are `open`
/// and `write`.
func writeSysfs(_ path: String, _ text: String) -> Result<Void, Errno> {
    let fd = open(path, O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { return .failure(.current) }
    defer { close(fd) }
    var bytes = Array(text.utf8)
    return valueOrErrno { write(fd, &bytes, bytes.count) }.map { _ in () }
}

/// A file's mtime in nanoseconds. The corresponding C function is `stat`.
func modificationTime(_ path: String) -> Result<Int64, Errno> {
    var info = stat()
    guard stat(path, &info) == 0 else { return .failure(.current) }
    return .success(Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec))
}

/// A task's scheduler state and where it sleeps, from `/proc/PID` or `/proc/self/task/TID`.
struct TaskState {
    let directory: String
    /// The state letter of its `stat` (`R`, `S`, `D`, …).
    let state: String

    /// Nil when the task is gone (its `stat` cannot be read).
    init?(_ directory: String) {
        guard let stat = try? String(contentsOfFile: directory + "/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return nil }
        self.directory = directory
        state = stat[stat.index(after: close)...].split(separator: " ").first.map(String.init) ?? "?"
    }

    /// The kernel function it sleeps in (`wchan`), or "" when it names none.
    var wchan: String {
        let text = (try? String(contentsOfFile: directory + "/wchan", encoding: .utf8)) ?? ""
        return text == "0" ? "" : text
    }
}

/// The poll interval for cheap conditions, seconds.
let quickPoll = 0.02

/// Sleeps on the calling (check) thread.
func pause(seconds: Double) {
    usleep(useconds_t(seconds * 1e6))
}

/// Polls `condition` every `interval` seconds until it holds or `seconds` pass. A cheap condition
/// (a process ended, a sysfs file, a port listening) is polled at `quickPoll`: a coarser poll adds
/// its half-interval to every such wait.
func waitUntil(seconds: Double, every interval: Double = 0.1, _ condition: () -> Bool) -> Bool {
    let deadline = monotonicSeconds() + seconds
    while monotonicSeconds() < deadline {
        if condition() { return true }
        pause(seconds: interval)
    }
    return condition()
}

/// `12.3 MiB`, `4 KiB`.
func byteCount(_ bytes: Int) -> String {
    if bytes >= 1 << 20 { return "\(bytes >> 20) MiB" }
    return "\(bytes >> 10) KiB"
}

/// Pages per second for `pages` pinned in `nanoseconds`.
func pagesPerSecond(_ pages: Int, _ nanoseconds: UInt64) -> String {
    guard nanoseconds > 0 else { return "n/a" }
    return String(format: "%.0f", Double(pages) / (Double(nanoseconds) / 1e9))
}

extension PinReport {
    /// `16 pinned, 16 P2PDMA, 48 us, slow-path calls 0`.
    var summary: String {
        "\(pinned) pinned, \(p2pdmaPages) P2PDMA, \(elapsedNanoseconds / 1000) us, slow-path calls "
            + (slowPathCalls.map { String($0) } ?? "unknown")
    }
}

/// Runs a C call that returns -1 and sets `errno` on failure, retrying on EINTR.
@inline(__always)
func valueOrErrno<T: FixedWidthInteger>(retryOnInterrupt: Bool = true, _ call: () -> T) -> Result<T, Errno> {
    while true {
        let value = call()
        if value != -1 { return .success(value) }
        let error = Errno.current
        if retryOnInterrupt && error == .EINTR { continue }
        return .failure(error)
    }
}
