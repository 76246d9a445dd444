import Foundation
import LabSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A value in a QMP command's arguments. `device_add` from QMP checks property types (a number
/// must be a JSON number), so the properties keep theirs.
public enum QMPValue: Sendable, Equatable {
    case string(String)
    case int(Int)
    case bool(Bool)

    var json: Any {
        switch self {
        case .string(let value): value
        case .int(let value): value
        case .bool(let value): value
        }
    }

    /// As a `-device key=value` value.
    var commandLine: String {
        switch self {
        case .string(let value): qemuEscape(value)
        case .int(let value): String(value)
        case .bool(let value): value ? "on" : "off"
        }
    }
}

/// An asynchronous message from QEMU (`DEVICE_DELETED`, …), with when it arrived.
public struct QMPEvent: Sendable, Equatable {
    public var name: String
    /// `data.device`: the id of the device the event is about, if any.
    public var device: String?
    /// `data.path`: its QOM path, if any.
    public var path: String?
    /// The client's clock when the line was read.
    public var at: Double
    /// The line as QEMU sent it.
    public var raw: String
}

public enum QMPError: Error, CustomStringConvertible, Sendable, Equatable {
    case cannotConnect(path: String, reason: String)
    case timeout(what: String, seconds: Double)
    case closed(what: String)
    case commandFailed(command: String, errorClass: String, message: String)
    case malformed(line: String)

    public var description: String {
        switch self {
        case .cannotConnect(let path, let reason): "cannot connect to QEMU's monitor at \(path): \(reason)"
        case .timeout(let what, let seconds): String(format: "QEMU's monitor did not answer %@ within %.0f s", what, seconds)
        case .closed(let what): "QEMU's monitor closed the connection (\(what)): QEMU has exited"
        case .commandFailed(let command, let errorClass, let message): "QEMU refused \(command): \(errorClass): \(message)"
        case .malformed(let line): "QEMU's monitor sent a line that is not a JSON object: \(line.prefix(200))"
        }
    }
}

/// A small client of QEMU's machine protocol (QMP) over its Unix socket: negotiation
/// (`qmp_capabilities`), commands with their replies, and the events that arrive in between.
/// Every line sent and received goes into the log, stamped with the client's clock.
///
/// Blocking I/O with timeouts: one thread uses a client at a time (the boot's host channel runs
/// it on its own thread).
public final class QMPClient: @unchecked Sendable {
    public let socketPath: String
    private let clock: @Sendable () -> Double
    private let log: FileHandle?
    private var fd: Int32 = -1
    private var pending: [UInt8] = []
    private var nextID = 1
    /// Every event received so far, oldest first.
    public private(set) var events: [QMPEvent] = []
    /// QEMU's greeting line (its version).
    public private(set) var greeting: String?

    /// `log`: appended to (created if missing); nil logs nothing.
    public init(socketPath: String, log: URL?, clock: @escaping @Sendable () -> Double) {
        self.socketPath = socketPath
        self.clock = clock
        if let log {
            if !FileManager.default.fileExists(atPath: log.path) { _ = FileManager.default.createFile(atPath: log.path, contents: nil) }
            self.log = FileHandle(forWritingAtPath: log.path)
            _ = try? self.log?.seekToEnd()
        } else {
            self.log = nil
        }
    }

    deinit {
        close()
        try? log?.close()
    }

    public var isConnected: Bool { fd >= 0 }

    /// Connects (retrying while the socket is not there yet), reads the greeting and leaves
    /// negotiation mode with `qmp_capabilities`.
    public func connect(timeout: Double) throws {
        let deadline = clock() + timeout
        var lastError = "the socket never appeared"
        while fd < 0 {
            switch Self.open(socketPath) {
            case .success(let descriptor): fd = descriptor
            case .failure(let reason):
                lastError = reason.text
                if clock() >= deadline { throw QMPError.cannotConnect(path: socketPath, reason: lastError) }
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
        note("connected to \(socketPath)")
        do {
            let line = try requireLine(until: deadline, what: "the greeting", limit: timeout)
            guard let object = Self.object(line), object["QMP"] != nil else { throw QMPError.malformed(line: line) }
            greeting = line
            _ = try execute("qmp_capabilities", timeout: max(0.1, deadline - clock()))
        } catch {
            close()
            throw error
        }
    }

    /// Sends a command and returns its `return` value as JSON text; QEMU's `error` throws.
    /// Events that arrive before the reply are kept in `events`.
    @discardableResult
    public func execute(_ command: String, arguments: [String: QMPValue] = [:], timeout: Double) throws -> String {
        guard fd >= 0 else { throw QMPError.closed(what: command) }
        let id = "p2plab-\(nextID)"
        nextID += 1
        var message: [String: Any] = ["execute": command, "id": id]
        if !arguments.isEmpty { message["arguments"] = arguments.mapValues(\.json) }
        let data = try JSONSerialization.data(withJSONObject: message, options: [.sortedKeys, .withoutEscapingSlashes])
        try send(String(decoding: data, as: UTF8.self))
        let deadline = clock() + timeout
        while true {
            let line = try requireLine(until: deadline, what: command, limit: timeout)
            guard let object = Self.object(line) else { throw QMPError.malformed(line: line) }
            if object["event"] != nil {
                record(object, line: line)
                continue
            }
            guard object["id"] as? String == id else { continue }
            if let error = object["error"] as? [String: Any] {
                throw QMPError.commandFailed(
                    command: command, errorClass: error["class"] as? String ?? "?", message: error["desc"] as? String ?? "")
            }
            let value = object["return"] ?? [String: Any]()
            let text = (try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed]))
                .map { String(decoding: $0, as: UTF8.self) } ?? "{}"
            return text
        }
    }

    /// Reads what QEMU sends within `timeout` seconds (events), returning early once nothing more is
    /// waiting after the first line. Throws when QEMU closed the connection.
    public func pump(timeout: Double) throws {
        guard fd >= 0 else { return }
        let deadline = clock() + timeout
        var wait = timeout
        while true {
            guard let line = try nextLine(until: clock() + wait, what: "events", allowTimeout: true) else { return }
            if let object = Self.object(line), object["event"] != nil { record(object, line: line) }
            wait = max(0, min(0.005, deadline - clock()))
        }
    }

    /// The first event called `name` about `device` that arrived at or after `since`.
    public func event(_ name: String, device: String, since: Double) -> QMPEvent? {
        events.first { $0.name == name && $0.device == device && $0.at >= since }
    }

    public func close() {
        if fd >= 0 {
            Glibc.close(fd)
            fd = -1
            note("closed")
        }
    }

    // MARK: Lines

    private func send(_ line: String) throws {
        write("-> \(line)")
        var bytes = Array((line + "\n").utf8)
        var offset = 0
        while offset < bytes.count {
            let count = bytes.withUnsafeMutableBytes { Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            if count < 0 {
                if errno == EINTR { continue }
                let reason = systemError()
                close()
                throw QMPError.closed(what: "sending: \(reason)")
            }
            offset += count
        }
    }

    /// The next line, or nil at the deadline when `allowTimeout` (else a timeout error).
    private func nextLine(until deadline: Double, what: String, allowTimeout: Bool, limit: Double = 0) throws -> String? {
        while true {
            if let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: pending[..<newline], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                pending.removeSubrange(...newline)
                if line.isEmpty { continue }
                write("<- \(line)")
                return line
            }
            let remaining = deadline - clock()
            if remaining <= 0 {
                if allowTimeout { return nil }
                throw QMPError.timeout(what: what, seconds: limit)
            }
            var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&entry, 1, Int32(min(remaining, 1) * 1000) + 1)
            if ready < 0, errno == EINTR { continue }
            if ready <= 0 { continue }
            var buffer = [UInt8](repeating: 0, count: 4096)
            let count = Glibc.read(fd, &buffer, buffer.count)
            if count < 0, errno == EINTR || errno == EAGAIN { continue }
            if count <= 0 {
                close()
                throw QMPError.closed(what: what)
            }
            pending.append(contentsOf: buffer[..<count])
        }
    }

    private func requireLine(until deadline: Double, what: String, limit: Double) throws -> String {
        // Without allowTimeout, nextLine throws instead of returning nil.
        try nextLine(until: deadline, what: what, allowTimeout: false, limit: limit)!
    }

    private func record(_ object: [String: Any], line: String) {
        let data = object["data"] as? [String: Any]
        events.append(QMPEvent(
            name: object["event"] as? String ?? "", device: data?["device"] as? String, path: data?["path"] as? String,
            at: clock(), raw: line))
    }

    private func note(_ text: String) { write("-- \(text)") }

    /// A line of the caller's own in the log (what a command was for).
    public func annotate(_ text: String) { note(text) }

    private func write(_ text: String) {
        log?.write(Data((String(format: "%9.3f ", clock()) + text + "\n").utf8))
    }

    static func object(_ line: String) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
    }

    /// A connected stream socket to `path`.
    static func open(_ path: String) -> Result<Int32, SocketError> {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else { return .failure(SocketError(text: "the path is longer than \(capacity - 1) bytes")) }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure(SocketError(text: systemError())) }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            let failure = SocketError(text: systemError())
            Glibc.close(fd)
            return .failure(failure)
        }
        return .success(fd)
    }
}

struct SocketError: Error {
    var text: String
}

/// strerror(errno), for a message.
func systemError() -> String { String(cString: strerror(errno)) }
