import Foundation
import LabPipeline
import Testing

/// A minimal ELF64 LSB file: a null section, the named ones (empty) and `.shstrtab`.
private func elf(sections: [String]) -> Data {
    let names = [""] + sections + [".shstrtab"]
    var strings: [UInt8] = []
    var offsets: [Int] = []
    for name in names {
        offsets.append(strings.count)
        strings += Array(name.utf8) + [0]
    }
    let stringsOffset = 64
    let tableOffset = stringsOffset + strings.count
    func le(_ value: Int, _ width: Int) -> [UInt8] { (0..<width).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
    var header: [UInt8] = [0x7F, 0x45, 0x4C, 0x46, 2, 1, 1] + Array(repeating: 0, count: 9)
    header += le(2, 2) + le(62, 2) + le(1, 4) + le(0, 8) + le(0, 8) + le(tableOffset, 8) + le(0, 4)
    header += le(64, 2) + le(0, 2) + le(0, 2) + le(64, 2) + le(names.count, 2) + le(names.count - 1, 2)
    var table: [UInt8] = []
    for (index, offset) in offsets.enumerated() {
        let isStrings = index == names.count - 1
        var entry = le(offset, 4) + le(isStrings ? 3 : 1, 4) + le(0, 8) + le(0, 8)
        entry += le(isStrings ? stringsOffset : 0, 8) + le(isStrings ? strings.count : 0, 8)
        entry += le(0, 4) + le(0, 4) + le(1, 8) + le(0, 8)
        table += entry
    }
    return Data(header + strings + table)
}

@Suite("Kernel reports are decoded only where line tables can give file:line")
struct TraceDecoderTests {
    let report = [
        "WARNING: CPU: 1 PID: 62 at mm/gup.c:2633 is_valid_gup_args+0x6e/0x7a",
        "Call Trace:",
        " <TASK>",
        " ? __warn+0x7d/0x120",
        " is_valid_gup_args+0x6e/0x7a",
        " </TASK>",
    ]

    /// A scratch tree: `vmlinux` with `sections`, a modules directory with `moduleSections` (or
    /// none), and a decode_stacktrace.sh that reads its input, prints a marker line and exits 7,
    /// so a run shows.
    func tree(vmlinux sections: [String], module moduleSections: [String]?) throws -> (DecodeStacktrace, URL) {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-decode-\(UUID().uuidString.prefix(8))")
        let modules = root.appendingPathComponent("modules")
        try FileManager.default.createDirectory(at: modules, withIntermediateDirectories: true)
        try elf(sections: sections).write(to: root.appendingPathComponent("vmlinux"))
        if let moduleSections { try elf(sections: moduleSections).write(to: modules.appendingPathComponent("p2plab_test.ko")) }
        let script = root.appendingPathComponent("decode_stacktrace.sh")
        // It reads the report first, as the real script does: one that exits before reading would
        // leave the runner writing into a closed pipe (SIGPIPE for the test process).
        try "cat > /dev/null; echo the script ran >&2; exit 7\n".write(to: script, atomically: true, encoding: .utf8)
        let decoder = DecodeStacktrace(
            script: script, vmlinux: root.appendingPathComponent("vmlinux"), source: root, modules: modules, timeout: 20)
        return (decoder, root)
    }

    @Test("the section names come from the section header table")
    func sectionNames() throws {
        let (_, root) = try tree(vmlinux: [".text", ".debug_info", ".debug_line"], module: nil)
        defer { try? FileManager.default.removeItem(at: root) }
        #expect(ELFSections.names(in: root.appendingPathComponent("vmlinux")) == ["", ".text", ".debug_info", ".debug_line", ".shstrtab"])
        #expect(ELFSections.hasLineTables(root.appendingPathComponent("vmlinux")) == true)
        // Not an ELF file: cannot be told, so the decoder runs as before.
        #expect(ELFSections.hasLineTables(root.appendingPathComponent("decode_stacktrace.sh")) == nil)
        #expect(ELFSections.hasLineTables(root.appendingPathComponent("missing")) == nil)
    }

    @Test("a real ELF executable built with -g has line tables")
    func realExecutable() throws {
        let cc = ["/usr/bin/cc", "/usr/bin/gcc"].first { FileManager.default.isExecutableFile(atPath: $0) }
        try #require(cc != nil, "no C compiler")
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-elf-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root) }
        try "int main(void) { return 0; }\n".write(to: root.appendingPathComponent("t.c"), atomically: true, encoding: .utf8)
        for (flag, expected) in [("-g", true), ("-g0", false)] {
            let out = root.appendingPathComponent("t\(flag)")
            let compiled = try runCollecting(URL(fileURLWithPath: cc!), [flag, "-o", out.path, root.appendingPathComponent("t.c").path], stderrToo: true)
            try #require(compiled.status == 0, "\(compiled.output)")
            // -g0 still links crt objects; Debian ships them without line tables.
            #expect(ELFSections.hasLineTables(out) == expected, "\(flag)")
        }
    }

    @Test("no line tables in vmlinux or the module: the report comes back as it was, the script not run, no problem")
    func skippedWithoutLineTables() async throws {
        let (decoder, root) = try tree(vmlinux: [".text", ".data"], module: [".text", ".modinfo"])
        defer { try? FileManager.default.removeItem(at: root) }
        let decoded = await decoder.decode(report)
        #expect(decoded == DecodedReport(lines: report))
        #expect(!decoded.hasLineInfo)
    }

    @Test("line tables in vmlinux, or only in the module: the script runs (its exit 7 is the problem)")
    func runWithLineTables() async throws {
        for (kernel, module) in [([".text", ".debug_line"], [".text"]), ([".text"], [".text", ".debug_line"])] {
            let (decoder, root) = try tree(vmlinux: kernel, module: module)
            defer { try? FileManager.default.removeItem(at: root) }
            let decoded = await decoder.decode(report)
            #expect(decoded.lines == report)
            #expect(decoded.problem?.contains("decode_stacktrace.sh") == true, "\(decoded.problem ?? "no problem")")
            #expect(decoded.problem?.contains("the script ran") == true, "\(decoded.problem ?? "no problem")")
        }
    }

    @Test("a vmlinux that is not ELF (cannot be told): the script runs")
    func runWhenUnknown() async throws {
        let (decoder, root) = try tree(vmlinux: [".text"], module: nil)
        defer { try? FileManager.default.removeItem(at: root) }
        try "not an ELF file".write(to: root.appendingPathComponent("vmlinux"), atomically: true, encoding: .utf8)
        let decoded = await decoder.decode(report)
        #expect(decoded.problem?.contains("the script ran") == true, "\(decoded.problem ?? "no problem")")
    }
}
