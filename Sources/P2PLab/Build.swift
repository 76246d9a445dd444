import ArgumentParser

extension P2PLabCommand {
    /// Build a kernel: Debian 6.12 source or your tree, plus the series, plus the lab config.
    struct Build: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "build",
            abstract: "Build a kernel: Debian 6.12 source or your tree, plus the series, plus the lab config.")

        func run() async throws {
            throw ValidationError("not implemented yet")
        }
    }
}
