import Foundation
import Testing

@testable import KTAP

#if canImport(FoundationXML)
import FoundationXML
#endif

@Suite("Renderers")
struct RendererTests {
    static func baseline() throws -> TestRun {
        var run = KTAPParser.parse(try Fixture.text("skips_and_failure.ktap"))
        run.metadata[RunMetadata.Keys.qemuCommandLine] = "qemu-system-x86_64 -machine q35 -device nvme,cmb_size_mb=64"
        return run
    }

    @Test(arguments: [
        ("skips_and_failure.ktap", ReportFormat.table, "skips_and_failure.table.txt"),
        ("skips_and_failure.ktap", .json, "skips_and_failure.json"),
        ("skips_and_failure.ktap", .junit, "skips_and_failure.junit.xml"),
        ("skips_and_failure.ktap", .markdown, "skips_and_failure.md"),
        ("panic_cutoff.log", .table, "panic_cutoff.table.txt"),
        ("panic_cutoff.log", .junit, "panic_cutoff.junit.xml"),
        ("nested.ktap", .table, "nested.table.txt"),
        ("nested.ktap", .ktap, "nested.ktap"),
        ("console_noise.log", .ktap, "console_noise.ktap"),
    ])
    func golden(fixture: String, format: ReportFormat, golden: String) throws {
        let run = KTAPParser.parse(try Fixture.text(fixture))
        try Fixture.expectGolden(format.render(run), golden)
    }

    @Test func tableEndsWithTheVerdictLine() throws {
        let lines = TableRenderer.render(try Self.baseline()).split(separator: "\n")
        #expect(lines.first?.hasPrefix("check") == true)
        #expect(lines.first?.contains("errno/diagnostic") == true)
        #expect(lines.last == "verdict: FAIL (3 passed, 2 failed, 2 skipped)")
        let pin = try #require(lines.first { $0.hasPrefix("pin.longterm_p2pdma.fast") })
        #expect(pin.contains("FAIL"))
        #expect(pin.contains("EINVAL"))
        #expect(pin.hasSuffix("4.2 ms") || pin.hasSuffix("4.3 ms"))
    }

    @Test func jsonRoundTripsAndCarriesTheVerdict() throws {
        let run = try Self.baseline()
        let text = JSONRenderer.render(run)
        let back = try JSONRenderer.decode(Data(text.utf8))
        #expect(back.tests == run.tests)
        #expect(back.verdict == .fail)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(object["verdict"] as? String == "FAIL")
        #expect((object["counts"] as? [String: Int])?["failed"] == 2)
        #expect((object["metadata"] as? [String: String])?["kernel"] == "6.12.22-p2plab-baseline")
        let keys = text.split(separator: "\n").filter { $0.hasPrefix("  \"") }.map { $0.split(separator: "\"")[1] }
        #expect(keys == keys.sorted())
    }

    @Test func jsonIsStableAcrossDecodeAndEncode() throws {
        let run = try Self.baseline()
        let once = JSONRenderer.render(run)
        let twice = JSONRenderer.render(try JSONRenderer.decode(Data(once.utf8)))
        #expect(once == twice)
    }

    @Test func junitEscapesEverythingAndStaysWellFormed() throws {
        var run = TestRun(metadata: ["qemu_command_line": "qemu -append \"console=ttyS0 a<b & c>d\""])
        run.tests = [
            TestResult(number: 1, name: "quote\"amp&lt<", status: .fail, reason: "bad \u{1B}[31mcolour\u{7} & <tag>",
                       diagnostics: ["line with ]]> and 'apostrophe'"]),
            TestResult(number: 2, name: "crash", status: .crashed, reason: "Kernel panic - not syncing: x"),
            TestResult(number: 3, name: "later", status: .notRun, reason: "the run stopped during test 2"),
            TestResult(number: 4, name: "skip", status: .skip, reason: "run as root", duration: 0.5),
        ]
        let xml = JUnitRenderer.render(run)
        #expect(!xml.contains("\u{1B}"))
        #expect(!xml.contains("\u{7}"))
        #expect(xml.contains("name=\"quote&quot;amp&amp;lt&lt;\""))
        #expect(xml.contains("<error message=\"Kernel panic - not syncing: x\" type=\"crashed\">"))
        #expect(xml.contains("<skipped message=\"not run: the run stopped during test 2\"/>"))
        #expect(xml.contains("tests=\"4\" failures=\"1\" errors=\"1\" skipped=\"2\" time=\"0.500\""))
        #if canImport(FoundationXML)
        let document = try XMLDocument(data: Data(xml.utf8))
        let cases = try document.nodes(forXPath: "//testcase")
        #expect(cases.count == 4)
        let first = try #require(cases.first as? XMLElement)
        #expect(first.attribute(forName: "name")?.stringValue == "quote\"amp&lt<")
        let property = try #require(try document.nodes(forXPath: "//property").first as? XMLElement)
        #expect(property.attribute(forName: "value")?.stringValue == "qemu -append \"console=ttyS0 a<b & c>d\"")
        #endif
    }

    @Test func markdownEscapesTableCells() {
        let run = TestRun(tests: [
            TestResult(number: 1, name: "a|b", status: .fail, reason: "x | y\nz <w>"),
        ])
        let markdown = MarkdownRenderer.render(run)
        #expect(markdown.contains("| 1 | a\\|b | FAIL | x \\| y<br>z &lt;w&gt; | - |"))
        #expect(markdown.contains("## Failures"))
        #expect(markdown.hasPrefix("# p2plab: FAIL\n"))
    }

    @Test(arguments: [
        (0.0004, "0.4 ms"), (0.0125, "12.5 ms"), (1.234, "1.23 s"), (nil, "-"),
    ] as [(Double?, String)])
    func durations(seconds: Double?, text: String) {
        #expect(Format.duration(seconds) == text)
    }

    @Test(arguments: TestStatus.allCases)
    func everyStatusSurvivesKTAP(status: TestStatus) {
        let run = TestRun(plan: 1, tests: [TestResult(number: 1, name: "t", status: status, reason: "why")])
        let again = KTAPParser.parse(KTAPEmitter.render(run))
        #expect(again.tests.first?.status == status)
        #expect(again.tests.first?.reason == "why")
    }

    @Test func verdictPrecedence() {
        func run(_ statuses: [TestStatus], ending: RunEnding = .complete) -> Verdict {
            TestRun(tests: statuses.enumerated().map { TestResult(number: $0 + 1, name: "t\($0)", status: $1) },
                      ending: ending).verdict
        }
        #expect(run([.pass, .skip]) == .pass)
        // Nothing tested is no pass (kselftest's exit 4).
        #expect(run([.skip]) == .skipped)
        #expect(run([.skip, .notRun]) == .skipped)
        #expect(run([.pass, .fail]) == .fail)
        #expect(run([.fail, .crashed, .notRun]) == .crashed)
        #expect(run([.pass], ending: .panic) == .crashed)
        #expect(run([.crashed], ending: .timedOut) == .timeout)
        #expect(run([]) == .noResults)
    }
}

@Suite("The diagnostic column leads with what was observed")
struct ObservedFirstTests {
    func result(_ status: TestStatus, expected: String, observed: String, errno: String?) -> TestResult {
        var test = TestResult(number: 1, name: "regmr.p2pmem", status: status)
        test.expected = expected
        test.observed = observed
        test.errno = errno
        return test
    }

    @Test("as expected, or what was expected instead; the errno is not said twice")
    func phrases() {
        let pass = result(.pass, expected: "ibv_reg_mr p2pmem read-only: EREMOTEIO", observed: "ibv_reg_mr p2pmem read-only: EREMOTEIO", errno: "EREMOTEIO")
        #expect(pass.summary == "ibv_reg_mr p2pmem read-only: EREMOTEIO, as expected")
        let fail = result(.fail, expected: "ibv_reg_mr p2pmem read-only: EREMOTEIO", observed: "ibv_reg_mr p2pmem read-only: EFAULT", errno: "EFAULT")
        #expect(fail.summary == "ibv_reg_mr p2pmem read-only: EFAULT, expected EREMOTEIO")
        let other = result(.fail, expected: "pinned, 512 pages", observed: "EINVAL", errno: "EINVAL")
        #expect(other.summary == "EINVAL, expected pinned, 512 pages")
    }
}
