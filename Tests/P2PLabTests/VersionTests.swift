import Foundation
import Testing
@testable import LabSupport

/// The commit p2plab writes into results, asked of the real git.
@Suite("p2plab's own version in results")
struct VersionTests {
    func sh(_ script: String, in directory: URL) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", script]
        process.currentDirectoryURL = directory
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(script)")
    }

    @Test("a worktree (whose .git is a file) and packed refs give the commit; a changed tracked file marks it dirty")
    func worktreeAndPackedRefs() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-version-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let repo = dir.appendingPathComponent("repo"), worktree = dir.appendingPathComponent("wt")
        try FileManager.default.createDirectory(at: repo, withIntermediateDirectories: true)
        try sh("git init -q && echo a > f && git add f && git -c user.name=t -c user.email=t@t commit -qm a && git pack-refs --all "
               + "&& git worktree add -q \(worktree.path)", in: repo)
        let commit = try #require(ProjectPaths.commit(of: repo))
        #expect(commit.count == 40 && commit.allSatisfy(\.isHexDigit))
        #expect(ProjectPaths.commit(of: worktree) == commit)
        let branch = try #require(ProjectPaths.git(["symbolic-ref", "--short", "HEAD"], in: repo))
        #expect(!FileManager.default.fileExists(atPath: repo.appendingPathComponent(".git/refs/heads/\(branch)").path), "the ref is packed")
        try "b\n".write(to: worktree.appendingPathComponent("f"), atomically: true, encoding: .utf8)
        #expect(ProjectPaths.git(["status", "--porcelain", "--untracked-files=no"], in: worktree) == "M f")
        #expect(ProjectPaths.commit(of: dir.appendingPathComponent("nothing")) == nil)
    }

    @Test("this checkout's version is 12 hex digits, -dirty when it has changes")
    func thisCheckout() {
        let version = ProjectPaths.version
        let sha = version.hasSuffix("-dirty") ? String(version.dropLast(6)) : version
        #expect(sha.count == 12 && sha.allSatisfy(\.isHexDigit), "\(version)")
    }
}
