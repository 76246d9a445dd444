import Foundation
import LabSupport
import Testing
@testable import KernelTree

let coverID = "20240808183340.483468-1-martin.oliveira@eideticom.com"
let v5Subjects = ["kernfs: add a WARN_ON_ONCE if ->close is set", "kernfs: remove page_mkwrite() from vm_operations_struct",
                  "mm/gup: allow FOLL_LONGTERM & FOLL_PCI_P2PDMA", "RDMA/umem: add support for P2P RDMA"]
let v5PatchIDs = (2...5).map { "20240808183340.483468-\($0)-martin.oliveira@eideticom.com" }

/// The changed lines of a patch (what git applies), without headers, index lines and offsets.
func changedLines(_ text: String) -> [String] {
    text.split(separator: "\n").map(String.init).filter { ($0.hasPrefix("+") || $0.hasPrefix("-")) && !$0.hasPrefix("+++") && !$0.hasPrefix("---") }
}

/// Runs a shell command and returns its stdout, trimmed.
func shell(_ script: String, in dir: URL) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/sh")
    process.arguments = ["-c", script]
    process.currentDirectoryURL = dir
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}

@Suite("Series intake: mailed mboxes, b4, Message-IDs, patchset hash")
struct IntakeTests {
    @Test("an mbox as mailed: the cover letter is recognised and kept aside; its Message-ID is the series' id")
    func mailed() throws {
        let series = try PatchSeries.load(from: try fixture("mailed/v5.mbx"))
        #expect(series.patches.map(\.subject) == v5Subjects)
        #expect(series.coverLetter?.subject == "[PATCH v5 0/4] Enable P2PDMA in Userspace RDMA")
        #expect(series.coverLetter?.text.contains("Changes in v5:") == true)
        #expect(series.id == coverID)
        #expect(series.patches.map(\.messageID) == v5PatchIDs)
        #expect(series.patches.allSatisfy { !$0.text.contains("Changes in v5:") })
        // Named as git format-patch names them, like the bundled files.
        let bundled = try PatchSeries.load(from: repoRoot.appendingPathComponent("kernel/series/v5"))
        #expect(series.patches.map(\.name) == bundled.patches.map(\.name))
    }

    @Test("cover letter subjects, and what is not one")
    func coverSubjects() {
        #expect(PatchSeries.isCoverSubject("[PATCH v5 0/4] Enable P2PDMA in Userspace RDMA"))
        #expect(PatchSeries.isCoverSubject("[RFC PATCH 00/12] x"))
        #expect(!PatchSeries.isCoverSubject("[PATCH v5 1/4] kernfs: add a WARN_ON_ONCE if ->close is set"))
        #expect(!PatchSeries.isCoverSubject("Re: [PATCH v5 0/4] Enable P2PDMA in Userspace RDMA"))
        #expect(!PatchSeries.isCoverSubject("[PATCH] x"))
    }

    @Test("an mbox as b4 am writes it: the same patches, Message-Ids, and the .cover beside it as the series' id")
    func b4() throws {
        let file = try fixture("b4-v5/v5_20240808_martin_oliveira_enable_p2pdma_in_userspace_rdma.mbx")
        let series = try PatchSeries.load(from: file)
        #expect(series.patches.map(\.subject) == v5Subjects)
        #expect(series.patches.map(\.messageID) == v5PatchIDs)
        #expect(series.coverLetter?.subject == "[PATCH v5 0/4] Enable P2PDMA in Userspace RDMA")
        #expect(series.id == coverID)
        #expect(series.patches.allSatisfy { $0.author == "Martin Oliveira <martin.oliveira@eideticom.com>" })
        let mailed = try PatchSeries.load(from: try fixture("mailed/v5.mbx"))
        #expect(series.patches.map { changedLines($0.text) } == mailed.patches.map { changedLines($0.text) })
    }

    @Test("the bundled v5 carries the same Message-IDs and cover letter as the mailed one")
    func bundledIDs() throws {
        let series = try PatchSeries.load(from: repoRoot.appendingPathComponent("kernel/series/v5"))
        #expect(series.id == coverID)
        #expect(series.patches.map(\.messageID) == v5PatchIDs)
        #expect(series.coverLetter?.subject == "[PATCH v5 0/4] Enable P2PDMA in Userspace RDMA")
    }

    @Test("SHA-256 agrees with sha256sum, across block boundaries")
    func sha256() throws {
        #expect(SHA256.hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")
            == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-sha-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for length in [55, 56, 63, 64, 65, 119, 120, 1000] {
            let text = String((0..<length).map { Character(UnicodeScalar(UInt8(97 + $0 % 26))) }) + "é"
            try text.write(to: dir.appendingPathComponent("f"), atomically: true, encoding: .utf8)
            #expect(SHA256.hex(text) == (try shell("sha256sum f | cut -c-64", in: dir)), "length \(length)")
        }
    }

    @Test("the patchset hash is KCIDB's: sha256sum *.patch | cut -c-64 | sha256sum, computed here by the shell",
          arguments: ["v2", "v3", "v4", "v5"])
    func patchsetHash(version: String) throws {
        let dir = repoRoot.appendingPathComponent("kernel/series/\(version)")
        let series = try PatchSeries.load(from: dir)
        // The series file's order is the glob's; the cover letter (0000-) is no patch.
        let independent = try shell("sha256sum $(cat series) | cut -c-64 | sha256sum | cut -c-64", in: dir)
        #expect(independent.count == 64)
        #expect(PatchSeries.patchsetHash(series.patches) == independent)
        #expect(PatchSeries.patchsetHash([Patch]()) == "")
        #expect(PatchSeries.patchsetHash(series.patches.reversed()) != independent)
    }

    @Test("a checkout records each patch's Message-ID and sha256, the series id and the patchset hash; the baseline's hash is empty")
    func variantRecords() async throws {
        let repo = try await makeRepo(files: ["Makefile": "all:\n", "Kconfig": "\n", "mm/gup.c": "a\nb\nc\nd\ne\nf\ng\nh\n"])
        let mbox = """
            From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
            From: Martin Oliveira <martin.oliveira@eideticom.com>
            Subject: [PATCH v9 0/1] a cover
            Message-ID: <cover@example.org>

            Changes in v9: none

            From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
            From: Martin Oliveira <martin.oliveira@eideticom.com>
            Date: Tue, 11 Jun 2024 12:27:29 -0600
            Subject: [PATCH v9 1/1] mm/gup: change a
            Message-Id: <patch-1@example.org>
            In-Reply-To: <cover@example.org>

            why
            ---
            diff --git a/mm/gup.c b/mm/gup.c
            --- a/mm/gup.c
            +++ b/mm/gup.c
            @@ -1,4 +1,4 @@
            -a
            +A
             b
             c
             d
            --\u{20}
            2.39.5

            """
        let series = try PatchSeries.parseMbox(mbox, origin: "test")
        #expect(series.id == "cover@example.org")
        let cache = CacheLayout(root: FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-cache-\(UUID().uuidString)"))
        let manager = SourceManager(cache: cache, runner: Runner(), progress: { _ in })
        let source = try await manager.prepare(.tree(path: repo, base: "HEAD"))
        let full = try await manager.checkout(source, series: series, selection: .full)
        #expect(full.patches.map(\.messageID) == ["patch-1@example.org"])
        #expect(full.patches.map(\.sha256) == [SHA256.hex(series.patches[0].text)])
        #expect(full.seriesID == "cover@example.org")
        #expect(full.patchsetHash == SHA256.hex(SHA256.hex(series.patches[0].text) + "\n"))
        let reused = try await manager.checkout(source, series: series, selection: .full)
        #expect(reused == full)
        let baseline = try await manager.checkout(source, series: series, selection: .baseline)
        #expect(baseline.patchsetHash == "")
    }
}

@Suite("A hunk that differs from the tree only by a renamed identifier")
struct RenameSuggestionTests {
    func excerpt(_ path: String) throws -> [String] {
        var lines = try String(contentsOf: try fixture("tree-6.12-excerpt/\(path)"), encoding: .utf8).components(separatedBy: "\n")
        if lines.last == "" { lines.removeLast() }
        return lines
    }

    @Test("the mailed v5 kernfs patch against 6.12: kernfs_get_active/kernfs_put_active are kernfs_get_active_of/kernfs_put_active_of")
    func mailedKernfs() throws {
        let patch = try PatchSeries.load(from: try fixture("mailed/v5.mbx")).patches[1]
        let hunk = HunkRenames.oldSide(in: patch.text, file: "fs/kernfs/file.c", oldStart: 386)
        #expect(hunk.count == 28)
        #expect(hunk.first == "\treturn ret;")
        let renames = HunkRenames.explain(oldSide: hunk, tree: try excerpt("fs/kernfs/file.c"))
        #expect(renames == [IdentifierRename(hunk: "kernfs_get_active", tree: "kernfs_get_active_of"),
                            IdentifierRename(hunk: "kernfs_put_active", tree: "kernfs_put_active_of")])
        let error = PatchFailure.describe(patch: patch, applyOutput: "error: patch failed: fs/kernfs/file.c:386\nerror: fs/kernfs/file.c: patch does not apply\n",
                                          tree: try fixture("tree-6.12-excerpt"))
        guard case .doesNotApply(let name, let file, let header, _, let found, _) = error else {
            Issue.record("not a doesNotApply: \(error)")
            return
        }
        #expect(name == "0002-kernfs-remove-page_mkwrite-from-vm_operations_struct.patch")
        #expect(file == "fs/kernfs/file.c")
        #expect(header.hasPrefix("@@ -386,28 +386,6 @@"))
        #expect(found == renames)
        #expect(error.exitCode == .patchDoesNotApply)
        let bundled = SeriesError.doesNotApply(patch: name, file: file, hunk: header, detail: "", renames: found, bundled: "v5")
        #expect(bundled.description.contains("the hunk says kernfs_get_active and kernfs_put_active; the tree calls them kernfs_get_active_of and kernfs_put_active_of: rebase the hunk, or use the bundled --series v5"))
    }

    @Test("one rename reads as the tree calling it by its new name")
    func oneRename() {
        let text = SeriesError.advice(renames: [IdentifierRename(hunk: "kernfs_get_active", tree: "kernfs_get_active_of")], bundled: "v5")
        #expect(text == "the hunk says kernfs_get_active; the tree calls it kernfs_get_active_of: rebase the hunk, or use the bundled --series v5")
    }

    @Test("the rebased hunk matches, and a hunk that differs in more than a name gets no suggestion")
    func noFalseSuggestion() throws {
        let tree = try excerpt("fs/kernfs/file.c")
        let rebased = try PatchSeries.load(from: repoRoot.appendingPathComponent("kernel/series/v5")).patches[1]
        let header = try #require(rebased.text.split(separator: "\n").first { $0.hasPrefix("@@ -") })
        let start = Int(header.dropFirst(4).split(separator: ",")[0])!
        // Matches exactly: nothing to explain.
        #expect(HunkRenames.explain(oldSide: HunkRenames.oldSide(in: rebased.text, file: "fs/kernfs/file.c", oldStart: start), tree: tree) == [])
        // A changed statement, not a renamed identifier.
        var hunk = HunkRenames.oldSide(in: rebased.text, file: "fs/kernfs/file.c", oldStart: start)
        let i = try #require(hunk.firstIndex(of: "\t\tfile_update_time(file);"))
        hunk[i] = "\t\tret = VM_FAULT_NOPAGE;"
        #expect(HunkRenames.explain(oldSide: hunk, tree: tree) == [])
        // A hunk from another file altogether.
        #expect(HunkRenames.explain(oldSide: Array(try excerpt("mm/gup.c").prefix(10)), tree: tree) == [])
    }

    @Test("identifiers and renames within a line")
    func lines() {
        #expect(HunkRenames.identifiers("\tif (!kernfs_get_active(of->kn))") == ["if", "kernfs_get_active", "of", "kn"])
        #expect(HunkRenames.renamesInLine(hunk: "\tif (!kernfs_get_active(of->kn))", tree: "\tif (!kernfs_get_active_of(of))")
            == [IdentifierRename(hunk: "kernfs_get_active", tree: "kernfs_get_active_of")])
        #expect(HunkRenames.renamesInLine(hunk: "\tret = 0;", tree: "\tret = 1;") == [])
    }
}

/// b4 as the user has it: `$P2PLAB_B4` or `b4` on PATH.
let b4Installed = SeriesFetcher.findB4() != nil

@Suite("p2plab series fetch (b4 am)")
struct FetchTests {
    /// What b4 0.16 prints when the archive's host does not resolve (recorded on a machine without network).
    static let offlineStderr = """
        Looking up 20240808183340.483468-1-martin.oliveira@eideticom.com
        Request to https://lore.kernel.org failed (HTTPSConnectionPool(host='lore.kernel.org', port=443): Max retries exceeded with url: /all/20240808183340.483468-1-martin.oliveira%40eideticom.com/t.mbox.gz (Caused by NameResolutionError("HTTPSConnection(host='lore.kernel.org', port=443): Failed to resolve 'lore.kernel.org' ([Errno -2] Name or service not known)"))), trying next host
        Could not retrieve thread: All hosts failed for https://lore.kernel.org/all/20240808183340.483468-1-martin.oliveira%40eideticom.com/t.mbox.gz
        """

    func temp() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-fetch-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test("Message-IDs with brackets, bare, or as archive links", arguments: [
        "<\(coverID)>", coverID, "https://lore.kernel.org/r/\(coverID)/", "https://lore.kernel.org/linux-mm/\(coverID)/T/",
        "https://patch.msgid.link/\(coverID)", "https://lore.kernel.org/r/20240808183340.483468-1-martin.oliveira%40eideticom.com",
    ])
    func messageIDs(text: String) {
        #expect(SeriesFetcher.messageID(text) == coverID)
    }

    @Test("without b4: one line saying what to install or run instead, exit 3")
    func noB4() async throws {
        let fetcher = SeriesFetcher(runner: Runner(), b4: nil)
        let error = await #expect(throws: FetchError.self) { try await fetcher.fetch(coverID, output: try temp()) }
        #expect(error == .b4Missing(id: coverID, mbox: nil))
        #expect(error?.exitCode == .missingDependency)
        #expect(error?.description.contains("\n") == false)
        #expect(error?.description.contains("pip install b4") == true)
        await #expect(throws: FetchError.badMessageID("nonsense")) { try await fetcher.fetch("nonsense", output: try temp()) }
    }

    @Test("offline: b4 cannot reach the archive; one line says what to run instead, exit 10")
    func offline() async throws {
        let dir = try temp()
        let fake = dir.appendingPathComponent("b4")
        try "#!/bin/sh\ncat >&2 <<'EOF'\n\(Self.offlineStderr)\nEOF\nexit 1\n".write(to: fake, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: fake.path)
        let fetcher = SeriesFetcher(runner: Runner(), b4: fake.path)
        let error = await #expect(throws: FetchError.self) { try await fetcher.fetch(coverID, output: dir.appendingPathComponent("out")) }
        #expect(error == .offline(id: coverID, reason: "the archive's host name does not resolve"))
        #expect(error?.exitCode == .badSource)
        #expect(error?.description.contains("\n") == false)
        #expect(error?.description.contains("b4 am -o DIR \(coverID)") == true)
        #expect(error?.description.contains("--mbox FILE") == true)
    }

    @Test("b4 am -m reads a saved thread offline and writes an .mbx and a .cover that --series takes",
          .enabled(if: b4Installed, "b4 is not installed (pip install b4): the fetch through b4 itself is not run"))
    func realB4() async throws {
        let out = try temp()
        let fetched = try await SeriesFetcher(runner: Runner()).fetch("<\(coverID)>", output: out, mbox: try fixture("mailed/v5.mbx"))
        #expect(fetched.mbox.pathExtension == "mbx")
        #expect(FileManager.default.fileExists(atPath: fetched.mbox.deletingPathExtension().appendingPathExtension("cover").path))
        #expect(fetched.series.patches.map(\.subject) == v5Subjects)
        #expect(fetched.series.patches.map(\.messageID) == v5PatchIDs)
        #expect(fetched.series.id == coverID)
    }
}
