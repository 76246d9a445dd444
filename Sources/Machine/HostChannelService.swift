import Foundation
import LabSupport

/// The host's side of `HostChannel` during one boot: on its own thread (its QMP I/O blocks, and the
/// boot's supervisor must not), it reads the guest's requests, acts through QEMU's monitor and writes
/// the responses, while it reads QEMU's events continuously so each is stamped when it came.
///
/// It connects to the monitor at the first request, so a boot whose checks never ask costs nothing.
public final class HostChannelService: @unchecked Sendable {
    private let channel: HostChannel
    private let devices: [String: QEMUDevice]
    private let limits: LabLimits
    private let client: QMPClient
    private let started = ContinuousClock.now
    private let lock = NSLock()
    private var stopping = false
    private let finished = DispatchSemaphore(value: 0)
    private var running = false

    // The service thread's own state.
    private var handled: Set<String> = []
    private var deviceDelSent: [String: Double] = [:]
    private var waiting: [(file: HostRequestFile, seenAt: Double, deadline: Double)] = []

    /// `devices`: what `device_add` re-creates, by QEMU id (the machine's NVMe controllers).
    public init(channel: HostChannel, socket: String, log: URL, devices: [String: QEMUDevice], limits: LabLimits = .standard) {
        self.channel = channel
        self.devices = devices
        self.limits = limits
        let start = started
        client = QMPClient(socketPath: socket, log: log) { Self.seconds(since: start) }
    }

    /// The service for booting `plan` on `definition`.
    public convenience init(plan: BootPlan, definition: MachineDefinition, limits: LabLimits = .standard) {
        var devices: [String: QEMUDevice] = [:]
        for nvme in definition.nvme {
            devices[nvme.id] = QEMUDevice.nvme(id: nvme.id, serial: nvme.serial, cmbMiB: nvme.cmbMiB, bus: nvme.bus)
        }
        self.init(channel: plan.run.hostChannel, socket: plan.run.qmpSocket, log: plan.run.qmpLog, devices: devices, limits: limits)
    }

    /// Seconds on this service's clock (since it was made, just before QEMU starts).
    public var now: Double { Self.seconds(since: started) }

    static func seconds(since start: ContinuousClock.Instant) -> Double {
        let elapsed = start.duration(to: .now)
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    public func start() {
        lock.withLock { running = true }
        let thread = Thread { [self] in
            while !lock.withLock({ stopping }) { step() }
            client.close()
            finished.signal()
        }
        thread.name = "p2plab-host-channel"
        thread.start()
    }

    /// Stops the thread (within one step) and waits for it; again, it does nothing.
    public func stop() {
        let wasRunning = lock.withLock { () -> Bool in
            stopping = true
            defer { running = false }
            return running
        }
        if wasRunning { finished.wait() }
    }

    /// One round: new requests, QEMU's events (which is also the round's pause), finished waits.
    func step() {
        let (requests, unreadable) = channel.pendingRequests(handled: handled)
        for id in unreadable {
            handled.insert(id)
            logLine("request \(id) does not decode as a HostRequestFile: ignored")
        }
        for file in requests {
            handled.insert(file.id)
            handle(file)
        }
        if client.isConnected {
            do { try client.pump(timeout: 0.05) } catch { logLine("reading events: \(error)") }
        } else {
            Thread.sleep(forTimeInterval: 0.05)
        }
        let time = now
        waiting.removeAll { entry in
            guard case .awaitDeviceDeleted(let device, _) = entry.file.request else { return true }
            let since = deviceDelSent[device] ?? 0
            let event = client.event("DEVICE_DELETED", device: device, since: since)
            guard event != nil || time >= entry.deadline || !client.isConnected else { return false }
            respond(HostResponse(
                id: entry.file.id, request: entry.file.request, seenAt: entry.seenAt, deviceDelSentAt: deviceDelSent[device],
                deviceDeletedAt: event?.at, respondedAt: now))
            return true
        }
    }

    private func handle(_ file: HostRequestFile) {
        let seenAt = now
        logLine("request \(file.id): \(file.request)")
        var response = HostResponse(id: file.id, request: file.request, seenAt: seenAt, respondedAt: seenAt)
        do {
            if !client.isConnected { try client.connect(timeout: limits.qmp) }
            let device = file.request.device
            switch file.request {
            case .deviceDel:
                guard devices[device] != nil else { throw QMPError.commandFailed(command: "device_del", errorClass: "p2plab", message: "the machine has no device \(device)") }
                response.sentAt = now
                deviceDelSent[device] = response.sentAt
                try client.execute("device_del", arguments: ["id": .string(device)], timeout: limits.qmp)
                response.repliedAt = now
            case .deviceAdd:
                guard let spec = devices[device] else { throw QMPError.commandFailed(command: "device_add", errorClass: "p2plab", message: "the machine has no device \(device)") }
                response.sentAt = now
                try client.execute("device_add", arguments: spec.qmpArguments, timeout: limits.qmp)
                response.repliedAt = now
            case .awaitDeviceDeleted(_, let timeout):
                waiting.append((file, seenAt, seenAt + max(0, timeout)))
                return
            }
            response.deviceDelSentAt = deviceDelSent[device]
            response.deviceDeletedAt = deviceDelSent[device].flatMap { client.event("DEVICE_DELETED", device: device, since: $0)?.at }
        } catch {
            response.error = "\(error)"
        }
        response.respondedAt = now
        respond(response)
    }

    private func respond(_ response: HostResponse) {
        do {
            try channel.respond(response)
            logLine("response \(response.id): " + (response.error ?? "done"))
        } catch {
            logLine("response \(response.id) not written: \(error)")
        }
    }

    /// A line of the service's own in qmp.log, beside the protocol lines.
    private func logLine(_ text: String) {
        client.annotate("host channel: " + text)
    }
}
