import Foundation

/// What the host asks of the guest, typed: written as JSON into the run's results share
/// (`$P2PLAB_RESULTS/invocation.json`) before the boot and read by the suite executable in the
/// guest, instead of an argument vector built on one side and parsed on the other.
public struct GuestInvocation: Sendable, Codable, Equatable {
    public static let fileName = "invocation.json"

    /// What to do in the guest.
    public enum Job: Sendable, Codable, Equatable {
        /// Run the check suite (only the checks matching these globs; all when empty).
        case suite(checks: [String])
        /// Take the kernel measurements of `p2plab bench` (those matching `only`), `repetitions` times each.
        case bench(only: [String], repetitions: Int)
        /// Run `p2plab torture` with this plan.
        case torture(TorturePlan)

        /// The suite's check globs (none for a bench).
        public var checks: [String] {
            if case .suite(let checks) = self { return checks }
            return []
        }

        /// How many checks a suite job names.
        public var checkCount: Int { checks.count }
    }

    /// The kernel the guest runs, as built: what the expectations are for.
    public struct Kernel: Sendable, Codable, Equatable {
        public var release: String
        /// The variant's label (`series`, `baseline`, `without-2`, …).
        public var variant: String
        /// The patches applied, in order, by subject and content hash.
        public var patches: [Patch]

        public struct Patch: Sendable, Codable, Equatable {
            public var index: Int
            public var subject: String
            public var contentHash: String
            public init(index: Int, subject: String, contentHash: String) {
                self.index = index
                self.subject = subject
                self.contentHash = contentHash
            }
        }

        public init(release: String, variant: String, patches: [Patch]) {
            self.release = release
            self.variant = variant
            self.patches = patches
        }
    }

    public var job: Job
    /// The kernel the checks assert, as `p2plab check --expect` names it: a version of the series
    /// or its effect tokens (nil: the default version).
    public var expect: String?
    public var limits: LabLimits
    /// The test module to load when it is not loaded.
    public var module: String?
    public var kernel: Kernel?
    /// The kernel's mm selftests built for this kernel, or why there are none (their checks skip with it).
    public var selftests: String?
    public var selftestsProblem: String?
    /// The RDMA device and p2pmem provider to use (nil: the first of each).
    public var device: String?
    public var provider: String?
    /// What the host of the lab machine can do for a check while it runs (nil: nothing, as on
    /// real hardware): the request channel below the results share, and the devices it can
    /// unplug and plug again.
    public var host: HostAccess?

    public init(job: Job, expect: String? = nil, limits: LabLimits = .standard, module: String? = nil, kernel: Kernel? = nil,
                device: String? = nil, provider: String? = nil) {
        self.job = job
        self.expect = expect
        self.limits = limits
        self.module = module
        self.kernel = kernel
        self.device = device
        self.provider = provider
    }

    public func write(into directory: URL) throws {
        try FileManager.default.ensureDirectory(directory)
        try LabJSON.encode(self).write(to: directory.appendingPathComponent(Self.fileName))
    }

    public static func read(from file: URL) throws -> GuestInvocation {
        try LabJSON.decoder.decode(GuestInvocation.self, from: try Data(contentsOf: file))
    }
}

/// The one JSON style of everything p2plab writes: pretty, keys sorted (so two runs diff line by
/// line), slashes as they are, dates in ISO 8601, and a non-finite number as a string (one can
/// only come from a bug, and writing it keeps a report from failing).
/// The host's offer to the checks in a lab machine (`GuestInvocation.host`).
public struct HostAccess: Sendable, Codable, Equatable {
    /// The channel's directory below the results share.
    public var channel: String
    /// Devices the host can `device_del` and `device_add` through QEMU's monitor.
    public var devices: [HostDevice]

    public init(channel: String = HostChannel.directoryName, devices: [HostDevice]) {
        self.channel = channel
        self.devices = devices
    }
}

public enum LabJSON {
    public static var encoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return encoder
    }

    /// Reads what `encoder` wrote.
    public static var decoder: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return decoder
    }

    public static func encode<T: Encodable>(_ value: T) throws -> Data {
        try encoder.encode(value)
    }
}
