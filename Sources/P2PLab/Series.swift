import ArgumentParser

extension P2PLabCommand {
    /// Work with patch series: import whitespace-mangled mail text.
    struct Series: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "series",
            abstract: "Work with patch series: import whitespace-mangled mail text.")

        func run() async throws {
            throw ValidationError("not implemented yet")
        }
    }
}
