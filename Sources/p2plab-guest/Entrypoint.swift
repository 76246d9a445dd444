import GuestSuite

/// Only hands over to the guest's command tree; everything testable lives in GuestSuite.
@main
struct Entrypoint {
    static func main() async {
        await GuestCommand.main()
    }
}
