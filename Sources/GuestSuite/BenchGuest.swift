import ArgumentParser
import Checks
import Foundation
import LabSupport

extension GuestCommand {
    /// The guest half of `p2plab bench`: the kernel measurements, in the lab machine.
    struct BenchGuestCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "bench-guest", shouldDisplay: false)

        @Option(help: "Path of p2plab_test.ko to load if it is not loaded (default: $P2PLAB_MODULE).")
        var module: String?

        @Option(name: .customLong("repeat"))
        var repetitions: Int = 5

        @Option(name: .customLong("only"))
        var only: [String] = []

        @Option var device: String?
        @Option var provider: String?

        @Option(help: "Write bench.json into DIR (in the lab machine: $P2PLAB_RESULTS).")
        var results: String?

        func run() async throws {
            try await Self.measure(module: module, repetitions: repetitions, only: only, device: device, provider: provider, results: results)
        }

        /// Takes the guest measurements, prints a line per figure and writes bench.json into `results`.
        static func measure(module: String?, repetitions: Int, only: [String], device: String?, provider: String?, results: String?) async throws {
            guard geteuid() == 0 else {
                FileHandle.standardError.write(Data("p2plab bench-guest: run as root (it loads a module and pins memory)\n".utf8))
                throw ExitCode(LabExit.notRoot.rawValue)
            }
            let suite = SuiteOptions(
                device: device, provider: provider.flatMap(PCIAddress.init),
                modulePath: module ?? ProcessInfo.processInfo.environment["P2PLAB_MODULE"])
            let report = await BenchGuest.run(BenchGuest.Options(repetitions: repetitions, only: only, suite: suite)) { line in
                FileHandle.standardError.write(Data("\(line)\n".utf8))
            }
            for m in report.measurements {
                let value = m.summary.map { "median \(m.unit.format($0.median)) (\($0.count) samples)" }
                print("\(m.key): \(m.refused.map { "refused \($0)" } ?? m.problem ?? value ?? "no samples")")
            }
            if let results {
                try FileManager.default.createDirectory(atPath: results, withIntermediateDirectories: true)
                try LabJSON.encode(report).write(to: URL(fileURLWithPath: results).appendingPathComponent(GuestBenchReport.fileName))
            }
        }
    }
}
