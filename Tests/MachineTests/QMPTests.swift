import Foundation
import LabSupport
import Testing

@testable import Machine

#if canImport(Glibc)
import Glibc
#endif

/// A QMP server on a Unix socket that behaves like QEMU 7.2 as far as the lab uses it: a greeting,
/// negotiation, `device_del` acknowledged at once with DEVICE_DELETED `unplugDelay` later (the
/// guest letting the device go), `device_add` checking its typed arguments, an error for anything else.
final class FakeQMPServer: @unchecked Sendable {
    let path: String
    let unplugDelay: Double
    private let listener: Int32
    private let lock = NSLock()
    private var _received: [[String: Any]] = []
    private let done = DispatchSemaphore(value: 0)

    init(directory: URL, unplugDelay: Double = 0.3) throws {
        path = directory.appendingPathComponent("qmp.sock").path
        self.unplugDelay = unplugDelay
        listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        try #require(rc == 0 && listen(listener, 1) == 0)
        let thread = Thread { [self] in serve() }
        thread.start()
    }

    /// The commands received, as JSON objects.
    var received: [[String: Any]] { lock.withLock { _received } }
    var commands: [String] { received.compactMap { $0["execute"] as? String } }

    func waitUntilClosed() { _ = done.wait(timeout: .now() + 5) }

    private func serve() {
        defer {
            close(listener)
            done.signal()
        }
        let client = accept(listener, nil, nil)
        guard client >= 0 else { return }
        defer { close(client) }
        func send(_ object: [String: Any]) {
            var data = try! JSONSerialization.data(withJSONObject: object)
            data.append(UInt8(ascii: "\n"))
            _ = data.withUnsafeBytes { Glibc.send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        }
        send(["QMP": ["version": ["qemu": ["major": 7, "minor": 2, "micro": 22]], "capabilities": ["oob"]]])
        var pending: [UInt8] = []
        var deletions: [(device: String, at: Date)] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            var entry = pollfd(fd: client, events: Int16(POLLIN), revents: 0)
            if poll(&entry, 1, 20) > 0 {
                let count = read(client, &buffer, buffer.count)
                if count <= 0 { return }
                pending.append(contentsOf: buffer[..<count])
            }
            let now = Date()
            for deletion in deletions where deletion.at <= now {
                // QEMU first reports the device's own children (no id), then the device.
                send(["event": "DEVICE_DELETED", "data": ["path": "/machine/peripheral/\(deletion.device)/nvme-bus.0"],
                      "timestamp": ["seconds": 0, "microseconds": 0]])
                send(["event": "DEVICE_DELETED", "data": ["device": deletion.device, "path": "/machine/peripheral/\(deletion.device)"],
                      "timestamp": ["seconds": 0, "microseconds": 0]])
            }
            deletions.removeAll { $0.at <= now }
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = Data(pending[..<newline])
                pending.removeSubrange(...newline)
                guard let object = (try? JSONSerialization.jsonObject(with: line)) as? [String: Any] else { continue }
                lock.withLock { _received.append(object) }
                let id = object["id"] ?? NSNull()
                let arguments = object["arguments"] as? [String: Any] ?? [:]
                switch object["execute"] as? String {
                case "qmp_capabilities":
                    send(["return": [String: Any](), "id": id])
                case "device_del":
                    if let device = arguments["id"] as? String, device == "nvme0" {
                        deletions.append((device, Date().addingTimeInterval(unplugDelay)))
                        send(["return": [String: Any](), "id": id])
                    } else {
                        send(["error": ["class": "DeviceNotFound", "desc": "Device '\(arguments["id"] ?? "")' not found"], "id": id])
                    }
                case "device_add":
                    // QEMU's device_add from QMP type-checks: a number given as a string is refused.
                    if arguments["cmb_size_mb"] is String {
                        send(["error": ["class": "GenericError", "desc": "Parameter 'cmb_size_mb' expects uint32"], "id": id])
                    } else {
                        send(["return": [String: Any](), "id": id])
                    }
                default:
                    send(["error": ["class": "CommandNotFound", "desc": "The command \(object["execute"] ?? "") has not been found"], "id": id])
                }
            }
        }
    }
}

/// A short directory for sockets (the test bundle's temporary directory may be too long for sun_path).
func socketDirectory() throws -> URL {
    let url = URL(fileURLWithPath: "/tmp/p2plab-qmp-\(UUID().uuidString.prefix(8))")
    try FileManager.default.ensureDirectory(url)
    return url
}

@Suite("QMP client")
struct QMPClientTests {
    let start = ContinuousClock.now
    var clock: @Sendable () -> Double {
        let start = self.start
        return { HostChannelService.seconds(since: start) }
    }

    @Test("negotiates, runs a command, keeps events that arrive between replies, logs every line")
    func session() throws {
        let directory = try socketDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let server = try FakeQMPServer(directory: directory, unplugDelay: 0.2)
        let log = directory.appendingPathComponent("qmp.log")
        let client = QMPClient(socketPath: server.path, log: log, clock: clock)
        try client.connect(timeout: 5)
        #expect(client.greeting?.contains("\"major\":7") == true)
        let sent = clock()
        #expect(try client.execute("device_del", arguments: ["id": .string("nvme0")], timeout: 5) == "{}")
        #expect(client.event("DEVICE_DELETED", device: "nvme0", since: sent) == nil)
        try client.pump(timeout: 1)
        let event = try #require(client.event("DEVICE_DELETED", device: "nvme0", since: sent))
        #expect(event.at - sent >= 0.15)
        #expect(event.path == "/machine/peripheral/nvme0")
        // The child's DEVICE_DELETED (no id) is kept but is not the device's.
        #expect(client.events.filter { $0.name == "DEVICE_DELETED" }.count == 2)
        client.close()
        server.waitUntilClosed()
        #expect(server.commands == ["qmp_capabilities", "device_del"])
        let text = try String(contentsOf: log, encoding: .utf8)
        #expect(text.contains("-> {\"arguments\":{\"id\":\"nvme0\"},\"execute\":\"device_del\",\"id\":\"p2plab-2\"}"))
        #expect(text.contains("<- {") && text.contains("DEVICE_DELETED"))
    }

    @Test("QEMU's error is thrown with its class and text")
    func refused() throws {
        let directory = try socketDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let server = try FakeQMPServer(directory: directory)
        let client = QMPClient(socketPath: server.path, log: nil, clock: clock)
        try client.connect(timeout: 5)
        let error = #expect(throws: QMPError.self) { try client.execute("device_del", arguments: ["id": .string("nope")], timeout: 5) }
        #expect(error == .commandFailed(command: "device_del", errorClass: "DeviceNotFound", message: "Device 'nope' not found"))
        client.close()
    }

    @Test("no socket: connect gives up at its timeout and says where it looked")
    func noSocket() throws {
        let client = QMPClient(socketPath: "/tmp/p2plab-no-such-\(UUID().uuidString.prefix(8)).sock", log: nil, clock: clock)
        let before = clock()
        let error = #expect(throws: QMPError.self) { try client.connect(timeout: 0.3) }
        #expect(clock() - before < 3)
        #expect(error?.description.contains("cannot connect to QEMU's monitor at /tmp/p2plab-no-such-") == true)
    }
}

@Suite("The host channel")
struct HostChannelTests {
    @Test("requests and responses survive the share: typed JSON, written whole")
    func codec() throws {
        let directory = try TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let channel = HostChannel(directory: directory)
        let requests: [HostRequest] = [.deviceDel(device: "nvme0"), .awaitDeviceDeleted(device: "nvme0", timeout: 2.5), .deviceAdd(device: "nvme0")]
        var ids: [String] = []
        for request in requests { ids.append(try channel.submit(request)) }
        let pending = channel.pendingRequests(handled: [])
        #expect(Set(pending.requests.map(\.request.description)) == Set(requests.map(\.description)))
        #expect(pending.unreadable.isEmpty)
        #expect(channel.pendingRequests(handled: Set(ids)).requests.isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: channel.requests.path).allSatisfy { $0.hasSuffix(".json") })
        let response = HostResponse(id: ids[1], request: requests[1], seenAt: 1.25, deviceDelSentAt: 1.0, deviceDeletedAt: 7.5, respondedAt: 7.6)
        try channel.respond(response)
        #expect(channel.response(to: ids[1], timeout: 1) == response)
        #expect(channel.response(to: ids[0], timeout: 0.1) == nil)
        try "{not json".write(to: channel.requests.appendingPathComponent("broken.json"), atomically: true, encoding: .utf8)
        #expect(channel.pendingRequests(handled: Set(ids)).unreadable == ["broken"])
    }

    @Test("the service: device_del answered at once, DEVICE_DELETED awaited with host times, device_add with the original properties")
    func service() throws {
        let directory = try socketDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let server = try FakeQMPServer(directory: directory, unplugDelay: 0.5)
        let channel = HostChannel(directory: directory.appendingPathComponent("guest/host"))
        let device = QEMUDevice.nvme(id: "nvme0", serial: "p2plab-cmb", cmbMiB: 64, bus: "sw0-dp0")
        let service = HostChannelService(
            channel: channel, socket: server.path, log: directory.appendingPathComponent("qmp.log"), devices: ["nvme0": device])
        service.start()
        defer { service.stop() }

        let del = try channel.call(.deviceDel(device: "nvme0"), timeout: 10)
        let sent = try #require(del.sentAt)
        #expect(del.deviceDeletedAt == nil)
        #expect(try #require(del.repliedAt) >= sent)
        // Asked at once: not yet deleted (the fake guest takes 0.5 s).
        let early = try channel.call(.awaitDeviceDeleted(device: "nvme0", timeout: 0), timeout: 10)
        #expect(early.deviceDeletedAt == nil)
        let deleted = try channel.call(.awaitDeviceDeleted(device: "nvme0", timeout: 5), timeout: 10)
        let at = try #require(deleted.deviceDeletedAt)
        #expect(deleted.deviceDelSentAt == sent)
        #expect(at - sent >= 0.45 && at - sent < 3)
        _ = try channel.call(.deviceAdd(device: "nvme0"), timeout: 10)
        let refused = #expect(throws: HostChannelError.self) { try channel.call(.deviceDel(device: "nvme9"), timeout: 10) }
        #expect(refused?.description.contains("the machine has no device nvme9") == true)

        service.stop()
        server.waitUntilClosed()
        #expect(server.commands == ["qmp_capabilities", "device_del", "device_add"])
        let add = try #require(server.received.last { $0["execute"] as? String == "device_add" }?["arguments"] as? [String: Any])
        #expect(add["driver"] as? String == "nvme" && add["id"] as? String == "nvme0" && add["bus"] as? String == "sw0-dp0")
        #expect(add["drive"] as? String == "nvme0-ns" && add["serial"] as? String == "p2plab-cmb")
        #expect(add["cmb_size_mb"] as? Int == 64)
        let log = try String(contentsOf: directory.appendingPathComponent("qmp.log"), encoding: .utf8)
        #expect(log.contains("host channel: request") && log.contains("\"execute\":\"device_add\""))
    }

    @Test("without a monitor the request is answered with the reason, not left waiting")
    func noMonitor() throws {
        let directory = try socketDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let channel = HostChannel(directory: directory.appendingPathComponent("host"))
        var limits = LabLimits.standard
        limits.qmp = 0.3
        let service = HostChannelService(
            channel: channel, socket: directory.appendingPathComponent("absent.sock").path, log: directory.appendingPathComponent("qmp.log"),
            devices: [:], limits: limits)
        service.start()
        defer { service.stop() }
        let error = #expect(throws: HostChannelError.self) { try channel.call(.deviceDel(device: "nvme0"), timeout: 5) }
        #expect(error?.description.contains("cannot connect to QEMU's monitor") == true)
    }
}
