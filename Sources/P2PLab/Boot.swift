import ArgumentParser

extension P2PLabCommand {
    /// Boot the lab machine: a shell, or one command with --exec.
    struct Boot: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "boot",
            abstract: "Boot the lab machine: a shell, or one command with --exec.")

        func run() async throws {
            throw ValidationError("not implemented yet")
        }
    }
}
