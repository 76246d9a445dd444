import Foundation
import LabSupport
import Testing
@testable import KernelTree

/// Integration tests run the real thing (apt-get download, git am, a kernel build); `scripts/test`
/// turns them on. The build is cached under ~/.cache/p2plab, so a warm machine takes seconds.
let integrationEnabled = ProcessInfo.processInfo.environment["P2PLAB_INTEGRATION"] == "1"

@Suite("Integration: Debian 6.12 + the series, built", .serialized,
       .enabled(if: integrationEnabled, "set P2PLAB_INTEGRATION=1 (scripts/test does) to download, patch and build a kernel"))
struct BuildIntegrationTests {
    let cache = CacheLayout()
    let runner = Runner()

    func file(_ source: PreparedSource, _ path: String) throws -> String {
        try String(contentsOf: source.workdir.appendingPathComponent(path), encoding: .utf8)
    }

    /// The body of a C function, from its signature line to the closing brace at column 0.
    func function(_ name: String, in text: String) -> String {
        let lines = text.components(separatedBy: "\n")
        guard let start = lines.firstIndex(where: { $0.contains(name + "(") && !$0.hasSuffix(";") && !$0.hasPrefix("\t") }) else { return "" }
        let end = lines[start...].firstIndex(of: "}") ?? lines.count - 1
        return lines[start...end].joined(separator: "\n")
    }

    @Test("the series applies as four commits by Martin Oliveira and does what it says", .timeLimit(.minutes(20)))
    func applied() async throws {
        let series = try PatchSeries.load(from: repoRoot.appendingPathComponent("kernel/series/v2"))
        let manager = SourceManager(cache: cache, runner: runner, progress: { print($0) })
        let source = try await manager.prepare(.defaultDebian)
        let variant = try await manager.checkout(source, series: series, selection: .full)
        let authors = try await Git(directory: source.workdir, runner: runner).run(["log", "--format=%an", "\(source.baseCommit)..\(variant.head)"])
        #expect(authors.split(separator: "\n") == Array(repeating: "Martin Oliveira", count: 4))
        #expect(variant.patches.allSatisfy { $0.state == .applied && $0.commit != nil })
        #expect(!(try file(source, "fs/kernfs/file.c")).contains("kernfs_vma_page_mkwrite"))
        #expect(try file(source, "fs/kernfs/file.c").contains("if (vma->vm_ops && vma->vm_ops->page_mkwrite)"))
        let gup = try file(source, "mm/gup.c")
        #expect(!function("is_valid_gup_args", in: gup).contains("FOLL_PCI_P2PDMA"))
        #expect(function("gup_fast_folio_allowed", in: gup).contains("folio_is_zone_device(folio)"))
        #expect(function("ib_umem_get", in: try file(source, "drivers/infiniband/core/umem.c")).contains("FOLL_PCI_P2PDMA"))

        let baseline = try await manager.checkout(source, series: series, selection: .baseline)
        #expect(baseline.head == source.baseCommit)
        #expect(try file(source, "fs/kernfs/file.c").contains("kernfs_vma_page_mkwrite"))
        #expect(function("is_valid_gup_args", in: try file(source, "mm/gup.c")).contains("FOLL_PCI_P2PDMA"))
    }

    @Test("the patched kernel builds (cached), and every fragment option survived", .timeLimit(.minutes(60)))
    func built() async throws {
        let series = try PatchSeries.load(from: repoRoot.appendingPathComponent("kernel/series/v2"))
        let manager = SourceManager(cache: cache, runner: runner, progress: { print($0) })
        let source = try await manager.prepare(.defaultDebian)
        let variant = try await manager.checkout(source, series: series, selection: .full)
        let fragment = repoRoot.appendingPathComponent("kernel/config/p2plab.config")
        let manifest = try await KernelBuilder(cache: cache, runner: runner, progress: { print($0) }).build(variant, fragmentFiles: [fragment])
        let bzImage = try Data(contentsOf: URL(fileURLWithPath: manifest.bzImage))
        #expect(bzImage.count > 1_000_000)
        // A bzImage carries the "HdrS" boot protocol magic at offset 0x202.
        #expect(bzImage.count > 0x206 && bzImage[0x202..<0x206] == Data("HdrS".utf8))
        let config = try String(contentsOfFile: manifest.config, encoding: .utf8)
        #expect(try ConfigFragment.load(fragment).dropped(in: config).isEmpty)
        #expect(manifest.kernelRelease.hasPrefix("6.12"))
        #expect(manifest.patches.count == 4)
        // The second call is a cache hit.
        let again = try await KernelBuilder(cache: cache, runner: runner, progress: { _ in }).build(variant, fragmentFiles: [fragment])
        #expect(again.cacheHit)
        #expect(again.bzImage == manifest.bzImage)
    }

    @Test("importing seed 001 against the real 6.12 source repairs patches 1, 3 and 4", .timeLimit(.minutes(20)))
    func importSeed() async throws {
        let manager = SourceManager(cache: cache, runner: runner, progress: { _ in })
        let source = try await manager.prepare(.defaultDebian)
        var files: [String: [String]] = [:]
        for path in ["fs/kernfs/file.c", "mm/gup.c", "drivers/infiniband/core/umem.c"] {
            let text = try await Git(directory: source.workdir, runner: runner).run(["show", "\(source.baseCommit):\(path)"])
            files[path] = text.components(separatedBy: "\n")
        }
        let snapshot = files
        let result = try MangledImport(readFile: { snapshot[$0] }).run(text: try String(contentsOf: try fixture("seed-001-series-v2.txt"), encoding: .utf8))
        #expect(result.patches.map(\.index) == [1, 3, 4])
        // The repaired patches apply, in order, to the pristine files (git apply outside a repository).
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-import-\(UUID().uuidString)")
        for (path, lines) in snapshot {
            let url = tmp.appendingPathComponent("tree/\(path)")
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try lines.joined(separator: "\n").write(to: url, atomically: true, encoding: .utf8)
        }
        for patch in result.patches {
            let url = tmp.appendingPathComponent(patch.name)
            try patch.text.write(to: url, atomically: true, encoding: .utf8)
            let applied = try await runner.capture(Command(["git", "apply", url.path], in: tmp.appendingPathComponent("tree").path))
            #expect(applied.succeeded, "\(patch.name): \(applied.standardError)")
        }
        let kernfs = try String(contentsOf: tmp.appendingPathComponent("tree/fs/kernfs/file.c"), encoding: .utf8)
        #expect(!kernfs.contains("kernfs_vma_page_mkwrite"))
    }
}
