import ArgumentParser

extension P2PLabCommand {
    /// Re-render a run directory, or parse KTAP out of a console log.
    struct Report: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "report",
            abstract: "Re-render a run directory, or parse KTAP out of a console log.")

        func run() async throws {
            throw ValidationError("not implemented yet")
        }
    }
}
