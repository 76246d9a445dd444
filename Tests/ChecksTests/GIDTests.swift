@testable import Checks
import Testing

@Suite("RoCE GIDs")
struct GIDTests {
    @Test("an IPv4-mapped GID (::ffff:a.b.c.d) is the one the loopback pair addresses; link-local and IPv6 GIDs are not")
    func ipv4Mapped() {
        // ::ffff:10.0.2.15, as rxe lists eth0's IPv4 address
        #expect(VerbsContext.isIPv4Mapped([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 2, 15]))
        // fe80::5054:ff:fe12:3456, the default GID made from the MAC
        #expect(!VerbsContext.isIPv4Mapped([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x50, 0x54, 0, 0xff, 0xfe, 0x12, 0x34, 0x56]))
        // ::1 and a short buffer
        #expect(!VerbsContext.isIPv4Mapped([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]))
        #expect(!VerbsContext.isIPv4Mapped([0, 0, 0xff, 0xff]))
    }
}
