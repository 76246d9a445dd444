import ArgumentParser
import Foundation
import KernelTree
import LabCommandLine
import LabPipeline
import LabSupport
import Machine
import Testing
@testable import P2PLab

@Suite("One exit policy: every error's exit code, in one place")
struct ExitPolicyTests {
    @Test("a bad command line exits 2 (the README's usage error), not ArgumentParser's 64",
          arguments: [["test", "--frobnicate"], ["test", "--upto"], ["build", "--upto", "-1"], ["build", "--without", "x"],
                      ["test", "--compare", "--upto", "2"], ["boot", "--timeout", "0"], ["test", "--timeout", "-5"],
                      ["nonsense"], ["bisect"], ["test", "--format", "yaml"]])
    func usage(_ arguments: [String]) {
        let status: Int32
        do {
            _ = try P2PLabCommand.parseAsRoot(arguments)
            Issue.record("\(arguments) parsed")
            return
        } catch {
            status = ExitPolicy.outcome(of: error, command: P2PLabCommand.self).status
        }
        #expect(status == LabExit.usage.rawValue)
    }

    @Test("a LabError exits its own code, with its message")
    func labErrors() {
        let cases: [(any LabError, LabExit)] = [
            (SeriesError.missing("/nope"), .badSeries),
            (BuildError.dirtyTree("/src"), .dirtyTree),
            (BuildError.buildFailed(log: "/l", errors: ""), .buildFailed),
            (MachineError.qemuNotFound(executable: "qemu"), .missingDependency),
            (RunError.notFound(executable: "make", package: "make"), .missingDependency),
            (RunError.nonZeroExit(command: "git am", status: "exit 128", stderrTail: ""), .couldNotTest),
            (ReportError.emptyInput("/dev/null"), .usage),
        ]
        for (error, code) in cases {
            let (message, status) = ExitPolicy.outcome(of: error, command: P2PLabCommand.self)
            #expect(status == code.rawValue, "\(error)")
            #expect(message == "p2plab: \(error.description)")
        }
    }

    @Test("a failing child is a child failing (125), never a failed check (1)")
    func childFailure() {
        let error = RunError.nonZeroExit(command: "make -C /src", status: "exit 2", stderrTail: "boom")
        #expect(error.exitCode != .failed)
        #expect(ExitPolicy.outcome(of: error, command: P2PLabCommand.self).status == LabExit.couldNotTest.rawValue)
    }

    @Test("an error p2plab does not know is 125, not 1: no verdict on the kernel")
    func unknown() {
        struct Strange: Error {}
        #expect(ExitPolicy.outcome(of: Strange(), command: P2PLabCommand.self).status == LabExit.couldNotTest.rawValue)
        #expect(ExitPolicy.outcome(of: ExitCode(7), command: P2PLabCommand.self).status == 7)
        #expect(ExitPolicy.outcome(of: ExitCode(7), command: P2PLabCommand.self).message == nil)
    }

    @Test("git bisect run never reads a cause shared by every commit as bad: it aborts (128)")
    func bisectStepExit() {
        var result = VariantResult(label: "x", selection: .full, runDirectory: URL(fileURLWithPath: "/tmp"))
        result.problem = "no series"
        result.problemExit = .badSeries
        #expect(StepVerdict.gitBisectRunExit(.skip, result) == 128)
        result.problemExit = .buildFailed
        #expect(StepVerdict.gitBisectRunExit(.skip, result) == 125)
        #expect(StepVerdict.gitBisectRunExit(.bad, result) == 1)
        #expect(StepVerdict.gitBisectRunExit(.good, result) == 0)
    }

    @Test("a variant that could not be tested exits its cause's code")
    func variantExit() {
        var result = VariantResult(label: "x", selection: .full, runDirectory: URL(fileURLWithPath: "/tmp"))
        result.problem = "patch 0003 does not apply"
        result.problemExit = .patchDoesNotApply
        #expect(result.exitCode == 13)
        #expect(result.couldNotTest)
        result.problemExit = nil
        #expect(result.exitCode == 125)
    }

    /// The README's table, `| code | meaning |` rows, against `LabExit`.
    @Test("the README's exit-code table lists exactly LabExit's codes")
    func readmeTable() throws {
        let readme = try String(contentsOf: repoRoot.appendingPathComponent("README.md"), encoding: .utf8)
        guard let start = readme.range(of: "### Exit codes") else {
            Issue.record("README.md has no \"### Exit codes\" section")
            return
        }
        var documented: Set<Int32> = []
        for line in readme[start.upperBound...].split(separator: "\n") {
            if line.hasPrefix("#") { break }
            guard line.hasPrefix("| "), let cell = line.split(separator: "|").first?.trimmingCharacters(in: .whitespaces) else { continue }
            let bounds = cell.split(separator: "–").compactMap { Int32($0) }
            if bounds.count == 2 { documented.formUnion((bounds[0]...bounds[1]).map { $0 }) }
            if bounds.count == 1 { documented.insert(bounds[0]) }
        }
        #expect(documented == Set(LabExit.allCases.map(\.rawValue)))
    }
}
