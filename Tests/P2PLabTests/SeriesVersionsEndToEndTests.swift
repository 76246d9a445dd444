import Foundation
import KernelTree
import LabSupport
import Testing

/// Runs `.build/debug/p2plab ARGS` and collects stdout and stderr together (the refusal of a
/// patch is one line on stderr).
func p2plabBoth(_ arguments: [String]) throws -> Invocation {
    let result = try runCollecting(repoRoot.appendingPathComponent(".build/debug/p2plab"), arguments, stderrToo: true)
    print(result.output)
    return result
}

/// The manifest the last build wrote (`builds/latest.json` in the cache).
func latestManifest() throws -> BuildManifest {
    try JSONDecoder().decode(BuildManifest.self, from: Data(contentsOf: CacheLayout().latestBuild))
}

@Suite("End to end: every bundled version, and the series as mailed (real kernel)", .serialized,
       .enabled(if: endToEnd, "set P2PLAB_INTEGRATION=1 (scripts/test does) to apply and build kernels"))
struct SeriesVersionsEndToEndTests {
    @Test("the v5 mbox as mailed (cover letter first) is refused at the kernfs patch: file, hunk, the rename, exit 13",
          .timeLimit(.minutes(20)))
    func mailedV5Refused() throws {
        let mbox = repoRoot.appendingPathComponent("Tests/KernelTreeTests/Fixtures/mailed/v5.mbx")
        let result = try p2plabBoth(["build", "--series", mbox.path])
        #expect(result.status == 13, "p2plab build of the mailed v5 exited \(result.status)")
        // The cover letter is no patch: git am never sees it ("Patch is empty"); patch 1 applies.
        #expect(!result.output.contains("Patch is empty"))
        #expect(result.output.contains("applied 0001-kernfs-add-a-WARN_ON_ONCE-if-close-is-set.patch"))
        #expect(result.output.contains("patch 0002-kernfs-remove-page_mkwrite-from-vm_operations_struct.patch does not apply: fs/kernfs/file.c, hunk @@ -386,28 +386,6 @@"))
        #expect(result.output.contains("the hunk says kernfs_get_active and kernfs_put_active; the tree calls them kernfs_get_active_of and kernfs_put_active_of: rebase the hunk, or use the bundled --series v5"))

        // The same series as b4 am writes it stops at the same hunk, with the same advice.
        let b4 = repoRoot.appendingPathComponent("Tests/KernelTreeTests/Fixtures/b4-v5/v5_20240808_martin_oliveira_enable_p2pdma_in_userspace_rdma.mbx")
        let fromB4 = try p2plabBoth(["build", "--series", b4.path])
        #expect(fromB4.status == 13, "p2plab build of b4's v5 exited \(fromB4.status)")
        #expect(fromB4.output.contains("applied 0001-kernfs-add-a-WARN_ON_ONCE-if-close-is-set.patch"))
        #expect(fromB4.output.contains("patch 0002-kernfs-remove-page_mkwrite-from-vm_operations_struct.patch does not apply: fs/kernfs/file.c, hunk @@ -386,28 +386,6 @@"))
        #expect(fromB4.output.contains("rebase the hunk, or use the bundled --series v5"))
    }

    @Test("--series v3, v4 and v5 each apply and build incrementally; the manifest names each patch's Message-ID and the patchset hash",
          .timeLimit(.minutes(45)))
    func bundledVersionsBuild() throws {
        defer {
            // The boot tests use the latest build: leave it the default series again (a cache hit).
            _ = try? p2plab(["build"])
        }
        for (version, count) in [("v3", 3), ("v4", 3), ("v5", 4)] {
            let result = try p2plabBoth(["build", "--series", version])
            #expect(result.status == 0, "p2plab build --series \(version) exited \(result.status)")
            let manifest = try latestManifest()
            let series = try PatchSeries.load(from: repoRoot.appendingPathComponent("kernel/series/\(version)"))
            #expect(manifest.patches.count == count)
            #expect(manifest.patches.allSatisfy { $0.state == .applied && $0.commit != nil })
            #expect(manifest.patches.map(\.messageID) == series.patches.map(\.messageID))
            #expect(manifest.patches.allSatisfy { $0.messageID?.hasSuffix("-martin.oliveira@eideticom.com") == true })
            #expect(manifest.seriesID == series.id)
            #expect(manifest.patchsetHash == PatchSeries.patchsetHash(series.patches))
            #expect(manifest.kernelRelease.hasPrefix("6.12"))
            // Incremental: the object directory is the one every variant of this source shares.
            #expect(manifest.objectDir.contains(manifest.sourceId))
            print("build --series \(version): \(manifest.cacheHit ? "cache hit" : String(format: "%.0f s of make", manifest.buildSeconds))")
        }
    }
}
