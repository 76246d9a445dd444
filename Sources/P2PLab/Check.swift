import ArgumentParser
import Foundation
import LabSupport

extension P2PLabCommand {
    /// `p2plab check`: the suite on this machine's running kernel, run by `p2plab-guest` (beside this
    /// executable), which holds the parts that need libibverbs and libkmod.
    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check",
            abstract: "Run the check suite here (in the guest, or on real hardware) and print KTAP.",
            discussion: """
                Runs p2plab-guest check with the same arguments (see `p2plab check --help` there: \
                --list, --filter GLOB, --device, --provider, --module, --results DIR, --selftests DIR). \
                Prints KTAP version 1 and exits 0 when every check passed or skipped, 1 on a failure or \
                a timeout, 4 when everything skipped or the test module is missing, 5 when not run as \
                root, 6 when no p2pmem provider is published.
                """,
            helpNames: [])

        @Argument(parsing: .captureForPassthrough, help: "The arguments of p2plab-guest check.")
        var arguments: [String] = []

        func run() throws {
            let guest = ProjectPaths.guestExecutable
            guard FileManager.default.isExecutableFile(atPath: guest.path) else {
                throw GuestExecutableError.missing(guest.path)
            }
            let argv = [guest.path, "check"] + arguments
            var cArgs = argv.map { strdup($0) } + [nil]
            execv(guest.path, &cArgs)
            throw GuestExecutableError.cannotRun(guest.path, String(cString: strerror(errno)))
        }
    }
}

/// The guest suite executable is not where the host binary expects it.
enum GuestExecutableError: LabError {
    case missing(String)
    case cannotRun(String, String)

    var exitCode: LabExit { .missingDependency }

    var description: String {
        switch self {
        case .missing(let path):
            "\(path) not found: p2plab runs the suite with p2plab-guest from its own directory; build it with `swift build` (scripts/setup does)"
        case .cannotRun(let path, let reason):
            "cannot run \(path): \(reason)"
        }
    }
}
