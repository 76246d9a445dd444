import ArgumentParser

extension P2PLabCommand {
    /// Run the check suite here (in the guest, or on real hardware) and print KTAP.
    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check",
            abstract: "Run the check suite here (in the guest, or on real hardware) and print KTAP.")

        func run() async throws {
            throw ValidationError("not implemented yet")
        }
    }
}
