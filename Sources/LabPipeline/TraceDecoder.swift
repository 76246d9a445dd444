import Foundation
import KernelConsole
import KernelTree
import LabSupport

/// Turns a kernel report's addresses into file:line: the tree's `scripts/decode_stacktrace.sh`, or
/// a fake in unit tests.
public protocol TraceDecoder: Sendable {
    /// The report decoded, line for line; on failure the report as it was and why.
    func decode(_ report: [String]) async -> DecodedReport
}

/// What a decoder made of one report.
public struct DecodedReport: Sendable, Equatable {
    public var lines: [String]
    /// Why the report is not decoded (the decoder is missing, failed or timed out), if so.
    public var problem: String?

    public init(lines: [String], problem: String? = nil) {
        self.lines = lines
        self.problem = problem
    }

    /// Whether any frame has a file and line.
    public var hasLineInfo: Bool { StackTrace.hasLineInfo(StackTrace.frames(lines)) }
}

/// `scripts/decode_stacktrace.sh VMLINUX SOURCE MODULES` of the tree the kernel was built from,
/// against the build's vmlinux and the test module's directory (for its frames), bounded by
/// `LabLimits.decode`.
public struct DecodeStacktrace: TraceDecoder {
    public var script: URL
    public var vmlinux: URL
    public var source: URL
    public var modules: URL?
    public var runner: Runner
    public var timeout: Double

    public init(script: URL, vmlinux: URL, source: URL, modules: URL?, runner: Runner = Runner(), timeout: Double = LabLimits.standard.decode) {
        self.script = script
        self.vmlinux = vmlinux
        self.source = source
        self.modules = modules
        self.runner = runner
        self.timeout = timeout
    }

    /// The decoder for a built kernel: its tree's script, its object directory's vmlinux.
    public init(kernel: BuiltKernel, runner: Runner = Runner(), timeout: Double = LabLimits.standard.decode) {
        let manifest = kernel.manifest
        self.init(
            script: URL(fileURLWithPath: manifest.sourceDir).appendingPathComponent("scripts/decode_stacktrace.sh"),
            vmlinux: URL(fileURLWithPath: manifest.objectDir).appendingPathComponent("vmlinux"),
            source: URL(fileURLWithPath: manifest.sourceDir), modules: kernel.module?.deletingLastPathComponent(),
            runner: runner, timeout: timeout)
    }

    /// vmlinux and the modules' .ko files: where addr2line would look for line tables.
    var objectsForLines: [URL] {
        let modules = modules.flatMap { try? FileManager.default.contentsOfDirectory(at: $0, includingPropertiesForKeys: nil) } ?? []
        return [vmlinux] + modules.filter { $0.pathExtension == "ko" }
    }

    public func decode(_ report: [String]) async -> DecodedReport {
        let fm = FileManager.default
        for (what, url) in [("decode_stacktrace.sh", script), ("vmlinux", vmlinux)] where !fm.fileExists(atPath: url.path) {
            return DecodedReport(lines: report, problem: "not decoded: no \(what) at \(url.path)")
        }
        // Without line tables in vmlinux or the modules (the lean kernel has no DEBUG_INFO),
        // decode_stacktrace.sh prints the report back unchanged after an addr2line per frame, which
        // took 0.8-1.3 s of each failing bisect step measured here.
        if objectsForLines.allSatisfy({ ELFSections.hasLineTables($0) == false }) { return DecodedReport(lines: report) }
        if which("addr2line") == nil { return DecodedReport(lines: report, problem: "not decoded: addr2line is missing (apt-get install binutils)") }
        // `Code:` lines would be disassembled (objdump, a temporary file each): not what a trace needs.
        let input = report.filter { !$0.contains("Code: ") }.joined(separator: "\n") + "\n"
        var arguments = ["bash", script.path, vmlinux.path, source.path]
        if let modules { arguments.append(modules.path) }
        do {
            let result = try await runner.capture(Command(arguments), timeout: timeout, input: input)
            guard result.succeeded else {
                return DecodedReport(lines: report, problem: "not decoded: decode_stacktrace.sh \(result.statusDescription): \(result.standardError.lastLines(2))")
            }
            let lines = result.standardOutput.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            return DecodedReport(lines: lines.last == "" ? Array(lines.dropLast()) : lines)
        } catch {
            return DecodedReport(lines: report, problem: "not decoded within \(Int(timeout)) s: \(error)")
        }
    }
}
