import Testing

@testable import KTAP
@testable import KernelConsole

/// Lines of the suite's that a kernel message cut in two on a serial console.
@Suite("Console lines: a line a kernel message cut is read whole")
struct ConsoleLinesTests {
    @Test("the kernel message takes the cut line's place, the suite's line is whole at its continuation's")
    func oneCut() {
        let console = "ok 6 a\r\nok 7 pin.longter[   73.814383] p2plab: check 8 pin.fast_path begins\r\nm_p2pdma.slow\r\n[   73.816279] p2plab: check 8 pin.fast_path pid 353\r\n"
        #expect(ConsoleLines.split(console) == [
            "ok 6 a", "[   73.814383] p2plab: check 8 pin.fast_path begins", "ok 7 pin.longterm_p2pdma.slow",
            "[   73.816279] p2plab: check 8 pin.fast_path pid 353", "",
        ])
    }

    @Test("kernel lines before the continuation keep their places; a second cut of the same line is joined too")
    func kernelLinesBetweenAndTwoCuts() {
        let console = """
            # pin p2pmem[    1.000001] one
            [    1.000002] two
            [    1.000003][    T1] three
             LONGTERM[    1.000004] four
            |P2PDMA
            # next
            """
        #expect(ConsoleLines.split(console) == [
            "[    1.000001] one", "[    1.000002] two", "[    1.000003][    T1] three", "[    1.000004] four",
            "# pin p2pmem LONGTERM|P2PDMA", "# next",
        ])
    }

    @Test("a cut whose continuation is only the line break, and a capture that ends inside a cut line")
    func emptyContinuationAndTruncation() {
        #expect(ConsoleLines.split("ok 1 x[    2.500000] late\n\n# y\n") == ["[    2.500000] late", "ok 1 x", "# y", ""])
        #expect(ConsoleLines.split("not ok 2 y[    2.500000] cut off") == ["[    2.500000] cut off", "not ok 2 y"])
    }

    @Test("brackets that are no printk timestamp leave a line alone", arguments: [
        "# pinned [16 pages] at [0.5]", "# array[1.123456]x", "ok 3 z # SKIP [ 12.34] short", "[    3.000000] a [    3.000001] b",
        "#PF: supervisor read access in kernel mode",
    ])
    func noCut(line: String) {
        #expect(ConsoleLines.split(line) == [line])
    }

    @Test("a WARNING that came inside a diagnostic is found, at its own line, by the scanner")
    func warningInsideALine() {
        let console = "KTAP version 1\n1..1\n[    5.000000] p2plab: check 1 x begins\n# pin p2pmem LONG[    5.100000] WARNING: CPU: 1 PID: 90 at mm/gup.c:2633 is_valid_gup_args+0x8c/0xb0\nTERM: EINVAL\nok 1 x\n"
        let findings = ConsoleScanner.scan(console)
        #expect(findings.map(\.kind) == [.warning])
        #expect(findings.first?.line == 4)
        let run = KTAPParser.parse(console)
        #expect(run.tests.first?.diagnostics == ["pin p2pmem LONGTERM: EINVAL"], "\(run.tests)")
    }

    /// Recorded: `p2plab check` in a guest whose stdout is the serial console, the capture `p2plab
    /// parse` reads. The next check's begin marker cut `ok 7 pin.longterm_p2pdma.slow` in two.
    @Test("the recorded capture with a cut result line parses into all 31 results, in order, without an issue")
    func recordedCapture() throws {
        let text = try Fixture.text("rehearsal_cut_line.log")
        #expect(text.contains("ok 7 pin.longter[   73.814383] p2plab: check 8 pin.fast_path begins"))
        let run = KTAPParser.parse(text)
        #expect(run.parseErrors.isEmpty, "\(run.parseErrors)")
        #expect(run.plan == 31)
        #expect(run.tests.map(\.number) == Array(1...31))
        #expect(run.tests[6].name == "pin.longterm_p2pdma.slow")
        #expect(run.tests[6].status == .pass)
        #expect(run.tests[6].expected == "pin p2pmem LONGTERM|P2PDMA: succeeds")
        #expect(run.tests.allSatisfy { $0.status == .pass || $0.status == .skip })
        // The markers stay whole, so each check's start is still found.
        let starts = CheckMarkers.starts(in: text).filter { (7...8).contains($0.number) }
        #expect(starts.map(\.name) == ["pin.longterm_p2pdma.slow", "pin.fast_path"])
        #expect(starts.map(\.pid) == [352, 353])
    }
}
