import Testing
@testable import Checks

@Suite("P2PDMA hints from the kernel log")
struct P2PDMAHintsTests {
    @Test("kernel lines about P2PDMA are kept, others not", arguments: [
        ("nvme 0000:03:00.0: added peer-to-peer DMA memory 0x800000000-0x803ffffff", true),
        ("nvme 0000:01:00.0: cannot be used for peer-to-peer DMA as the client and provider (0000:02:00.0) do not share an upstream bridge or whitelisted host bridge", true),
        ("pci 0000:00:01.0: ACS redirect is set between the client and provider (0000:02:00.0)", true),
        ("nvme nvme0: 2/0/0 default/read/poll queues", false),
        ("virtio_net virtio1 eth0: renamed from eth0", false),
    ])
    func hint(line: String, kept: Bool) {
        #expect(P2PDMAHints.isHint(line) == kept)
    }

    @Test("an unreadable log yields no lines rather than an error")
    func unreadable() {
        #expect(P2PDMAHints.fromKernelLog(path: "/nonexistent/kmsg").isEmpty)
    }
}
