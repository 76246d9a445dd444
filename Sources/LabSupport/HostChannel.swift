import Foundation

/// What a check in the lab machine asks the host to do while it runs: things only the VM's host
/// can do, through QEMU's monitor (QMP).
public enum HostRequest: Sendable, Codable, Equatable, CustomStringConvertible {
    /// `device_del` of a device of the machine definition (its QEMU id); the host answers once
    /// QEMU has accepted the command, without waiting for the guest to let the device go.
    case deviceDel(device: String)
    /// Waits up to `timeout` seconds for QEMU's DEVICE_DELETED of `device` after its last
    /// `device_del` (0: only says whether it has come).
    case awaitDeviceDeleted(device: String, timeout: Double)
    /// `device_add` of the device again, with the properties it was started with.
    case deviceAdd(device: String)

    public var device: String {
        switch self {
        case .deviceDel(let device), .awaitDeviceDeleted(let device, _), .deviceAdd(let device): device
        }
    }

    public var description: String {
        switch self {
        case .deviceDel(let device): "device_del \(device)"
        case .awaitDeviceDeleted(let device, let timeout): "await DEVICE_DELETED \(device) (\(timeout) s)"
        case .deviceAdd(let device): "device_add \(device)"
        }
    }
}

/// One request as the guest writes it.
public struct HostRequestFile: Sendable, Codable, Equatable {
    /// Unique within the boot; the response file carries it too.
    public var id: String
    public var request: HostRequest

    public init(id: String, request: HostRequest) {
        self.id = id
        self.request = request
    }
}

/// The host's answer. Times are the host's seconds since QEMU started (one clock for all of them,
/// so their differences are durations; the guest's clock is another one).
public struct HostResponse: Sendable, Codable, Equatable {
    public var id: String
    public var request: HostRequest
    /// Why the host could not do it (no monitor, QEMU refused the command, a timeout); nil when done.
    public var error: String?
    /// When the host read the request.
    public var seenAt: Double
    /// When the QMP command was sent and QEMU's reply arrived (device_del, device_add).
    public var sentAt: Double?
    public var repliedAt: Double?
    /// The device's last `device_del`, and QEMU's DEVICE_DELETED after it (nil: not yet).
    public var deviceDelSentAt: Double?
    public var deviceDeletedAt: Double?
    /// When the host wrote this response.
    public var respondedAt: Double

    public init(
        id: String, request: HostRequest, error: String? = nil, seenAt: Double, sentAt: Double? = nil, repliedAt: Double? = nil,
        deviceDelSentAt: Double? = nil, deviceDeletedAt: Double? = nil, respondedAt: Double
    ) {
        self.id = id
        self.request = request
        self.error = error
        self.seenAt = seenAt
        self.sentAt = sentAt
        self.repliedAt = repliedAt
        self.deviceDelSentAt = deviceDelSentAt
        self.deviceDeletedAt = deviceDeletedAt
        self.respondedAt = respondedAt
    }
}

/// A device of the lab machine that the host can unplug and plug again, as the guest finds it.
public struct HostDevice: Sendable, Codable, Equatable {
    /// QEMU's device id (`nvme0`).
    public var id: String
    /// The NVMe serial number the guest sees in sysfs.
    public var serial: String
    /// The PCIe port it sits on (`sw0-dp0`).
    public var bus: String

    public init(id: String, serial: String, bus: String) {
        self.id = id
        self.serial = serial
        self.bus = bus
    }
}

/// Why a request got no usable answer.
public enum HostChannelError: Error, CustomStringConvertible, Sendable, Equatable {
    case noResponse(request: HostRequest, seconds: Double)
    case refused(request: HostRequest, reason: String)
    case unwritable(path: String, reason: String)

    public var description: String {
        switch self {
        case .noResponse(let request, let seconds):
            String(format: "the host did not answer %@ within %.0f s (its monitor log is qmp.log in the run directory)", request.description, seconds)
        case .refused(let request, let reason): "the host could not \(request): \(reason)"
        case .unwritable(let path, let reason): "cannot write the request \(path): \(reason)"
        }
    }
}

/// The request channel between a check in the guest and the host's boot supervisor: files in the
/// run directory's results share (`guest/host/`), which the guest mounts uncached, so a file is on
/// the host when the write returns. The guest writes `requests/ID.json`; the host, which watches
/// the run, acts and writes `responses/ID.json`. Each file is written under a `.part` name and
/// renamed, so neither side reads half of one.
public struct HostChannel: Sendable {
    /// Below the results share.
    public static let directoryName = "host"

    public var directory: URL
    public init(directory: URL) { self.directory = directory }

    public var requests: URL { directory.appendingPathComponent("requests") }
    public var responses: URL { directory.appendingPathComponent("responses") }

    // MARK: The guest's side

    /// Writes a request; returns its id.
    @discardableResult
    public func submit(_ request: HostRequest, id: String = UUID().uuidString.lowercased()) throws -> String {
        try Self.place(HostRequestFile(id: id, request: request), named: id, in: requests)
        return id
    }

    /// The response to `id`, once the host has written it; nil after `timeout` seconds.
    public func response(to id: String, timeout: Double, poll: Double = 0.05) -> HostResponse? {
        let file = responses.appendingPathComponent("\(id).json")
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let data = FileManager.default.contents(atPath: file.path),
                let response = try? LabJSON.decoder.decode(HostResponse.self, from: data)
            {
                return response
            }
            if Date() >= deadline { return nil }
            Thread.sleep(forTimeInterval: poll)
        }
    }

    /// Submits `request` and waits for its response; a response with an error throws it.
    /// `timeout` covers the host's own waiting (an awaitDeviceDeleted's timeout is added to it).
    public func call(_ request: HostRequest, timeout: Double) throws -> HostResponse {
        let id = try submit(request)
        var limit = timeout
        if case .awaitDeviceDeleted(_, let wait) = request { limit += wait }
        guard let response = response(to: id, timeout: limit) else {
            throw HostChannelError.noResponse(request: request, seconds: limit)
        }
        if let error = response.error { throw HostChannelError.refused(request: request, reason: error) }
        return response
    }

    // MARK: The host's side

    /// The requests written so far whose ids are not in `handled`, oldest first, and the ids of
    /// files that do not decode (another p2plab version's; the host logs and skips them).
    public func pendingRequests(handled: Set<String>) -> (requests: [HostRequestFile], unreadable: [String]) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: requests.path)) ?? []
        var dated: [(Date, HostRequestFile)] = []
        var unreadable: [String] = []
        for name in names where name.hasSuffix(".json") && !handled.contains(String(name.dropLast(5))) {
            let url = requests.appendingPathComponent(name)
            let modified = (try? FileManager.default.attributesOfItem(atPath: url.path)[.modificationDate] as? Date) ?? .distantPast
            if let data = FileManager.default.contents(atPath: url.path),
                let file = try? LabJSON.decoder.decode(HostRequestFile.self, from: data)
            {
                dated.append((modified, file))
            } else {
                unreadable.append(String(name.dropLast(5)))
            }
        }
        return (dated.sorted { $0.0 < $1.0 }.map(\.1), unreadable.sorted())
    }

    public func respond(_ response: HostResponse) throws {
        try Self.place(response, named: response.id, in: responses)
    }

    static func place(_ value: some Encodable, named id: String, in directory: URL) throws {
        guard !id.isEmpty, !id.contains("/"), !id.hasPrefix(".") else {
            throw HostChannelError.unwritable(path: directory.path, reason: "\(id) is not a request id")
        }
        let final = directory.appendingPathComponent("\(id).json")
        let part = directory.appendingPathComponent("\(id).json.part")
        do {
            try FileManager.default.ensureDirectory(directory)
            try LabJSON.encode(value).write(to: part)
            _ = try? FileManager.default.removeItem(at: final)
            try FileManager.default.moveItem(at: part, to: final)
        } catch {
            throw HostChannelError.unwritable(path: final.path, reason: error.localizedDescription)
        }
    }
}
