import Foundation
import LabSupport
import Testing
@testable import KernelTree

/// A small git repository in a temp directory, made with the real git.
func makeRepo(files: [String: String]) async throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-repo-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    for (path, text) in files {
        let url = dir.appendingPathComponent(path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try text.write(to: url, atomically: true, encoding: .utf8)
    }
    let git = Git(directory: dir, runner: Runner())
    try await git.run(["init", "-q"])
    try await git.run(["add", "-A"])
    try await git.run(["commit", "-q", "-m", "base"])
    return dir
}

@Suite("Kernel sources (real git, small trees)")
struct SourceTests {
    let cache = CacheLayout(root: FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-cache-\(UUID().uuidString)"))

    var manager: SourceManager { SourceManager(cache: cache, runner: Runner(), progress: { _ in }) }

    @Test("a directory that is not a git repository is refused")
    func notGit() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-plain-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        await #expect(throws: BuildError.notAGitTree(dir.path)) { try await manager.prepare(.tree(path: dir, base: "HEAD")) }
        await #expect(throws: BuildError.notAKernelTree(dir.path + "/nope")) {
            try await manager.prepare(.tree(path: dir.appendingPathComponent("nope"), base: "HEAD"))
        }
    }

    @Test("a git repository without Kconfig and mm/gup.c is not a kernel tree")
    func notKernel() async throws {
        let repo = try await makeRepo(files: ["README": "hello\n"])
        await #expect(throws: BuildError.notAKernelTree(repo.resolvingSymlinksInPath().path)) {
            try await manager.prepare(.tree(path: repo, base: "HEAD"))
        }
    }

    @Test("a dirty tree at HEAD is refused; an explicit --base is fine; the user's checkout is untouched")
    func dirty() async throws {
        let repo = try await makeRepo(files: ["Makefile": "all:\n", "Kconfig": "\n", "mm/gup.c": "int x;\n"])
        try "int y;\n".write(to: repo.appendingPathComponent("mm/gup.c"), atomically: true, encoding: .utf8)
        await #expect(throws: BuildError.dirtyTree(repo.resolvingSymlinksInPath().path)) {
            try await manager.prepare(.tree(path: repo, base: "HEAD"))
        }
        let source = try await manager.prepare(.tree(path: repo, base: "master"))
        #expect(source.workdir.path.hasPrefix(cache.worktrees.path))
        #expect(try String(contentsOf: source.workdir.appendingPathComponent("mm/gup.c"), encoding: .utf8) == "int x;\n")
        #expect(try String(contentsOf: repo.appendingPathComponent("mm/gup.c"), encoding: .utf8) == "int y;\n")
        await #expect(throws: BuildError.badRevision(tree: repo.resolvingSymlinksInPath().path, rev: "no-such-rev")) {
            try await manager.prepare(.tree(path: repo, base: "no-such-rev"))
        }
    }

    @Test("variants are branches: applied once, reused, already-present patches skipped, bad ones named")
    func variants() async throws {
        // Two changes far enough apart that each patch applies with or without the other.
        let repo = try await makeRepo(files: ["Makefile": "all:\n", "Kconfig": "\n", "mm/gup.c": "a\nb\nc\nd\ne\nf\ng\nh\n"])
        func patch(_ n: Int, _ old: String, _ new: String) -> String {
            """
            From 1111111111111111111111111111111111111111 Mon Sep 17 00:00:00 2001
            From: Martin Oliveira <martin.oliveira@eideticom.com>
            Date: Tue, 11 Jun 2024 12:27:29 -0600
            Subject: [PATCH \(n)/2] mm/gup: change \(old)

            why
            ---
            diff --git a/mm/gup.c b/mm/gup.c
            --- a/mm/gup.c
            +++ b/mm/gup.c
            \(old == "a" ? "@@ -1,4 +1,4 @@\n-a\n+\(new)\n b\n c\n d" : "@@ -5,4 +5,4 @@\n e\n f\n g\n-h\n+\(new)")
            --
            2.39.5

            """
        }
        let series = PatchSeries(patches: [
            try PatchSeries.parsePatch(patch(1, "a", "A"), index: 1, name: "0001-a.patch"),
            try PatchSeries.parsePatch(patch(2, "h", "H"), index: 2, name: "0002-h.patch"),
        ], origin: "test")
        let source = try await manager.prepare(.tree(path: repo, base: "HEAD"))
        let full = try await manager.checkout(source, series: series, selection: .full)
        #expect(full.patches.map(\.state) == [.applied, .applied])
        #expect(try String(contentsOf: source.workdir.appendingPathComponent("mm/gup.c"), encoding: .utf8) == "A\nb\nc\nd\ne\nf\ng\nH\n")
        let git = Git(directory: source.workdir, runner: Runner())
        #expect(try await git.run(["log", "--format=%an", "\(source.baseCommit)..HEAD"]) == "Martin Oliveira\nMartin Oliveira")
        let again = try await manager.checkout(source, series: series, selection: .full)
        #expect(again.head == full.head)
        let without1 = try await manager.checkout(source, series: series, selection: PatchSelection(without: [1]))
        #expect(try String(contentsOf: source.workdir.appendingPathComponent("mm/gup.c"), encoding: .utf8) == "a\nb\nc\nd\ne\nf\ng\nH\n")
        #expect(without1.label == "without-1")
        let base = try await manager.checkout(source, series: series, selection: .baseline)
        #expect(base.head == source.baseCommit)

        // A tree that already has the series: every patch is reported as already there.
        let merged = try await manager.prepare(.tree(path: source.workdir, base: full.head))
        let onMerged = try await manager.checkout(merged, series: series, selection: .full)
        #expect(onMerged.patches.map(\.state) == [.alreadyInTree, .alreadyInTree])

        // A patch that does not apply names itself, its file and its hunk.
        let broken = PatchSeries(patches: [try PatchSeries.parsePatch(patch(1, "a", "A").replacingOccurrences(of: "-a\n", with: "-zzz\n"), index: 1, name: "0001-a.patch")], origin: "t")
        await #expect(throws: SeriesError.doesNotApply(patch: "0001-a.patch", file: "mm/gup.c", hunk: "@@ -1,4 +1,4 @@",
                                                       detail: "error: patch failed: mm/gup.c:1\nerror: mm/gup.c: patch does not apply")) {
            try await manager.checkout(source, series: broken, selection: .full)
        }
        #expect(try String(contentsOf: repo.appendingPathComponent("mm/gup.c"), encoding: .utf8) == "a\nb\nc\nd\ne\nf\ng\nh\n")
    }
}
