import P2PLab

/// Only hands over to the command tree; everything testable lives in the P2PLab library.
@main
struct Entrypoint {
    static func main() async {
        await P2PLabCommand.main()
    }
}
