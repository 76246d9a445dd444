import Testing

@testable import KTAP
@testable import KernelConsole

@Suite("Console scanner over recorded logs")
struct ConsoleScannerTests {
    @Test(arguments: [
        ("boot_clean.log", [ConsoleFindingKind]()),
        ("boot_warn.log", [.warning]),
        ("boot_oops.log", [.bug, .oops]),
        ("panic_cutoff.log", [.bug, .oops, .panic]),
        ("truncated.log", []),
        ("console_noise.log", []),
    ])
    func findings(fixture: String, kinds: [ConsoleFindingKind]) throws {
        #expect(ConsoleScanner.scan(try Fixture.text(fixture)).map(\.kind) == kinds)
    }

    @Test func warningKeepsItsLineAndText() throws {
        let findings = ConsoleScanner.scan(try Fixture.text("boot_warn.log"))
        let warning = try #require(findings.first)
        #expect(warning.line == 5)
        #expect(warning.text.hasSuffix("WARNING: CPU: 0 PID: 1 at mm/gup.c:2633 is_valid_gup_args+0x8c/0xb0"))
    }

    @Test(arguments: [
        ("[    2.712345] BUG: kernel NULL pointer dereference, address: 0000000000000000", ConsoleFindingKind.bug),
        ("[    2.712450] Oops: 0000 [#1] PREEMPT SMP NOPTI", .oops),
        ("[    9.100000] Kernel panic - not syncing: sysrq triggered crash", .panic),
        ("[    3.3] WARNING: CPU: 0 PID: 1 at mm/gup.c:2633 is_valid_gup_args+0x8c/0xb0\r", .warning),
        ("[    4.0] BUG: KASAN: slab-use-after-free in pci_p2pdma_release+0x2a/0x90", .kasan),
        ("[   30.0] watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [p2plab:231]", .softLockup),
        ("[  240.0] INFO: task p2plab:231 blocked for more than 120 seconds.", .hungTask),
        ("[    5.0] Oops: general protection fault, probably for non-canonical address 0xdead000000000100: 0000 [#1] SMP NOPTI", .oops),
        // What the sanitizer kernels print (lib/ubsan.c, mm/kfence/report.c, kernel/locking/lockdep.c,
        // kernel/sched/core.c __might_resched, kernel/rcu/tree_stall.h).
        ("[    6.0] UBSAN: array-index-out-of-bounds in drivers/pci/p2pdma.c:120:9", .ubsan),
        ("[    6.1] BUG: KFENCE: use-after-free read in p2pdma_page_free+0x1c/0x60", .kfence),
        ("[    6.2] WARNING: possible circular locking dependency detected", .lockdep),
        ("[    6.3] WARNING: possible recursive locking detected", .lockdep),
        ("[    6.4] WARNING: inconsistent lock state", .lockdep),
        ("[    6.5] BUG: sleeping function called from invalid context at mm/gup.c:1234", .sleepInAtomic),
        ("[   60.0] rcu: INFO: rcu_sched self-detected stall on CPU", .rcuStall),
        ("[   60.1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", .rcuStall),
    ])
    func classifiesSplatLines(line: String, kind: ConsoleFindingKind) {
        #expect(ConsoleScanner.classify(line) == kind)
    }

    @Test(arguments: [
        "[    2.712700] ---[ end trace 0000000000000000 ]---",
        "[    2.713100] ---[ end Kernel panic - not syncing: Fatal exception ]---",
        "# splat: WARNING: CPU: 0 PID: 214 at mm/gup.c:2633 is_valid_gup_args+0x8c/0xb0",
        "[    1.0] p2pmem 0000:01:00.0: registered 64 MiB of peer-to-peer memory",
    ])
    func harmlessLines(line: String) {
        #expect(ConsoleScanner.classify(line) == nil)
    }
}
