import Foundation

/// Where one variant's time went, phase by phase (source, series, build, module, selftests, boot,
/// checks, decode), in the order the phases ran: what a user waiting on a fresh machine, or on a
/// slow bisect step, wants to see first.
public struct PhaseTimes: Codable, Sendable, Equatable {
    public struct Phase: Codable, Sendable, Equatable {
        public var name: String
        public var seconds: Double

        public init(name: String, seconds: Double) {
            self.name = name
            self.seconds = seconds
        }
    }

    public var phases: [Phase]

    public init(_ phases: [Phase] = []) { self.phases = phases }

    /// Adds `seconds` to the phase `name` (a phase met again, a second boot, adds up).
    public mutating func add(_ name: String, _ seconds: Double) {
        if let index = phases.firstIndex(where: { $0.name == name }) {
            phases[index].seconds += seconds
        } else {
            phases.append(Phase(name: name, seconds: seconds))
        }
    }

    /// Runs `body`, adding its wall-clock time to `name`, also when it throws.
    public mutating func time<T>(_ name: String, _ body: () async throws -> T) async rethrows -> T {
        let start = Date()
        defer { add(name, Date().timeIntervalSince(start)) }
        return try await body()
    }

    public mutating func append(_ other: PhaseTimes) {
        for phase in other.phases { add(phase.name, phase.seconds) }
    }

    /// `source 0.1 s, series 0.3 s, build 2.4 s, …`: phases under 0.05 s are left out.
    public var summary: String {
        phases.filter { $0.seconds >= 0.05 }.map { "\($0.name) \(Self.format($0.seconds))" }.joined(separator: ", ")
    }

    static func format(_ seconds: Double) -> String {
        seconds >= 100 ? String(format: "%.0f s", seconds) : String(format: "%.1f s", seconds)
    }
}
