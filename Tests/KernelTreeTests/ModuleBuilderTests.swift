import Foundation
import LabSupport
import Testing
@testable import KernelTree

@Suite("Test module work directory")
struct ModuleBuilderTests {
    /// A fresh directory under the temporary directory, removed by the caller.
    static func scratch() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-module-\(UUID().uuidString)")
        try FileManager.default.ensureDirectory(url)
        return url
    }

    static func mtime(_ url: URL) throws -> Date {
        try #require(try FileManager.default.attributesOfItem(atPath: url.path)[.modificationDate] as? Date)
    }

    static func setMtime(_ url: URL, _ date: Date) throws {
        try FileManager.default.setAttributes([.modificationDate: date], ofItemAtPath: url.path)
    }

    @Test("a sync writes only the files whose bytes differ, so unchanged ones keep their mtime")
    func syncByContent() throws {
        let root = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: root) }
        let work = ModuleWorkDirectory(url: root.appendingPathComponent("work"))
        let files = ["p2plab_test.c": Data("int x;\n".utf8), "p2plab_uapi.h": Data("#define A 1\n".utf8), "Kbuild": Data("obj-m += p2plab_test.o\n".utf8)]
        #expect(try work.sync(files) == ["Kbuild", "p2plab_test.c", "p2plab_uapi.h"])
        let old = Date(timeIntervalSince1970: 1_000_000)
        for name in files.keys { try Self.setMtime(work.url.appendingPathComponent(name), old) }

        #expect(try work.sync(files) == [])
        for name in files.keys { #expect(try Self.mtime(work.url.appendingPathComponent(name)) == old) }

        var changed = files
        changed["p2plab_uapi.h"] = Data("#define A 2\n".utf8)
        #expect(try work.sync(changed) == ["p2plab_uapi.h"])
        #expect(try Self.mtime(work.url.appendingPathComponent("p2plab_uapi.h")) > old)
        #expect(try Self.mtime(work.url.appendingPathComponent("p2plab_test.c")) == old)
        #expect(FileManager.default.contents(atPath: work.url.appendingPathComponent("p2plab_uapi.h").path) == changed["p2plab_uapi.h"])
    }

    @Test("a file of the same size but other bytes is rewritten")
    func sameSizeOtherBytes() throws {
        let root = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: root) }
        let work = ModuleWorkDirectory(url: root)
        try work.sync(["a.h": Data("#define A 1\n".utf8)])
        #expect(try work.sync(["a.h": Data("#define A 2\n".utf8)]) == ["a.h"])
    }

    @Test("a source removed from the module goes from the work directory; kbuild's own outputs stay")
    func removedSource() throws {
        let root = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: root) }
        let work = ModuleWorkDirectory(url: root)
        try work.sync(["p2plab_test.c": Data("c".utf8), "old.h": Data("h".utf8)])
        // What make leaves beside the sources (p2plab_test.mod.c is a .c file too).
        for output in ["p2plab_test.mod.c", "p2plab_test.o", ".p2plab_test.o.cmd"] {
            try Data("out".utf8).write(to: root.appendingPathComponent(output))
        }
        #expect(try work.sync(["p2plab_test.c": Data("c".utf8)]) == [])
        #expect(!FileManager.default.fileExists(atPath: root.appendingPathComponent("old.h").path))
        for output in ["p2plab_test.c", "p2plab_test.mod.c", "p2plab_test.o", ".p2plab_test.o.cmd"] {
            #expect(FileManager.default.fileExists(atPath: root.appendingPathComponent(output).path), "\(output)")
        }
    }

    @Test("a build that did not finish (killed, timed out, failed) empties the directory before the next one")
    func unfinishedBuild() throws {
        let root = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: root) }
        let work = ModuleWorkDirectory(url: root.appendingPathComponent("work"))
        let files = ["p2plab_test.c": Data("c".utf8)]
        let object = work.url.appendingPathComponent("p2plab_test.o")

        try work.prepare(files: files, fresh: false)
        try Data("half an object".utf8).write(to: object)
        // No finished(): the next build must not trust that object.
        #expect(try work.prepare(files: files, fresh: false) == ["p2plab_test.c"])
        #expect(!FileManager.default.fileExists(atPath: object.path))

        try Data("an object".utf8).write(to: object)
        try work.finished()
        #expect(try work.prepare(files: files, fresh: false) == [])
        #expect(FileManager.default.fileExists(atPath: object.path))
        #expect(FileManager.default.fileExists(atPath: work.unfinished.path))

        try work.finished()
        #expect(try work.prepare(files: files, fresh: true) == ["p2plab_test.c"])
        #expect(!FileManager.default.fileExists(atPath: object.path))
    }

    @Test("one work directory per kernel build directory, named apart from the fingerprinted builds")
    func naming() {
        let a = ModuleBuilder.workDirectoryName(kernelBuildDir: "/c/obj/debian-6.12.117-1_deb12u1-0db159b8dc32")
        #expect(a.hasPrefix("work-"))
        #expect(a.dropFirst(5).count == 16)
        #expect(a == ModuleBuilder.workDirectoryName(kernelBuildDir: "/c/obj/debian-6.12.117-1_deb12u1-0db159b8dc32/"))
        #expect(a == ModuleBuilder.workDirectoryName(kernelBuildDir: "/c/obj/./debian-6.12.117-1_deb12u1-0db159b8dc32"))
        #expect(a != ModuleBuilder.workDirectoryName(kernelBuildDir: "/c/obj/debian-6.12.117-1_deb12u1-ad692860c2c8"))
        #expect(ModuleBuilder.lockName(kernelBuildDir: "/c/obj/debian-6.12.117-1_deb12u1-0db159b8dc32") == "module-" + a)
        let builder = ModuleBuilder(cache: CacheLayout(root: URL(fileURLWithPath: "/c")), runner: Runner())
        #expect(builder.workDirectory(kernelBuildDir: "/c/obj/x").path == "/c/builds/modules/" + ModuleBuilder.workDirectoryName(kernelBuildDir: "/c/obj/x"))
    }

    @Test("the work directory is reused only for object directories p2plab builds, not installed headers",
          arguments: [("/c/obj/debian-6.12.117-1_deb12u1-0db159b8dc32", true), ("/c/obj/tree-f26022a3ab-0db159b8dc32", true),
                      ("/lib/modules/6.12.117+/build", false), ("/c/objects/x", false), ("/c/obj", false)])
    func reuse(dir: String, reused: Bool) {
        let builder = ModuleBuilder(cache: CacheLayout(root: URL(fileURLWithPath: "/c")), runner: Runner())
        #expect(builder.reusesWorkDirectory(kernelBuildDir: dir) == reused)
    }

    @Test("only sources are synced", arguments: [("p2plab_test.c", true), ("p2plab_uapi.h", true), ("Kbuild", true), ("Makefile", true),
                                                  ("README", false), ("p2plab_test.ko", false), (".gitignore", false)])
    func sources(name: String, synced: Bool) {
        #expect(ModuleBuilder.isModuleSource(name) == synced)
    }
}

/// ModuleBuilder against a stand-in kernel build directory whose Makefile "builds" the module by
/// copying p2plab_test.c to p2plab_test.ko, counts its runs, fails on a source that says "broken"
/// and fails if two builds are ever in one work directory at once.
@Suite("Test module build (stand-in kernel build directory)")
struct ModuleBuildTests {
    static let makefile = """
        modules:
        \t@echo run >> $(CURDIR)/runs
        \t@mkdir $(M)/.busy || { echo "error: two builds in $(M) at once"; exit 1; }
        \t@sleep 0.3
        \t@if grep -q broken $(M)/p2plab_test.c; then echo "p2plab_test.c:1:1: error: broken"; rmdir $(M)/.busy; exit 1; fi
        \t@cp $(M)/p2plab_test.c $(M)/p2plab_test.ko
        \t@rmdir $(M)/.busy

        """

    struct Lab {
        let root: URL
        let kernel: URL
        let builder: ModuleBuilder

        init() throws {
            root = try ModuleBuilderTests.scratch()
            kernel = root.appendingPathComponent("obj/fake")
            try FileManager.default.ensureDirectory(kernel)
            try ModuleBuildTests.makefile.write(to: kernel.appendingPathComponent("Makefile"), atomically: true, encoding: .utf8)
            try Data().write(to: kernel.appendingPathComponent("Module.symvers"))
            builder = ModuleBuilder(cache: CacheLayout(root: root), runner: Runner())
        }

        func source(_ name: String, _ text: String) throws -> URL {
            let dir = root.appendingPathComponent("src-\(name)")
            try FileManager.default.ensureDirectory(dir)
            try text.write(to: dir.appendingPathComponent("p2plab_test.c"), atomically: true, encoding: .utf8)
            try "obj-m += p2plab_test.o\n".write(to: dir.appendingPathComponent("Kbuild"), atomically: true, encoding: .utf8)
            return dir
        }

        var runs: Int {
            ((try? String(contentsOf: kernel.appendingPathComponent("runs"), encoding: .utf8)) ?? "").split(separator: "\n").count
        }
    }

    @Test("the same sources against the same kernel come from the cache without make")
    func cached() async throws {
        let lab = try Lab()
        defer { try? FileManager.default.removeItem(at: lab.root) }
        let src = try lab.source("a", "int a;\n")
        let ko = try await lab.builder.build(moduleSource: src, kernelBuildDir: lab.kernel.path)
        #expect(try String(contentsOf: ko, encoding: .utf8) == "int a;\n")
        #expect(ko.deletingLastPathComponent() != lab.builder.workDirectory(kernelBuildDir: lab.kernel.path))
        #expect(FileManager.default.contents(atPath: ko.deletingLastPathComponent().appendingPathComponent("p2plab_test.c").path) == Data("int a;\n".utf8))
        #expect(try await lab.builder.build(moduleSource: src, kernelBuildDir: lab.kernel.path) == ko)
        #expect(lab.runs == 1)
    }

    @Test("a failed build says so with its log, is not cached, and the next good build works")
    func failed() async throws {
        let lab = try Lab()
        defer { try? FileManager.default.removeItem(at: lab.root) }
        let good = try lab.source("good", "int good;\n")
        _ = try await lab.builder.build(moduleSource: good, kernelBuildDir: lab.kernel.path)
        let broken = try lab.source("broken", "broken\n")
        // The work directory still holds the good build's .ko: it must not be taken for this one.
        let error = await #expect(throws: BuildError.self) {
            try await lab.builder.build(moduleSource: broken, kernelBuildDir: lab.kernel.path)
        }
        guard case .moduleBuildFailed(let log, let errors)? = error else { Issue.record("\(String(describing: error))"); return }
        #expect(errors.contains("p2plab_test.c:1:1: error: broken"))
        #expect(FileManager.default.fileExists(atPath: log))
        #expect(!FileManager.default.fileExists(atPath: URL(fileURLWithPath: log).deletingLastPathComponent().appendingPathComponent("p2plab_test.ko").path))
        await #expect(throws: BuildError.self) {
            try await lab.builder.build(moduleSource: broken, kernelBuildDir: lab.kernel.path)
        }
        #expect(lab.runs == 3)
        let fixed = try lab.source("fixed", "int fixed;\n")
        let ko = try await lab.builder.build(moduleSource: fixed, kernelBuildDir: lab.kernel.path)
        #expect(try String(contentsOf: ko, encoding: .utf8) == "int fixed;\n")
    }

    @Test("two builds against one kernel build directory never share the work directory at once")
    func concurrent() async throws {
        let lab = try Lab()
        defer { try? FileManager.default.removeItem(at: lab.root) }
        let sources = try (0..<3).map { try lab.source("\($0)", "int v\($0);\n") }
        let builder = lab.builder
        let kernel = lab.kernel.path
        let kos = try await withThrowingTaskGroup(of: URL.self) { group in
            for src in sources { group.addTask { try await builder.build(moduleSource: src, kernelBuildDir: kernel) } }
            return try await group.reduce(into: [URL]()) { $0.append($1) }
        }
        #expect(Set(try kos.map { try String(contentsOf: $0, encoding: .utf8) }) == ["int v0;\n", "int v1;\n", "int v2;\n"])
        #expect(lab.runs == 3)
    }
}

@Suite("Module.symvers ready, from the kernel build's output")
struct SymversWatchTests {
    final class Count: @unchecked Sendable {
        private let lock = NSLock()
        private var value = 0
        func bump() { lock.withLock { value += 1 } }
        var count: Int { lock.withLock { value } }
    }

    /// An incremental build's output around modpost, as Kbuild 6.12 prints it (quiet mode).
    static let log = """
          CC      mm/gup.o
          AR      mm/built-in.a
          AR      built-in.a
          AR      vmlinux.a
          LD      vmlinux.o
          OBJCOPY modules.builtin.modinfo
          GEN     modules.builtin
          MODPOST Module.symvers
          CC      .vmlinux.export.o
          UPD     include/generated/utsversion.h
          CC      init/version-timestamp.o
          KSYMS   .tmp_vmlinux0.kallsyms.S
          LD      .tmp_vmlinux1
          LD      vmlinux
          BUILD   arch/x86/boot/bzImage
        """.split(separator: "\n").map(String.init)

    @Test("fires once, at the first line after MODPOST Module.symvers, not before")
    func firesAfterModpost() throws {
        let fired = Count()
        let watch = SymversWatch { fired.bump() }
        let modpost = try #require(Self.log.firstIndex(where: SymversWatch.isModpost))
        for (index, line) in Self.log.enumerated() {
            watch.saw(line)
            #expect(fired.count == (index > modpost ? 1 : 0), "after line \(index): \(line)")
        }
    }

    @Test("a build that never reaches modpost (a compile error) never fires")
    func noModpost() {
        let fired = Count()
        let watch = SymversWatch { fired.bump() }
        for line in ["  CC      mm/gup.o", "mm/gup.c:12:1: error: expected ';'", "make[3]: *** [scripts/Makefile.build:229: mm/gup.o] Error 1"] {
            watch.saw(line)
        }
        #expect(fired.count == 0)
        #expect(!SymversWatch.isModpost("  MODPOST /root/p2plab/module/Module.symvers extra"))
    }
}
