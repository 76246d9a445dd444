import Foundation
import KernelTree
import LabSupport

/// What earlier steps of one bisection booted and where their results are, in `step-memory.json`
/// of the bisection's directory (`git bisect run` starts one process per step, so it is a file).
///
/// The key is the sha256 of the bzImage and of the test module plus everything else that decides
/// a verdict (chosen checks, machine, accelerator, timeouts, the p2plab executables): builds are
/// reproducible (`KernelBuilder` fixes the build timestamp, number, user and host), so a commit
/// that changes no built file gives the same bzImage, and its verdict cannot differ.
public struct StepMemory: Sendable {
    public let file: URL

    public struct Entry: Codable, Sendable, Equatable {
        public var key: String
        public var directory: String
        public var bootOutcome: String?

        public init(key: String, directory: String, bootOutcome: String?) {
            self.key = key
            self.directory = directory
            self.bootOutcome = bootOutcome
        }
    }

    public init(directory: URL) {
        file = directory.appendingPathComponent("step-memory.json")
    }

    public func entries() -> [Entry] {
        guard let data = FileManager.default.contents(atPath: file.path) else { return [] }
        return (try? LabJSON.decoder.decode([Entry].self, from: data)) ?? []
    }

    public func lookup(_ key: String) -> Entry? {
        entries().first { $0.key == key }
    }

    public func remember(_ entry: Entry) {
        var all = entries().filter { $0.key != entry.key }
        all.append(entry)
        try? FileManager.default.ensureDirectory(file.deletingLastPathComponent())
        try? LabJSON.encode(all).write(to: file, options: .atomic)
    }

    /// The key of booting `bzImage` with `module` for `suite` under `limits`.
    func key(bzImage: URL, module: URL, suite: SuitePlan, limits: LabLimits, runner: Runner) async throws -> String {
        let sums = try await runner.checked(Command(["sha256sum", bzImage.path, module.path]), timeout: limits.query * 4).standardOutput
            .split(separator: "\n").map { $0.split(separator: " ").first.map(String.init) ?? "" }
        // Both executables decide a verdict: the host's parser and the guest's suite.
        let identity = [ProjectPaths.executable, ProjectPaths.guestExecutable].map { url -> String in
            let attributes = (try? FileManager.default.attributesOfItem(atPath: url.path)) ?? [:]
            return "\((attributes[.size] as? Int) ?? 0)-\(((attributes[.modificationDate] as? Date)?.timeIntervalSince1970) ?? 0)"
        }.joined(separator: "+")
        return Self.key(sums: sums, machine: suite.machine.name, accel: suite.accel.rawValue, limits: limits,
                        checks: suite.checks + [suite.expect ?? ""], binaryIdentity: identity)
    }

    public static func key(sums: [String], machine: String, accel: String, limits: LabLimits, checks: [String], binaryIdentity: String) -> String {
        let parts = sums + [machine, accel, String(limits.suite), String(limits.check), binaryIdentity] + checks.sorted()
        return sums.joined(separator: "-").prefix(24) + "-" + fnv1a64Hex(parts.joined(separator: "\u{0}"))
    }
}
