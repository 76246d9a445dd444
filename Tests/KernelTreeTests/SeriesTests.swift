import Foundation
import Testing
@testable import KernelTree
import LabSupport

/// The checkout's own kernel/series/v2, found from this file's path.
let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

func fixture(_ name: String) throws -> URL {
    try #require(Bundle.module.url(forResource: "Fixtures/\(name)", withExtension: nil))
}

@Suite("Patch series")
struct SeriesTests {
    @Test("the series directory holds the four patches, by Martin Oliveira, in order")
    func directory() throws {
        let series = try PatchSeries.load(from: repoRoot.appendingPathComponent("kernel/series/v2"))
        #expect(series.patches.count == 4)
        #expect(series.patches.map(\.index) == [1, 2, 3, 4])
        #expect(series.patches.allSatisfy { $0.author == "Martin Oliveira <martin.oliveira@eideticom.com>" })
        #expect(series.patches[0].subject == "kernfs: remove page_mkwrite() from vm_operations_struct")
        #expect(series.patches[1].subject == "mm/gup: handle ZONE_DEVICE pages in folio_fast_pin_allowed()")
        #expect(series.patches[2].files == ["mm/gup.c"])
        #expect(series.patches[3].files == ["drivers/infiniband/core/umem.c"])
        #expect(series.patches[3].text.contains("Acked-by: Jason Gunthorpe"))
    }

    @Test("an mbox of the same patches parses to the same subjects and texts")
    func mbox() throws {
        let dir = try PatchSeries.load(from: repoRoot.appendingPathComponent("kernel/series/v2"))
        let mbox = try PatchSeries.load(from: try fixture("series.mbox"))
        #expect(mbox.patches.map(\.subject) == dir.patches.map(\.subject))
        #expect(mbox.patches.map(\.files) == dir.patches.map(\.files))
    }

    @Test("a cover letter without a diff is dropped from an mbox")
    func coverLetter() throws {
        let text = """
            From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
            From: A <a@example.org>
            Subject: [PATCH 0/1] cover

            words

            From 1111111111111111111111111111111111111111 Mon Sep 17 00:00:00 2001
            From: A <a@example.org>
            Subject: [PATCH 1/1] x: y

            msg
            ---
            diff --git a/x.c b/x.c
            --- a/x.c
            +++ b/x.c
            @@ -1 +1 @@
            -a
            +b

            """
        let series = try PatchSeries.parseMbox(text, origin: "test")
        #expect(series.patches.count == 1)
        #expect(series.patches[0].subject == "x: y")
        #expect(series.patches[0].name == "0001-x-y.patch")
    }

    @Test("missing, empty and patchless inputs fail with the series error")
    func badInputs() throws {
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-series-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        #expect(throws: SeriesError.missing(tmp.appendingPathComponent("nope").path)) {
            try PatchSeries.load(from: tmp.appendingPathComponent("nope"))
        }
        #expect(throws: SeriesError.noSeriesFile(tmp.path)) { try PatchSeries.load(from: tmp) }
        try "0001-a.patch\n".write(to: tmp.appendingPathComponent("series"), atomically: true, encoding: .utf8)
        try "From: A <a@b>\nSubject: x\n\nno diff here\n".write(to: tmp.appendingPathComponent("0001-a.patch"), atomically: true, encoding: .utf8)
        #expect(throws: SeriesError.notAPatch("0001-a.patch")) { try PatchSeries.load(from: tmp) }
        let garbage = tmp.appendingPathComponent("garbage.mbox")
        try "hello\n".write(to: garbage, atomically: true, encoding: .utf8)
        #expect(throws: SeriesError.empty(garbage.path)) { try PatchSeries.load(from: garbage) }
    }

    @Test("selections", arguments: [
        (PatchSelection(), [1, 2, 3, 4], "series"),
        (PatchSelection.baseline, [], "baseline"),
        (PatchSelection(upto: 2), [1, 2], "upto-2"),
        (PatchSelection(without: [2]), [1, 3, 4], "without-2"),
        (PatchSelection(without: [3, 1]), [2, 4], "without-1,3"),
    ])
    func selection(selection: PatchSelection, expected: [Int], label: String) throws {
        let series = try PatchSeries.load(from: repoRoot.appendingPathComponent("kernel/series/v2"))
        #expect(try series.selecting(selection).map(\.index) == expected)
        #expect(selection.label == label)
    }

    @Test("out-of-range selections are refused")
    func badSelection() throws {
        let series = try PatchSeries.load(from: repoRoot.appendingPathComponent("kernel/series/v2"))
        #expect(throws: SeriesError.self) { try series.selecting(PatchSelection(upto: 5)) }
        #expect(throws: SeriesError.self) { try series.selecting(PatchSelection(without: [9])) }
    }

    @Test("a failed git apply names the patch, the file and the hunk")
    func doesNotApply() throws {
        let series = try PatchSeries.load(from: repoRoot.appendingPathComponent("kernel/series/v2"))
        let patch = series.patches[2]
        let hunkLine = try #require(patch.text.split(separator: "\n").first { $0.hasPrefix("@@ -") })
        let start = Int(hunkLine.dropFirst(4).split(separator: ",")[0])!
        let error = PatchFailure.describe(patch: patch, applyOutput: "error: patch failed: mm/gup.c:\(start)\nerror: mm/gup.c: patch does not apply\n")
        #expect(error == .doesNotApply(patch: patch.name, file: "mm/gup.c", hunk: String(hunkLine), detail: "error: patch failed: mm/gup.c:\(start)\nerror: mm/gup.c: patch does not apply"))
        #expect(error.exitCode == .patchDoesNotApply)
        #expect(error.description.contains("0003-mm-gup-allow-FOLL_LONGTERM-FOLL_PCI_P2PDMA.patch"))
    }

    @Test("content hashes are stable and differ by content")
    func hashes() {
        #expect(fnv1a64Hex("") == "cbf29ce484222325")
        #expect(fnv1a64Hex("a") == "af63dc4c8601ec8c")
        #expect(fnv1a64Hex("a") != fnv1a64Hex("b"))
    }
}

@Suite("Bundled series versions")
struct BundledSeriesTests {
    @Test("v2…v5 are bundled, oldest first, and --series names them; the default is v2")
    func versions() throws {
        #expect(BundledSeries.versions(root: repoRoot) == ["v2", "v3", "v4", "v5"])
        #expect(try BundledSeries.resolve(nil, root: repoRoot) == repoRoot.appendingPathComponent("kernel/series/v2"))
        #expect(try BundledSeries.resolve("v5", root: repoRoot) == repoRoot.appendingPathComponent("kernel/series/v5"))
        #expect(try BundledSeries.resolve("/tmp/my.mbox", root: repoRoot) == URL(fileURLWithPath: "/tmp/my.mbox"))
        #expect(throws: SeriesError.unknownVersion("v9", bundled: ["v2", "v3", "v4", "v5"])) {
            try BundledSeries.resolve("v9", root: repoRoot)
        }
        #expect(SeriesError.unknownVersion("v9", bundled: ["v2"]).exitCode == .usage)
    }

    @Test("each version keeps its patches' subjects, authorship, tags and mailed Message-IDs", arguments: [
        ("v3", ["kernfs: remove page_mkwrite() from vm_operations_struct", "mm/gup: allow FOLL_LONGTERM & FOLL_PCI_P2PDMA",
                "RDMA/umem: add support for P2P RDMA"], "20240704163724.2462161", 2),
        ("v4", ["kernfs: remove page_mkwrite() from vm_operations_struct", "mm/gup: allow FOLL_LONGTERM & FOLL_PCI_P2PDMA",
                "RDMA/umem: add support for P2P RDMA"], "20240708165714.3401377", 2),
        ("v5", ["kernfs: add a WARN_ON_ONCE if ->close is set", "kernfs: remove page_mkwrite() from vm_operations_struct",
                "mm/gup: allow FOLL_LONGTERM & FOLL_PCI_P2PDMA", "RDMA/umem: add support for P2P RDMA"], "20240808183340.483468", 2),
    ])
    func version(name: String, subjects: [String], idPrefix: String, firstID: Int) throws {
        let series = try PatchSeries.load(from: try BundledSeries.resolve(name, root: repoRoot))
        #expect(series.patches.map(\.subject) == subjects)
        #expect(series.patches.allSatisfy { $0.author == "Martin Oliveira <martin.oliveira@eideticom.com>" })
        #expect(series.patches.allSatisfy { $0.text.contains("Signed-off-by: Logan Gunthorpe <logang@deltatee.com>") })
        #expect(series.patches.last!.text.contains("Acked-by: Jason Gunthorpe"))
        for (offset, patch) in series.patches.enumerated() {
            #expect(patch.text.contains("\nMessage-ID: <\(idPrefix)-\(firstID + offset)-martin.oliveira@eideticom.com>\n"))
        }
    }

    static let kernfs = "kernfs: remove page_mkwrite() from vm_operations_struct"

    /// v2's gup-fast patch was rebuilt from its description (the v2 posting does not show its diff);
    /// from v3 on only the kernfs patch needed a rebase.
    @Test("a rebase note says which hunk was changed and why, on exactly the patches that changed", arguments: [
        ("v2", [kernfs, "mm/gup: handle ZONE_DEVICE pages in folio_fast_pin_allowed()"]),
        ("v3", [kernfs]), ("v4", [kernfs]), ("v5", [kernfs]),
    ])
    func rebaseNotes(name: String, rebased: [String]) throws {
        let series = try PatchSeries.load(from: try BundledSeries.resolve(name, root: repoRoot))
        #expect(series.patches.filter { $0.text.components(separatedBy: "\n---\n")[0].contains("[p2plab: rebased onto 6.12.117") }.map(\.subject) == rebased)
        for patch in series.patches where patch.subject == Self.kernfs {
            let message = patch.text.components(separatedBy: "\n---\n")[0]
            // The note sits above the Signed-off-by block and names the 6.12 helpers.
            let note = try #require(message.range(of: "[p2plab:"))
            let signoff = try #require(message.range(of: "Signed-off-by:"))
            #expect(note.lowerBound < signoff.lowerBound)
            #expect(message.contains("kernfs_get_active_of"))
            #expect(patch.text.contains("-\tif (!kernfs_get_active_of(of))\n"))
            #expect(!patch.text.contains("kernfs_get_active(of->kn)\n"))
        }
    }
}
