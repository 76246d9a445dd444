import LabCommandLine

extension P2PLabCommand {
    /// Parses, runs, and exits through the one exit policy.
    public static func main() async {
        await ExitPolicy.main(P2PLabCommand.self)
    }
}
