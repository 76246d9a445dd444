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
        #expect(ProjectPaths.checkout(at: worktree)?.dirty == true && ProjectPaths.checkout(at: repo)?.dirty == false)
        #expect(ProjectPaths.commit(of: dir.appendingPathComponent("nothing")) == nil)
    }

    @Test("this checkout's version is 12 hex digits, -dirty when it has changes")
    func thisCheckout() {
        let version = ProjectPaths.version
        let sha = version.hasSuffix("-dirty") ? String(version.dropLast(6)) : version
        #expect(sha.count == 12 && sha.allSatisfy(\.isHexDigit), "\(version)")
    }
}

@Suite("Where a variant's time went")
struct PhaseTimesTests {
    @Test("phases keep their order, a phase met again adds up, a throwing phase still counts; the summary leaves out what took < 0.05 s")
    func phases() async {
        var times = PhaseTimes()
        times.add("source", 0.01)
        times.add("build", 2.44)
        times.add("boot", 1.5)
        times.add("boot", 1.25)
        struct Failed: Error {}
        _ = try? await times.time("module") { try await Task.sleep(nanoseconds: 60_000_000); throw Failed() }
        #expect(times.phases.map(\.name) == ["source", "build", "boot", "module"])
        #expect(times.phases[2].seconds == 2.75)
        #expect(times.phases[3].seconds >= 0.06)
        times.add("suite", 123.4)
        #expect(times.summary.hasPrefix("build 2.4 s, boot 2.8 s, module 0.1 s, suite 123 s"))
    }
}
