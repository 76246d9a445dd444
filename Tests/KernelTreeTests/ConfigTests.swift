import Foundation
import Testing
@testable import KernelTree

@Suite("Config fragments")
struct ConfigTests {
    @Test("parses =y, =m, numbers, strings and 'is not set'; later lines win")
    func parse() {
        let f = ConfigFragment(origin: "t", text: """
            # comment
            CONFIG_A=y
            CONFIG_B=m
            CONFIG_C=64
            CONFIG_D="x y"
            # CONFIG_E is not set
            CONFIG_A=n
            """)
        #expect(f.options.map(\.name) == ["CONFIG_A", "CONFIG_B", "CONFIG_C", "CONFIG_D", "CONFIG_E"])
        #expect(f.options.map(\.value) == ["n", "m", "64", "\"x y\"", "n"])
    }

    @Test("reports options olddefconfig dropped or changed; absent counts as n")
    func dropped() {
        let f = ConfigFragment(origin: "t", text: "CONFIG_PCI_P2PDMA=y\nCONFIG_ZONE_DEVICE=y\n# CONFIG_KASAN is not set\nCONFIG_HZ=100\n")
        let config = "CONFIG_ZONE_DEVICE=y\n# CONFIG_PCI_P2PDMA is not set\nCONFIG_HZ=250\n"
        let d = f.dropped(in: config)
        #expect(d.map(\.name) == ["CONFIG_PCI_P2PDMA", "CONFIG_HZ"])
        #expect(d.map(\.got) == ["n", "250"])
    }

    @Test("the lab fragment asks for every option the lab needs")
    func labFragment() throws {
        let f = try ConfigFragment.load(repoRoot.appendingPathComponent("kernel/config/p2plab.config"))
        let names = Set(f.options.map(\.name))
        for needed in ["PCI_P2PDMA", "ZONE_DEVICE", "MEMORY_HOTPLUG", "MEMORY_HOTREMOVE", "BLK_DEV_NVME", "PCIEPORTBUS",
                       "INFINIBAND", "INFINIBAND_USER_ACCESS", "INFINIBAND_USER_MEM", "RDMA_RXE", "GUP_TEST", "NET_9P",
                       "NET_9P_VIRTIO", "9P_FS", "VIRTIO_PCI", "VIRTIO_NET", "VIRTIO_CONSOLE", "MODULES", "MODULE_UNLOAD",
                       "DEBUG_FS", "EXT4_FS", "BOOTPARAM_SOFTLOCKUP_PANIC", "DETECT_HUNG_TASK"] {
            #expect(names.contains("CONFIG_" + needed), "fragment lacks CONFIG_\(needed)")
        }
    }

    @Test("the config hash changes with any fragment text and with nothing else")
    func configHash() {
        let a = KernelBuilder.configHash(texts: ["CONFIG_A=y\n"])
        #expect(a == KernelBuilder.configHash(texts: ["CONFIG_A=y\n"]))
        #expect(a != KernelBuilder.configHash(texts: ["CONFIG_A=y\n", "CONFIG_KASAN=y\n"]))
        #expect(a != KernelBuilder.configHash(texts: ["CONFIG_A=m\n"]))
    }

    @Test("error lines are picked out of a make log")
    func errorLines() {
        let log = "  CC mm/a.o\nmm/gup.c:12:3: error: expected ';'\nmake[2]: *** [mm/gup.o] Error 1\n  CC mm/b.o\n"
        #expect(KernelBuilder.errorLines(log) == "mm/gup.c:12:3: error: expected ';'\nmake[2]: *** [mm/gup.o] Error 1")
    }
}
