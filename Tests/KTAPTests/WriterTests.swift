import Testing

@testable import KTAP

/// Collects writer output for assertions; the writer's sink must be `@Sendable`.
private func written(_ body: (KTAPWriter) -> Void) -> [String] {
    let sink = LineSink()
    body(KTAPWriter { sink.append($0) })
    return sink.text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
}

@Suite("KTAP writer")
struct WriterTests {
    @Test func headerPlanAndResults() {
        let lines = written { w in
            w.header()
            w.plan(3)
            w.result(1, "env.p2pmem_provider", .pass)
            w.result(2, "regmr.p2pmem", .fail)
            w.result(3, "umem.p2p_capable_device", .skip, reason: "needs a P2P-capable HCA")
        }
        #expect(lines == [
            "KTAP version 1", "1..3", "ok 1 env.p2pmem_provider", "not ok 2 regmr.p2pmem",
            "ok 3 umem.p2p_capable_device # SKIP needs a P2P-capable HCA",
        ])
    }

    @Test func skipWithoutReason() {
        #expect(written { $0.result(1, "x", .skip) } == ["ok 1 x # SKIP"])
    }

    @Test func multiLineDiagnosticBecomesOneLinePerLine() {
        #expect(written { $0.diagnostic("errno: EFAULT\nexpected: EREMOTEIO") } == ["# errno: EFAULT", "# expected: EREMOTEIO"])
    }

    @Test func nestedWriterIndentsTwoSpacesPerLevel() {
        let lines = written { w in
            let inner = w.nested()
            inner.header()
            inner.nested().plan(1)
            inner.result(1, "sub", .pass)
        }
        #expect(lines == ["  KTAP version 1", "    1..1", "  ok 1 sub"])
    }

    @Test(arguments: [
        (true, nil, nil, "ok 4 name"),
        (false, "TIMEOUT", "30 seconds", "not ok 4 name # TIMEOUT 30 seconds"),
        (false, "ERROR", "CRASHED: Kernel panic", "not ok 4 name # ERROR CRASHED: Kernel panic"),
        (true, nil, "rcode=0", "ok 4 name # rcode=0"),
    ] as [(Bool, String?, String?, String)])
    func genericResultLine(ok: Bool, directive: String?, text: String?, expected: String) {
        #expect(written { $0.result(4, "name", ok: ok, directive: directive, text: text) } == [expected])
    }

    @Test func genericResultKeepsNameAndTextOnOneLine() {
        let lines = written { $0.result(1, "bad#name\nsplit", ok: false, directive: nil, text: "two\nlines") }
        #expect(lines == ["not ok 1 bad_name split # two lines"])
        // The sanitised line still parses back to one test.
        let run = KTAPParser.parse("KTAP version 1\n1..1\n" + lines[0])
        #expect(run.tests.map(\.name) == ["bad_name split"])
    }
}
