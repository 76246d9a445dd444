import ArgumentParser
import LabCommandLine

/// p2plab-guest: the check suite and the kernel measurements, where the kernel under test runs
/// (in the lab machine, or on real hardware through `sudo p2plab check`). A separate executable
/// so that the host's `p2plab` does not link libibverbs and libkmod.
public struct GuestCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "p2plab-guest",
        abstract: "Run p2plab's check suite (or its kernel measurements) on the running kernel.",
        subcommands: [Check.self, BenchGuestCommand.self])

    public init() {}

    /// Parses, runs, and exits through the one exit policy.
    public static func main() async {
        // The host's own call skips the command-line parser: its first parse reflects over every
        // option of the tree, about 0.4 s of each lab run's start under TCG.
        if let file = Check.invocationFile(Array(CommandLine.arguments.dropFirst())) {
            await ExitPolicy.main(GuestCommand.self) { try await Check.run(Check.Request.defaults, invocation: file) }
        }
        await ExitPolicy.main(GuestCommand.self)
    }
}
