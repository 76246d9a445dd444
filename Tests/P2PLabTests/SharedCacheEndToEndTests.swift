import Foundation
import KTAP
import KernelTree
import LabSupport
import Testing

/// Two `p2plab test` on one cache at once, on different variants: a user and CI, two terminals.
@Suite("End to end: two runs share a cache", .serialized,
       .enabled(if: endToEnd, "set P2PLAB_INTEGRATION=1 (scripts/test does) to build kernels and boot them"))
struct SharedCacheEndToEndTests {
    /// Starts `.build/debug/p2plab ARGS` without waiting; its stdout and stderr go to `log`.
    func start(_ arguments: [String], log: URL) throws -> Process {
        let process = Process()
        process.executableURL = repoRoot.appendingPathComponent(".build/debug/p2plab")
        process.arguments = arguments
        process.currentDirectoryURL = repoRoot
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        return process
    }

    @Test("the baseline and the series started together each boot their own kernel and get their own verdict",
          .timeLimit(.minutes(45)))
    func twoVariantsAtOnce() throws {
        let out = try tempDirectory("shared-cache")
        let check = ["--check", "regmr.p2pmem", "--check", "env.p2pmem_provider", "--accel", "tcg"]
        let baseline = try start(["test", "--baseline"] + check + ["--output", out.appendingPathComponent("baseline").path],
                                 log: out.appendingPathComponent("baseline.log"))
        let series = try start(["test"] + check + ["--output", out.appendingPathComponent("series").path],
                               log: out.appendingPathComponent("series.log"))
        baseline.waitUntilExit()
        series.waitUntilExit()
        let logs = ["baseline", "series"].map { (try? String(contentsOf: out.appendingPathComponent("\($0).log"), encoding: .utf8)) ?? "" }
        print(logs.joined(separator: "\n----\n"))
        // The baseline refuses the p2pmem MR (a failed check, 1); the series passes (0).
        #expect(baseline.terminationStatus == 1, "baseline exited \(baseline.terminationStatus)")
        #expect(series.terminationStatus == 0, "series exited \(series.terminationStatus)")
        let b = try loadRun(out.appendingPathComponent("baseline"))
        let s = try loadRun(out.appendingPathComponent("series"))
        #expect(b.leaves.first { $0.test.name == "regmr.p2pmem" }?.test.errno == "EFAULT")
        #expect(s.leaves.first { $0.test.name == "regmr.p2pmem" }?.test.status == .pass)
        // Each booted the kernel of its own variant, built from its own branch.
        let bImage = try #require(b.metadata["bzImage"]), sImage = try #require(s.metadata["bzImage"])
        #expect(bImage != sImage)
        #expect(bImage.contains("-baseline-") && sImage.contains("-series-"))
        #expect(b.metadata["branch"]?.hasPrefix("p2plab/baseline-") == true)
        #expect(s.metadata["branch"]?.hasPrefix("p2plab/series-") == true)
        #expect(b.metadata["head"] != s.metadata["head"])
        // Neither saw git trip over the other's checkout.
        for log in logs { #expect(!log.contains("index.lock"), "a run collided with the other's checkout") }
        let waited = logs.contains { $0.contains("another p2plab run is using") }
        print("one run waited for the other's checkout: \(waited)")
    }

    @Test("a second bisect of one tree waits for the first, saying so, and touches its worktree only then",
          .timeLimit(.minutes(5)))
    func twoBisectsOfOneTree() async throws {
        let out = try tempDirectory("bisect-lock")
        // A tree that passes the up-front checks (Makefile, Kconfig, mm/gup.c at both ends) and then
        // fails its first build at once: no kernel is built.
        let tree = out.appendingPathComponent("tree")
        try FileManager.default.createDirectory(at: tree.appendingPathComponent("mm"), withIntermediateDirectories: true)
        func git(_ args: [String]) throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/git")
            process.arguments = ["-C", tree.path, "-c", "user.name=Test", "-c", "user.email=t@example.org"] + args
            try process.run()
            process.waitUntilExit()
            #expect(process.terminationStatus == 0, "git \(args.joined(separator: " ")) failed")
        }
        try git(["init", "-q"])
        for (n, text) in ["one", "two"].enumerated() {
            for file in ["Makefile", "Kconfig", "mm/gup.c"] {
                try "# \(text)\n".write(to: tree.appendingPathComponent(file), atomically: true, encoding: .utf8)
            }
            try git(["add", "-A"])
            try git(["commit", "-q", "-m", "commit \(n)"])
        }
        let cache = CacheLayout(root: out.appendingPathComponent("cache"))
        let name = "bisect-" + fnv1a64Hex(tree.resolvingSymlinksInPath().path).prefix(10)
        let worktree = cache.worktrees.appendingPathComponent(name)
        let args = ["bisect", "--tree", tree.path, "--good", "HEAD~1", "--bad", "HEAD", "--check", "regmr.p2pmem",
                    "--cache", cache.root.path, "--output", out.appendingPathComponent("run").path]
        // Another run holds the tree's bisection (as a first p2plab bisect would).
        let held = try await CacheLock.acquire(name, in: cache, timeout: 10)
        let log = out.appendingPathComponent("second.log")
        let second = try start(args, log: log)
        var waiting = false
        for _ in 0..<600 where !waiting {
            try await Task.sleep(nanoseconds: 100_000_000)
            waiting = ((try? String(contentsOf: log, encoding: .utf8)) ?? "").contains("is running in \(worktree.path); waiting for it to finish")
        }
        #expect(waiting, "the second bisect did not say it waits")
        #expect(second.isRunning)
        #expect(!FileManager.default.fileExists(atPath: worktree.path), "the second bisect touched the worktree while the first held it")
        held.release()
        second.waitUntilExit()
        let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        print(text)
        // Once the first let go, the second went on: its worktree, then its (failing) endpoint build.
        #expect(FileManager.default.fileExists(atPath: worktree.appendingPathComponent(".git").path))
        #expect(text.contains("bisect: tree "))
        #expect(second.terminationStatus != 0)
        // Alone, it does not wait: the line above came from the lock, not from every run.
        let alone = out.appendingPathComponent("alone.log")
        let third = try start(args, log: alone)
        third.waitUntilExit()
        #expect(!((try? String(contentsOf: alone, encoding: .utf8)) ?? "").contains("waiting for it to finish"))
        // An end that is not a commit of the tree is named, with its option, before any worktree or lock.
        let typo = out.appendingPathComponent("typo.log")
        let fourth = try start(args.map { $0 == "HEAD~1" ? "no-such-rev" : $0 }, log: typo)
        fourth.waitUntilExit()
        #expect(fourth.terminationStatus == 10)
        #expect(((try? String(contentsOf: typo, encoding: .utf8)) ?? "").contains("no-such-rev is not a commit in \(tree.resolvingSymlinksInPath().path): pass --good"))
    }
}
