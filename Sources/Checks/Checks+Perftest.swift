import Catalog
import Foundation
import LabSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Suite {
    /// perftest's bandwidth tools, run the way the series' authors tested it.
    static let perftestTools = ["ib_write_bw", "ib_read_bw"]

    /// The tools whose server and client both `sleep(1)` right after the TCP connection is made
    /// (perftest's write_bw.c, before the version exchange): a fixed wait with nothing to wait for,
    /// since everything after it goes through blocking reads of that socket. strace answers that one
    /// clock_nanosleep as done (`-e inject=clock_nanosleep:retval=0:when=1`) on both ends; the
    /// binary, its arguments and every other system call stay as users run them.
    static let perftestSleepsAfterConnect: Set<String> = ["ib_write_bw"]

    /// The injection that answers a tool's first clock_nanosleep as done, without sleeping.
    static let skipFirstSleep = ["-e", "inject=clock_nanosleep:retval=0:when=1"]

    /// The client's command: `tool` under strace, which logs every failing ioctl/write (the errno
    /// perftest does not print) and, for a tool in ``perftestSleepsAfterConnect``, skips its sleep.
    /// With `seccompFilter` (a kernel with CONFIG_SECCOMP_FILTER), `--seccomp-bpf` stops the tool
    /// only at the calls strace traces instead of at every system call: under TCG each stop is two
    /// context switches into strace and back.
    static func perftestClientCommand(strace: String, trace: String, tool: String, arguments: [String], seccompFilter: Bool = false) -> [String] {
        let skip = perftestSleepsAfterConnect.contains(tool)
        return [strace, "-f", "-qq"] + (seccompFilter ? ["--seccomp-bpf"] : [])
            + ["-e", skip ? "trace=ioctl,write,clock_nanosleep" : "trace=ioctl,write", "-e", "status=failed"]
            + (skip ? skipFirstSleep : []) + ["-o", trace] + arguments + ["127.0.0.1"]
    }

    /// Whether the running kernel takes seccomp filters (CONFIG_SECCOMP_FILTER lists its actions).
    static func kernelHasSeccompFilter(proc: String = "/proc") -> Bool {
        FileManager.default.fileExists(atPath: "\(proc)/sys/kernel/seccomp/actions_avail")
    }

    /// strace attached to the listening server `pid` to skip the sleep it takes once its client
    /// connects; the log shows the injected call.
    static func perftestServerSleepSkip(strace: String, log: String, pid: Int32) -> [String] {
        [strace, "-qq", "-e", "trace=clock_nanosleep"] + skipFirstSleep + ["-o", log, "-p", String(pid)]
    }

    /// The PID tracing the process whose /proc/PID/status is `status` (0: none), nil if unreadable.
    static func tracerPID(status: String) -> Int? {
        for line in status.split(whereSeparator: \.isNewline) where line.hasPrefix("TracerPid:") {
            return Int(line.dropFirst("TracerPid:".count).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }

    static let perftestChecks: [CheckDefinition] = [
        CheckDefinition("perftest.p2pmem") { ctx, rec in
            let device = try ctx.requireRDMA()
            let provider = try ctx.requireProvider()
            rec.note("\(device.name) is \(device.kind.rawValue): \(device.reason)")
            // A real HCA with no peer-to-peer route to the provider shows neither the series' success
            // path nor the rxe refusal: say why instead of failing.
            if let problem = device.p2pProblem { throw CheckSkip(problem) }
            let buffer = ctx.sysfs.allocatePath(provider.address)
            for (tool, pair) in try perftestPairs(ctx, device: device, buffer: buffer, firstPort: 18610, rec: rec) {
                let observed: Observation
                if let result = pair.bandwidth {
                    observed = .succeeded
                    rec.note(String(format: "%@ p2pmem: %.2f Gb/s average (%d iterations of %d bytes)", tool,
                                    result.averageGigabitsPerSecond, result.iterations, result.messageBytes))
                } else if pair.mrRefused {
                    observed = .refused(pair.errno)
                    if pair.errno == nil { rec.fail("\(tool): the MR was refused but strace saw no failing uverbs call") }
                } else {
                    rec.fail("\(tool) p2pmem: neither moved data nor failed to register the MR: client \(pair.client.description)")
                    continue
                }
                rec.expect(.registerMR(.p2pmem, writable: true), observed: observed, device: device.kind,
                           detail: "\(tool) --mmap=\(buffer): perftest said \"\(pair.message ?? "-")\"; errno \(pair.errno?.name ?? "-") (strace)")
            }
        },
        CheckDefinition("perftest.tmpfs") { ctx, rec in
            let device = try ctx.requireRDMA()
            let file = "/dev/shm/p2plab-perftest"
            guard FileManager.default.createFile(atPath: file, contents: Data(repeating: 0, count: 1 << 20)) else {
                throw CheckFailure("cannot create \(file)")
            }
            defer { try? FileManager.default.removeItem(atPath: file) }
            for (tool, pair) in try perftestPairs(ctx, device: device, buffer: file, firstPort: 18620, rec: rec) {
                let observed: Observation
                if let result = pair.bandwidth {
                    observed = .succeeded
                    rec.note(String(format: "%@ tmpfs: %.3f Gb/s average (%d iterations of %d bytes)", tool,
                                    result.averageGigabitsPerSecond, result.iterations, result.messageBytes))
                } else {
                    observed = .refused(pair.errno)
                    rec.fail("\(tool) tmpfs moved no data: perftest said \"\(pair.message ?? "-")\" (client \(pair.client.description))")
                }
                rec.expect(.registerMR(.tmpfsShared, writable: true), observed: observed, detail: "\(tool) --mmap=\(file)")
            }
        },
    ]

    /// Runs every perftest tool's pair at once (each on its own port, buffer mapping and MR), since
    /// under TCG each spends most of its time starting processes; their notes follow in tool order.
    static func perftestPairs(
        _ ctx: CheckContext, device: RDMADeviceInfo, buffer: String, firstPort: Int, rec: CheckRecorder
    ) throws -> [(String, PerftestPair)] {
        let results = PerftestResults(count: perftestTools.count)
        DispatchQueue.concurrentPerform(iterations: perftestTools.count) { index in
            results.set(index, Result { try perftestPair(ctx, tool: perftestTools[index], device: device, buffer: buffer, port: firstPort + index) })
        }
        var out: [(String, PerftestPair)] = []
        for (index, tool) in perftestTools.enumerated() {
            let pair = try results.get(index).get()
            for line in pair.notes { rec.note(line) }
            out.append((tool, pair))
        }
        return out
    }

    /// The pairs' outcomes, filled in from concurrent threads.
    final class PerftestResults: @unchecked Sendable {
        private let lock = NSLock()
        private var slots: [Result<PerftestPair, any Error>?]
        init(count: Int) { slots = Array(repeating: nil, count: count) }
        func set(_ index: Int, _ result: Result<PerftestPair, any Error>) { lock.withLock { slots[index] = result } }
        func get(_ index: Int) -> Result<PerftestPair, any Error> {
            lock.withLock { slots[index] } ?? .failure(CheckFailure("\(perftestTools[index]) did not run"))
        }
    }

    /// What one perftest server/client pair did.
    struct PerftestPair {
        /// What it ran and saw, for the check's diagnostics.
        var notes: [String] = []
        var client: ProgramEnd
        var bandwidth: PerftestOutput?
        /// perftest said it could not register its buffer.
        var mrRefused: Bool
        /// perftest's own words about it ("Couldn't allocate MR").
        var message: String?
        /// The errno of the failing uverbs call, from strace.
        var errno: Errno?
    }

    /// Runs `tool` as server and client over 127.0.0.1 on `device` with `--mmap=buffer`, the client
    /// under strace (perftest does not print the errno). Both are bounded; the server, which waits
    /// for a client forever when the client gave up, is killed once the client is done.
    static func perftestPair(
        _ ctx: CheckContext, tool: String, device: RDMADeviceInfo, buffer: String, port: Int
    ) throws -> PerftestPair {
        var notes: [String] = []
        guard let path = which(tool) else { throw CheckSkip("\(tool) not found: apt-get install perftest") }
        guard let strace = which("strace") else { throw CheckSkip("strace not found: apt-get install strace (it shows the errno perftest does not print)") }
        var common = [path, "-d", device.name, "-s", "65536", "-n", "25", "-F", "--report_gbits", "--mmap=\(buffer)", "-p", String(port)]
        if let gid = BenchGuest.ipv4GIDIndex(sysfs: ctx.sysfs, device: device.name) { common += ["-x", String(gid)] }
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-\(tool)-\(port)")
        try? FileManager.default.removeItem(at: scratch)
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let trace = scratch.appendingPathComponent("client.strace").path

        let server = try BoundedProcess(common, output: scratch.appendingPathComponent("server.log"))
        notes.append("+ \(shellQuote(common)) &")
        defer { _ = server.reap(grace: 0) }
        var client: (end: ProgramEnd, output: String)?
        let clientCommand = perftestClientCommand(strace: strace, trace: trace, tool: tool, arguments: common, seccompFilter: kernelHasSeccompFilter())
        // Under TCG the server takes a moment to listen: start the client once the server's port
        // is in LISTEN (or the server is gone), and retry only "couldn't connect".
        let serverStarted = monotonicSeconds()
        _ = waitUntil(seconds: 10, every: quickPoll) { server.finished || tcpListening(port: port) }
        let listening = monotonicSeconds() - serverStarted
        // The server waits in accept(): attach the strace that skips its sleep, and start the client
        // only once it is attached (else the server would sleep its second after all).
        var sleepSkip: BoundedProcess?
        let sleepLog = scratch.appendingPathComponent("server.strace").path
        if perftestSleepsAfterConnect.contains(tool), !server.finished {
            let attach = perftestServerSleepSkip(strace: strace, log: sleepLog, pid: server.pid)
            notes.append("+ \(shellQuote(attach)) &")
            let tracer = try BoundedProcess(attach, output: scratch.appendingPathComponent("server-strace.log"))
            sleepSkip = tracer
            let status = "/proc/\(server.pid)/status"
            _ = waitUntil(seconds: 10, every: quickPoll) {
                tracer.finished || server.finished
                    || (try? String(contentsOfFile: status, encoding: .utf8)).flatMap(tracerPID(status:)).map { $0 != 0 } == true
            }
        }
        defer { _ = sleepSkip?.reap(grace: 0) }
        notes.append("+ \(shellQuote(clientCommand))")
        let clientStarted = monotonicSeconds()
        for attempt in 0..<8 {
            if attempt > 0 { pause(seconds: 1) }
            let run = try BoundedProcess(clientCommand, output: scratch.appendingPathComponent("client.log"))
            let end = run.wait(seconds: 90) ?? run.reap(grace: 2)
            let output = run.output
            client = (end, output)
            if end.status == 0 && !end.signaled { break }
            if !output.lowercased().contains("connect") || output.contains("MR") { break }
            if server.finished { break }
        }
        guard let client else { throw CheckFailure("\(tool) client did not run") }
        let clientSeconds = monotonicSeconds() - clientStarted
        // The server either finished with the client, or waits for one forever.
        let serverEnd = server.wait(seconds: 10) ?? server.reap(grace: 2)
        let serverOutput = server.output
        let killed = server.wasKilled
        if let sleepSkip {
            // It ends with the server it traces.
            let end = sleepSkip.wait(seconds: 5) ?? sleepSkip.reap(grace: 1)
            let log = (try? String(contentsOfFile: sleepLog, encoding: .utf8)) ?? ""
            if !log.contains("INJECTED") {
                notes.append("\(tool): the server's sleep after connecting was not skipped (strace -p: \(end.description); \(sleepSkip.output.trimmingCharacters(in: .whitespacesAndNewlines).prefix(200)))")
            }
        }
        notes.append(String(format: "%@ client: %@ after %.2f s; server: %@ (listening %.2f s after its start)", tool, client.end.description,
                            clientSeconds,
                            killed ? "killed after the client ended (it was still waiting)" : serverEnd.description, listening))
        let said = (client.output + "\n" + serverOutput).split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { $0.contains("Couldn't") || $0.contains("failed") || $0.contains("Failed") || $0.contains("mmap buffer") }
        for line in Array(NSOrderedSet(array: said)).prefix(8) { notes.append("\(tool): \(line)") }
        var pair = PerftestPair(client: client.end, mrRefused: false)
        if client.end.status == 0, !client.end.signaled { pair.bandwidth = PerftestOutput.parse(client.output) }
        let refusal = said.first { $0.contains("Couldn't allocate MR") || $0.lowercased().contains("failed to create mr") || $0.contains("ibv_reg_mr") }
        pair.mrRefused = refusal != nil
        pair.message = refusal ?? said.first
        pair.errno = uverbsErrno(strace: (try? String(contentsOfFile: trace, encoding: .utf8)) ?? "")
        if pair.mrRefused, let errno = pair.errno { notes.append("\(tool): strace: the failing uverbs call returned \(errno.name)") }
        pair.notes = notes
        return pair
    }

    /// Whether a socket listens on TCP `port` (IPv4 or IPv6), from /proc/net/tcp{,6}: state 0A.
    static func tcpListening(port: Int, proc: String = "/proc/net") -> Bool {
        let local = String(format: ":%04X", port)
        for table in ["tcp", "tcp6"] {
            guard let text = try? String(contentsOfFile: "\(proc)/\(table)", encoding: .utf8) else { continue }
            for line in text.split(whereSeparator: \.isNewline).dropFirst() {
                let fields = line.split(separator: " ")
                if fields.count > 3, fields[1].hasSuffix(local), fields[3] == "0A" { return true }
            }
        }
        return false
    }

    /// The errno of the last failed ioctl/write in a `strace -e status=failed` log that is not a
    /// terminal query (ENOTTY): the MR registration, when perftest stops there.
    static func uverbsErrno(strace: String) -> Errno? {
        var found: Errno?
        for line in strace.split(whereSeparator: \.isNewline) {
            guard let range = line.range(of: "= -1 ") else { continue }
            let name = line[range.upperBound...].prefix { $0.isLetter || $0.isNumber }
            if name == "ENOTTY" || name == "EAGAIN" { continue }
            if let errno = Errno(name: String(name)) { found = errno }
        }
        return found
    }
}

/// A child process with its output in a file, that can be waited for with a limit and killed.
final class BoundedProcess: @unchecked Sendable {
    private let process = Process()
    private let outputFile: URL
    private(set) var wasKilled = false

    init(_ arguments: [String], output: URL) throws {
        outputFile = output
        // An empty file to write to; FileHandle(forWritingTo:) throws below when it could not be made.
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        let handle = try FileHandle(forWritingTo: output)
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        try? handle.close()
    }

    var finished: Bool { !process.isRunning }
    var pid: Int32 { process.processIdentifier }
    var output: String { (try? String(contentsOf: outputFile, encoding: .utf8)) ?? "" }

    private var end: ProgramEnd {
        ProgramEnd(status: process.terminationStatus, signaled: process.terminationReason == .uncaughtSignal)
    }

    /// How it ended, or nil if it is still running after `seconds`.
    func wait(seconds: Double) -> ProgramEnd? {
        waitUntil(seconds: seconds, every: quickPoll) { !self.process.isRunning } ? end : nil
    }

    /// Ends it: SIGTERM, then SIGKILL after `grace` seconds.
    @discardableResult
    func reap(grace: Double) -> ProgramEnd {
        if process.isRunning {
            wasKilled = true
            process.terminate()
            if !waitUntil(seconds: max(grace, 0.5), every: quickPoll, { !self.process.isRunning }) {
                kill(process.processIdentifier, SIGKILL)
                _ = waitUntil(seconds: 5) { !self.process.isRunning }
            }
        }
        return process.isRunning ? ProgramEnd(status: SIGKILL, signaled: true) : end
    }
}
