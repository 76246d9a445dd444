import Catalog
import Checks
import Foundation
import KTAP
import KernelTree
import LabSupport
import Testing

/// The end-to-end tests run the real p2plab binary: a real kernel build, real QEMU, the real suite
/// in the guest. No part of it is faked. `scripts/test` turns them on.
let endToEnd = ProcessInfo.processInfo.environment["P2PLAB_INTEGRATION"] == "1"
let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

struct Invocation {
    var status: Int32
    var output: String
}

/// Runs `executable ARGS` in the checkout and collects its stdout, and its stderr too when
/// `stderrToo` (else stderr stays the test's own).
func runCollecting(_ executable: URL, _ arguments: [String], stderrToo: Bool) throws -> Invocation {
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    process.currentDirectoryURL = repoRoot
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = stderrToo ? pipe : FileHandle.standardError
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return Invocation(status: process.terminationStatus, output: String(decoding: data, as: UTF8.self))
}

/// Runs `.build/debug/p2plab ARGS` (built by scripts/setup) and collects its output.
func p2plab(_ arguments: [String]) throws -> Invocation {
    let result = try runCollecting(repoRoot.appendingPathComponent(".build/debug/p2plab"), arguments, stderrToo: false)
    print(result.output)
    return result
}

func loadRun(_ directory: URL) throws -> TestRun {
    try JSONRenderer.decode(try Data(contentsOf: directory.appendingPathComponent("results.json")))
}

/// The bundled v2 plus the test fixture `fixture` as its fifth patch, in a series directory of its own.
func v2Planted(with fixture: String, directory name: String) throws -> URL {
    let series = try tempDirectory(name)
    let v2 = repoRoot.appendingPathComponent("kernel/series/v2")
    for file in try FileManager.default.contentsOfDirectory(atPath: v2.path) {
        try FileManager.default.copyItem(at: v2.appendingPathComponent(file), to: series.appendingPathComponent(file))
    }
    let planted = "0005-" + fixture
    try FileManager.default.copyItem(
        at: repoRoot.appendingPathComponent("Tests/P2PLabTests/Fixtures/\(fixture)"), to: series.appendingPathComponent(planted))
    let list = try String(contentsOf: series.appendingPathComponent("series"), encoding: .utf8)
    try (list + planted + "\n").write(to: series.appendingPathComponent("series"), atomically: true, encoding: .utf8)
    return series
}

func tempDirectory(_ name: String) throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-e2e-\(name)-\(UUID().uuidString.prefix(8))")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

@Suite("End to end: build, boot, check (real kernel, real QEMU)", .serialized,
       .enabled(if: endToEnd, "set P2PLAB_INTEGRATION=1 (scripts/test does) to build kernels and boot them"))
struct EndToEndTests {
    @Test("--compare: the series passes every check that applies in a VM; the baseline fails exactly the series' checks",
          .timeLimit(.minutes(45)))
    func compare() throws {
        let out = try tempDirectory("compare")
        let result = try p2plab(["test", "--compare", "--accel", "tcg", "--output", out.path])
        #expect(result.status == 0, "p2plab test --compare exited \(result.status)")
        #expect(result.output.contains("verdict: PASS"))
        let series = try loadRun(out.appendingPathComponent("series"))
        let baseline = try loadRun(out.appendingPathComponent("baseline"))
        for file in ["results.ktap", "results.json", "junit.xml", "console.log", "reproduce.sh"] {
            #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("series/\(file)").path), "\(file) missing")
        }
        // Checks by their own name: the selftest checks carry their cases as nested results.
        let seriesByName = Dictionary(series.tests.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let baselineByName = Dictionary(baseline.tests.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for check in Suite.checks {
            let s = try #require(seriesByName[check.name], "\(check.name) did not run on the series")
            #expect(s.status == .pass || s.status == .skip, "\(check.name) on the series: \(s.status) \(s.diagnostics)")
            let b = try #require(baselineByName[check.name], "\(check.name) did not run on the baseline")
            if check.info.prediction(on: .baseline, reference: SeriesVersion.v2.effects) == .pass {
                #expect(b.status == .pass || b.status == .skip, "\(check.name) on the baseline: \(b.status) \(b.diagnostics)")
            } else {
                #expect(b.status == .fail, "\(check.name) should fail on the baseline, got \(b.status)")
            }
        }
        // The errnos of the issue's table, as the baseline shows them.
        #expect(baselineByName["regmr.p2pmem"]?.errno == "EFAULT")
        #expect(baselineByName["pin.longterm_p2pdma.slow"]?.errno == "EINVAL")
        // WARN_ON_ONCE: the first LONGTERM|P2PDMA pin of the boot (the fast check runs first) carries the splat.
        #expect(baselineByName["pin.longterm_p2pdma.fast"]?.splats.contains { $0.contains("WARNING") && $0.contains("is_valid_gup_args") } == true)
        #expect(baselineByName["kernfs.page_mkwrite_attribute"]?.status == .fail)
        // The real-HCA branch is not reachable in a VM: it says so instead of passing silently.
        #expect(seriesByName["env.p2pmem_provider"]?.status == .pass)

        // The kernel's own selftests: gup_longterm's cases nested and passing on both kernels (its ext4
        // R/W MAP_SHARED cases pass by being refused), gup_test agreeing with the module.
        for run in [seriesByName, baselineByName] {
            let longterm = try #require(run["selftest.gup_longterm"])
            #expect(longterm.status == .pass, "\(longterm.diagnostics)")
            #expect(longterm.subtests.count >= 24)
            #expect(longterm.subtests.contains { $0.name.contains("MAP_SHARED") && $0.name.hasSuffix("with local tmpfile") })
            #expect(longterm.subtests.allSatisfy { $0.status == .pass })
        }
        let gupTest = try #require(seriesByName["selftest.gup_test"])
        #expect(gupTest.subtests.count == 10, "\(gupTest.subtests.map(\.name))")
        #expect(gupTest.subtests.allSatisfy { $0.status == .pass })
        let baselineGupTest = try #require(baselineByName["selftest.gup_test"])
        let longtermP2PDMA = baselineGupTest.subtests.first { $0.name.contains("-L -F 0x400") }
        #expect(longtermP2PDMA?.status == .fail, "gup_test -L FOLL_PCI_P2PDMA pins nothing on the baseline")
        #expect(longtermP2PDMA?.diagnostics.contains { $0.contains("truncated (size: 0)") } == true)
        #expect(!baselineGupTest.diagnostics.contains { $0.contains("disagree") }, "gup_test and the module agree on the baseline too")

        // The series' own test: perftest with --mmap of p2pmem is refused on rxe, with the errno of each kernel.
        let perftest = try #require(seriesByName["perftest.p2pmem"])
        #expect(perftest.status == .pass, "\(perftest.diagnostics)")
        #expect(perftest.diagnostics.contains { $0.contains("Couldn't allocate MR") || $0.contains("failed to create mr") })
        #expect(perftest.diagnostics.filter { $0.contains("returned EREMOTEIO") }.count == 2)
        let basePerftest = try #require(baselineByName["perftest.p2pmem"])
        #expect(basePerftest.status == .fail)
        #expect(basePerftest.diagnostics.filter { $0.contains("returned EFAULT") }.count == 2)
        #expect(seriesByName["perftest.tmpfs"]?.status == .pass)
        #expect(seriesByName["perftest.tmpfs"]?.diagnostics.contains { $0.contains("tmpfs:") && $0.contains("Gb/s") } == true)

        // The slow-path counter proves it counts.
        #expect(seriesByName["pin.fast_path"]?.diagnostics.contains { $0.hasPrefix("positive control:") } == true)
        // kernfs: a write after a read updates mtime only without patch 1.
        #expect(seriesByName["kernfs.mtime_on_write_fault"]?.status == .pass)
        #expect(baselineByName["kernfs.mtime_on_write_fault"]?.status == .fail)
        // Teardown while pinned: the wait is seen and measured, the hung-task report names the unbind.
        let unbind = seriesByName["teardown.unbind_umem_held"]?.diagnostics.joined(separator: "\n") ?? ""
        #expect(unbind.contains("unbind waits for the pin: task") && unbind.contains("state D, in memunmap_pages"), "\(unbind)")
        let hung = seriesByName["teardown.hung_task_reported"]?.diagnostics.joined(separator: "\n") ?? ""
        #expect(hung.contains("the hung-task detector reported the unbinding task") && hung.contains("provoked: INFO: task"), "\(hung)")
        #expect(baselineByName["teardown.unbind_umem_held"]?.errno == "EFAULT")
        // QEMU's device_del while pinned: acpiphp's removal (q35's ACPI hotplug) waits, QEMU deletes the
        // device only after the release, device_add brings p2pmem back; on the baseline the unpinned
        // hot-unplug completes.
        let unplug = seriesByName["teardown.hot_unplug_while_pinned"]?.diagnostics.joined(separator: "\n") ?? ""
        #expect(unplug.contains("driven by acpiphp") && unplug.contains("state D in memunmap_pages") && unplug.contains("no DEVICE_DELETED"), "\(unplug)")
        #expect(unplug.contains("DEVICE_DELETED") && unplug.contains("after the release reached the host"), "\(unplug)")
        #expect(unplug.contains("back with p2pmem published"), "\(unplug)")
        let baseUnplug = baselineByName["teardown.hot_unplug_while_pinned"]
        #expect(baseUnplug?.errno == "EFAULT")
        #expect(baseUnplug?.diagnostics.contains { $0.hasPrefix("with nothing pinned: DEVICE_DELETED") } == true, "\(baseUnplug?.diagnostics ?? [])")
        let mprotect = baselineByName["teardown.mprotect_while_pinned"]?.diagnostics.joined(separator: "\n") ?? ""
        #expect(mprotect.contains("observed never completes") && mprotect.contains("observed EFAULT"), "\(mprotect)")

        // A CI matrix's final job: the same table and verdict from the two run directories alone.
        let single = try String(contentsOf: out.appendingPathComponent("compare.txt"), encoding: .utf8)
        let merged = try p2plab(["report", "--merge", out.appendingPathComponent("series").path, out.appendingPathComponent("baseline").path])
        #expect(merged.status == 0, "report --merge exited \(merged.status)")
        #expect(merged.output.contains(single.trimmingCharacters(in: .newlines)), "the merged table differs from --compare's")
        #expect(merged.output.contains("verdict: PASS"))
        // The same runs as KCIDB, validated by kcidb-io (its own tests skip, saying why, without it).
        let kcidb = try p2plab(["report", "--format", "kcidb", out.appendingPathComponent("baseline").path, out.appendingPathComponent("series").path])
        #expect(kcidb.status == 0)
        #expect(kcidb.output.contains("\"path\" : \"p2plab.regmr.p2pmem\""))
        if kcidbPython != nil {
            #expect(try kcidbValidate(kcidb.output) == nil)
        } else {
            print("kcidb-io not installed: the KCIDB of these runs was not validated (scripts/setup --tools)")
        }
    }

    @Test("kprobes disarmed at run time: pin.fast_path is an ERROR that says so, never a PASS", .timeLimit(.minutes(20)))
    func disarmedProbe() throws {
        let out = try tempDirectory("kprobes-off")
        let result = try p2plab(["test", "--check", "pin.fast_path", "--accel", "tcg", "--output", out.path,
                                 "--guest-prelude", "echo 0 > /sys/kernel/debug/kprobes/enabled"])
        #expect(result.status == 1)
        let run = try loadRun(out)
        let check = try #require(run.tests.first { $0.name == "pin.fast_path" })
        #expect(check.status == .fail)
        #expect(check.directive == "ERROR")
        #expect(check.reason?.contains("kprobes are disarmed") == true, "\(check.reason ?? "")")
    }

    @Test("a kernel without CONFIG_KPROBES: pin.fast_path is an ERROR (opt-in: P2PLAB_E2E_NO_KPROBES=1, a cold build)",
          .enabled(if: ProcessInfo.processInfo.environment["P2PLAB_E2E_NO_KPROBES"] == "1", "set P2PLAB_E2E_NO_KPROBES=1 to build a kernel without kprobes"),
          .timeLimit(.minutes(40)))
    func noKprobesKernel() throws {
        let out = try tempDirectory("no-kprobes")
        let fragment = out.appendingPathComponent("no-kprobes.config")
        try "# CONFIG_KPROBES is not set\n".write(to: fragment, atomically: true, encoding: .utf8)
        let result = try p2plab(["test", "--config", fragment.path, "--check", "pin.fast_path", "--check", "env.module",
                                 "--accel", "tcg", "--output", out.appendingPathComponent("run").path])
        #expect(result.status == 1)
        let run = try loadRun(out.appendingPathComponent("run"))
        let check = try #require(run.tests.first { $0.name == "pin.fast_path" })
        #expect(check.directive == "ERROR")
        #expect(check.reason?.contains("no kprobe on __get_user_pages") == true, "\(check.reason ?? "")")
    }

    @Test("a sanitizer kernel (P2PLAB_E2E_SANITIZE=1: KASAN + lockdep, or a list such as ubsan,kfence,debug-vm; a cold build): test --sanitize runs the teardown and lifecycle checks and a 60 s torture, both pass with no sanitizer report, one verdict",
          .enabled(if: sanitizers != nil, "set P2PLAB_E2E_SANITIZE=1 (or a list of sanitizers) to build and boot a sanitizer kernel"),
          .timeLimit(.minutes(90)))
    func sanitizedTeardown() throws {
        let list = try #require(sanitizers)
        let out = try tempDirectory("sanitize")
        let result = try p2plab(["test", "--sanitize", list, "--check", "teardown.*", "--check", "lifecycle.*",
                                 "--check", "env.*", "--torture", "60", "--torture-seed", "3",
                                 "--accel", "tcg", "--boot-timeout", "300", "--output", out.path])
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.split(separator: "\n").filter { $0.hasPrefix("verdict: ") }.count == 1, "one verdict line")
        #expect(result.output.contains("verdict: PASS: suite PASS") && result.output.contains("; torture PASS (9 passed) (4 workers, 60 s"))
        let run = try loadRun(out)
        #expect(run.leaves.contains { $0.test.name == "teardown.hung_task_reported" && $0.test.status == .pass })
        let torture = try loadRun(out.appendingPathComponent("torture"))
        #expect(torture.tests.count == 9 && torture.tests.allSatisfy { $0.status == .pass }, "\(torture.tests.map { "\($0.name) \($0.status)" })")
        #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("torture/results.ktap").path))
        let summary = try TortureSummary.read(from: out.appendingPathComponent("torture/guest"))
        #expect(summary.operations > 0 && summary.providerCycles > 0)
        #expect(try String(contentsOf: out.appendingPathComponent("verdict.txt"), encoding: .utf8).hasPrefix("verdict: PASS"))
        // The kernel under test carries every sanitizer asked for.
        let record = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("variant.json"))) as? [String: Any]
        let configPath = try #require((record?["manifest"] as? [String: Any])?["config"] as? String)
        let config = try String(contentsOfFile: configPath, encoding: .utf8)
        let options = ["kasan": "CONFIG_KASAN=y", "lockdep": "CONFIG_PROVE_LOCKING=y", "kfence": "CONFIG_KFENCE=y",
                       "ubsan": "CONFIG_UBSAN=y", "debug-vm": "CONFIG_DEBUG_VM=y"]
        for name in list.split(separator: ",") {
            #expect(config.contains(options[String(name)] ?? "?"), "\(name) is not in the kernel's .config")
        }
        for console in [out.appendingPathComponent("console.log"), out.appendingPathComponent("torture/console.log")] {
            let text = (try? String(contentsOf: console, encoding: .utf8)) ?? ""
            let reports = text.split(separator: "\n").filter { line in
                ["BUG: KASAN", "BUG: KFENCE", "UBSAN:", "WARNING: possible", "WARNING: inconsistent lock state", "BUG: sleeping function",
                 "BUG: Bad page", "VM_BUG_ON", "Oops:"].contains { line.contains($0) }
            }
            #expect(reports.isEmpty, "\(console.lastPathComponent): \(reports)")
        }
    }

    @Test("--ablate: each leave-one-out variant fails exactly the checks that depend on the missing patch",
          .timeLimit(.minutes(60)))
    func ablate() throws {
        let out = try tempDirectory("ablate")
        let result = try p2plab(["test", "--ablate", "--accel", "tcg", "--output", out.path])
        #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("ablation.json").path))
        #expect(result.status == 0, "the patch × check matrix disagrees with the expectation table:\n\(result.output)")
        let labels = ["baseline", "without-1", "without-2", "without-3", "without-4", "series"]
        for label in labels {
            #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("\(label)/results.json").path), "\(label) has no results")
        }
        // The leave-one-outs as separate jobs would leave them: merged, the same matrix and verdict.
        let single = try String(contentsOf: out.appendingPathComponent("ablation.txt"), encoding: .utf8)
        let merged = try p2plab(["report", "--merge"] + labels.reversed().map { out.appendingPathComponent($0).path })
        #expect(merged.status == result.status)
        #expect(merged.output.contains(single.trimmingCharacters(in: .newlines)), "the merged matrix differs from --ablate's")
    }

    @Test("--versions all: every bundled version, every cell as its patches' effects predict; the cells where the versions differ",
          .timeLimit(.minutes(45)))
    func versions() throws {
        let out = try tempDirectory("versions")
        let result = try p2plab(["test", "--versions", "all", "--accel", "tcg", "--output", out.path])
        #expect(result.status == 0, "p2plab test --versions all exited \(result.status)")
        #expect(result.output.contains("verdict: PASS"))
        struct Doc: Decodable {
            struct Version: Decodable { var name: String; var cells: [String: String] }
            var versions: [Version]
            var mismatches: [String]
        }
        let doc = try JSONDecoder().decode(Doc.self, from: try Data(contentsOf: out.appendingPathComponent("versions.json")))
        #expect(doc.versions.map(\.name) == ["v2", "v3", "v4", "v5"])
        #expect(doc.mismatches.isEmpty)
        let cells = Dictionary(uniqueKeysWithValues: doc.versions.map { ($0.name, $0.cells) })
        // What kernfs does with an implementation's ->page_mkwrite: refuse, WARN and map, WARN and refuse.
        #expect(cells["v2"]?["kernfs.page_mkwrite_attribute"] == "pass EINVAL")
        #expect(cells["v3"]?["kernfs.page_mkwrite_attribute"] == "pass mapped+WARN")
        #expect(cells["v4"]?["kernfs.page_mkwrite_attribute"] == "pass EINVAL+WARN")
        #expect(cells["v5"]?["kernfs.page_mkwrite_attribute"] == "pass EINVAL+WARN")
        // ->close: refused everywhere, WARNed only by v5.
        #expect(cells["v4"]?["kernfs.close_attribute"] == "pass EINVAL")
        #expect(cells["v5"]?["kernfs.close_attribute"] == "pass EINVAL+WARN")
        // The LONGTERM|P2PDMA|WRITE fast pin: gup-fast serves it on v2 only.
        #expect(cells["v2"]?["pin.fast_path"] == "pass gup-fast")
        #expect(cells["v3"]?["pin.fast_path"] == "pass slow path")
        #expect(cells["v5"]?["pin.fast_path"] == "pass slow path")
    }

    @Test("bisect --in-series names the deliberately broken patch", .timeLimit(.minutes(45)))
    func bisectBrokenSeries() throws {
        let out = try tempDirectory("bisect")
        let broken = repoRoot.appendingPathComponent("Tests/P2PLabTests/Fixtures/broken-series")
        let result = try p2plab(["bisect", "--in-series", "--series", broken.path, "--good-upto", "3",
                                 "--check", "pin.longterm_p2pdma.*", "--accel", "tcg", "--output", out.path])
        #expect(result.status == 0)
        #expect(result.output.contains("first bad patch: 4 mm/gup: refuse FOLL_LONGTERM with FOLL_PCI_P2PDMA again"))
        let log = try String(contentsOf: out.appendingPathComponent("bisect.log"), encoding: .utf8)
        #expect(log.contains("upto-3: good"))
        #expect(log.contains("upto-5: bad"))
    }

    @Test("bisect --tree runs git bisect in a p2plab worktree and names the breaking commit; the user's tree is untouched",
          .timeLimit(.minutes(60)))
    func bisectTree() throws {
        // A "user tree": a clone of the cached pristine source with the broken series as commits.
        let cache = CacheLayout()
        let cacheSource = try FileManager.default.contentsOfDirectory(atPath: cache.sources.path)
            .first { $0.hasPrefix("debian-") }
        let source = try #require(cacheSource.map { cache.sources.appendingPathComponent($0).path }, "run p2plab build first")
        // A stable path beside the cache, so a warm machine reuses p2plab's worktrees and object directory for it.
        let tree = cache.root.deletingLastPathComponent().appendingPathComponent("p2plab-e2e/user-tree")
        func git(_ args: [String], in dir: URL? = nil) throws -> String {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/git")
            process.arguments = (dir.map { ["-C", $0.path] } ?? []) + args
            process.environment = ProcessInfo.processInfo.environment.merging(
                ["GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "t@example.org",
                 "GIT_COMMITTER_DATE": "2024-06-12T10:00:00Z"]) { $1 }
            let pipe = Pipe()
            process.standardOutput = pipe
            try process.run()
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            #expect(process.terminationStatus == 0, "git \(args.joined(separator: " ")) failed")
            return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        if FileManager.default.fileExists(atPath: tree.appendingPathComponent(".git").path) {
            _ = try git(["reset", "-q", "--hard", "origin/p2plab/pristine"], in: tree)
        } else {
            try FileManager.default.createDirectory(at: tree.deletingLastPathComponent(), withIntermediateDirectories: true)
            _ = try git(["clone", "-q", "--shared", "-b", "p2plab/pristine", source, tree.path])
        }
        let broken = repoRoot.appendingPathComponent("Tests/P2PLabTests/Fixtures/broken-series")
        for name in try String(contentsOf: broken.appendingPathComponent("series"), encoding: .utf8).split(separator: "\n") {
            _ = try git(["am", "-q", broken.appendingPathComponent(String(name)).path], in: tree)
        }
        let culprit = try git(["rev-parse", "HEAD~1"], in: tree)
        let headBefore = try git(["rev-parse", "HEAD"], in: tree)
        let out = try tempDirectory("tree-bisect")
        let result = try p2plab(["bisect", "--tree", tree.path, "--good", "HEAD~2", "--bad", "HEAD",
                                 "--check", "pin.longterm_p2pdma.*", "--accel", "tcg", "--output", out.path])
        #expect(result.status == 0)
        #expect(result.output.contains("first bad commit: \(culprit)"))
        #expect(try git(["rev-parse", "HEAD"], in: tree) == headBefore)
        #expect(try git(["status", "--porcelain"], in: tree).isEmpty)
    }

    @Test("the real-hardware steps, rehearsed in the lab guest: p2plab check as root builds the module against /lib/modules/$(uname -r)/build, finds the provider and the device; p2plab parse turns the serial log into the results",
          .timeLimit(.minutes(30)))
    func hardwareRehearsal() throws {
        // Step 1: a kernel with the series, and its build directory as the headers.
        let build = try p2plab(["build"])
        #expect(build.status == 0)
        let latest = CacheLayout().latestBuild.path
        let manifest = try JSONDecoder().decode(BuildManifest.self, from: try Data(contentsOf: URL(fileURLWithPath: latest)))
        #expect(manifest.variant == "series")
        let out = try tempDirectory("rehearsal")
        // The guest mounts its tmpfs on /lib/modules, which must exist in the read-only root it shares
        // with this host (a host without installed kernels may lack it; the directory is kmod's own).
        try FileManager.default.createDirectory(atPath: "/lib/modules", withIntermediateDirectories: true)
        // The guest's root is the host's, read-only: "installing the headers" is a tmpfs on /lib/modules
        // with the build link in it. Then step 3 exactly as the README says, from the checkout.
        let command = """
            rel=$(uname -r); mount -t tmpfs -o mode=0755 tmpfs /lib/modules && mkdir -p /lib/modules/$rel \
            && ln -s \(manifest.objectDir) /lib/modules/$rel/build && cd \(repoRoot.path) && [ "$(id -u)" = 0 ] && ./p2plab check
            """
        let boot = try p2plab(["boot", "--accel", "tcg", "--timeout", "900", "--share", manifest.objectDir, "--share", manifest.sourceDir,
                               // The checkout may sit where the guest has a tmpfs (a clone under /tmp or /root).
                               "--share", repoRoot.path, "--output", out.path, "--exec", command])
        #expect(boot.status == 0, "the guest's p2plab check exited \(boot.status)")
        #expect(boot.output.contains("built the test module for \(manifest.kernelRelease)"), "p2plab check did not build the module itself")
        // Step 4: the serial log, parsed on the host.
        let parsedDirectory = out.appendingPathComponent("parsed")
        let parsed = try p2plab(["parse", out.appendingPathComponent("console.log").path, "--output", parsedDirectory.path])
        #expect(parsed.status == 0, "p2plab parse of the serial log exited \(parsed.status)")
        let run = try loadRun(parsedDirectory)
        // Checks by their own name: the selftest checks carry their cases as nested results.
        let byName = Dictionary(run.tests.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for check in SuiteCatalog.checks {
            let result = try #require(byName[check.name], "\(check.name) is missing from the parsed serial log")
            #expect(result.status == .pass || result.status == .skip, "\(check.name): \(result.status) \(result.summary)")
        }
        #expect(byName["env.module"]?.status == .pass)
        #expect(boot.output.contains("/.cache/p2plab/builds/modules/"), "the module loaded is not one p2plab check built")
        // Auto-discovery: the CMB NVMe as provider, rxe0 as device (virtual DMA, so the P2P path is the module's).
        #expect(byName["env.p2pmem_provider"]?.diagnostics.contains { $0.hasPrefix("provider 0000:") && $0.contains("published true") } == true)
        #expect(byName["env.rdma_device"]?.diagnostics.contains { $0.hasPrefix("device rxe0: virtual DMA") } == true)
        #expect(byName["regmr.p2pmem"]?.errno == "EREMOTEIO")
    }
}

/// The positive controls of crash isolation: a real oops and a real hung task in a real guest.
@Suite("End to end: a crash costs one check (real kernel, real QEMU)", .serialized,
       .enabled(if: endToEnd, "set P2PLAB_INTEGRATION=1 (scripts/test does) to build kernels and boot them"))
struct CrashIsolationEndToEndTests {
    @Test("control.oops is CRASHED with a trace naming the module function; the checks after it PASS after a reboot (exit 7); --stop-on-crash leaves them NOT RUN",
          .timeLimit(.minutes(20)))
    func oops() throws {
        let out = try tempDirectory("crash")
        let result = try p2plab(["test", "--check", "control.oops,env.module,regmr.anon", "--accel", "tcg", "--output", out.path])
        #expect(result.status == 7, "exit \(result.status)")
        let run = try loadRun(out)
        #expect(run.tests.map(\.name) == ["control.oops", "env.module", "regmr.anon"])
        #expect(run.tests.map(\.status) == [.crashed, .pass, .pass])
        #expect(run.tests[0].trace.contains { $0.contains("p2plab_control_oops") }, "\(run.tests[0].trace)")
        // The lean kernel unwinds with ORC: the trace is the unwinder's frames, not `? ` guesses.
        #expect(run.tests[0].traceSummary?.contains("← p2plab_ioctl") == true && run.tests[0].traceSummary?.contains("?") == false,
                "\(run.tests[0].traceSummary ?? "-")")
        #expect(run.tests[0].splats.first?.contains("kernel BUG at") == true)
        #expect(run.metadata["boots"] == "2")
        #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("boot-2/console.log").path))
        #expect(result.output.contains("trace: control.oops: p2plab_control_oops"))

        let stop = try tempDirectory("crash-stop")
        let stopped = try p2plab(["test", "--check", "control.oops,env.module,regmr.anon", "--stop-on-crash", "--accel", "tcg", "--output", stop.path])
        #expect(stopped.status == 7)
        let first = try loadRun(stop)
        #expect(first.tests.map(\.status) == [.crashed, .notRun, .notRun])
        #expect(!FileManager.default.fileExists(atPath: stop.appendingPathComponent("boot-2").path))
    }

    @Test("control.hang: the hung-task report that fires during a later check is charged to control.hang; that later check runs again and PASSes; named alone, the suite waits for the report",
          .timeLimit(.minutes(20)))
    func hang() throws {
        let out = try tempDirectory("hang")
        let later = ["env.module"] + Self.hangBriefLater
        let result = try p2plab(["test", "--check", (["control.hang"] + later).joined(separator: ","), "--accel", "tcg", "--output", out.path])
        #expect(result.status == 7, "exit \(result.status)")
        let run = try loadRun(out)
        let byName = Dictionary(run.tests.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        #expect(byName["control.hang"]?.status == .crashed, "\(byName["control.hang"]?.reason ?? "-")")
        #expect(byName["control.hang"]?.reason?.contains("blocked for more than") == true)
        for name in later {
            #expect(byName[name]?.status == .pass, "\(name): \(byName[name]?.status.label ?? "missing")")
        }

        // No check after it: the suite holds its end until the report is out, so the control still
        // takes the kernel down, in one boot.
        let alone = try tempDirectory("hang-alone")
        let single = try p2plab(["test", "--check", "control.hang", "--accel", "tcg", "--output", alone.path])
        #expect(single.status == 7, "exit \(single.status)")
        let only = try loadRun(alone)
        #expect(only.tests.map(\.status) == [.crashed], "\(only.tests.map { "\($0.name) \($0.status.label) \($0.reason ?? "")" })")
        #expect(only.tests.first?.reason?.contains("blocked for more than") == true)
        #expect(!FileManager.default.fileExists(atPath: alone.appendingPathComponent("boot-2").path), "a second boot with nothing left to run")
    }

    /// The detector reports a task blocked 1-2 s after it blocked (it must see it blocked at two of
    /// its 1 s checks), so for the report to come while a later check runs, the checks after the
    /// control must outlast that: perftest.tmpfs alone (1.1-1.6 s) does not always; these three take
    /// about 3 s.
    static let hangBriefLater = ["perftest.p2pmem", "perftest.tmpfs", "teardown.unbind_umem_held"]

    @Test("control.hang_brief: a hung-task report without a panic, while a later check runs, is charged to the control by PID; that check keeps its PASS; one boot",
          .timeLimit(.minutes(20)))
    func hangWithoutPanic() throws {
        let out = try tempDirectory("hang-brief")
        let later = Self.hangBriefLater
        let result = try p2plab(["test", "--check", (["control.hang_brief"] + later).joined(separator: ","), "--accel", "tcg", "--output", out.path])
        #expect(result.status == 0, "exit \(result.status)")
        let run = try loadRun(out)
        #expect(run.tests.map(\.name) == ["control.hang_brief"] + later)
        #expect(run.tests.map(\.status) == Array(repeating: .pass, count: 1 + later.count))
        #expect(run.metadata["boots"] == nil, "no reboot: nothing panicked")
        #expect(run.consoleFindings.contains { $0.kind == .hungTask }, "the detector did report")
        let provoked = run.tests[0].diagnostics.filter { $0.hasPrefix("provoked: INFO: task ") }
        let during = run.tests.dropFirst().first { provoked.first?.contains("reported while \($0.name) ran; PID") == true }
        #expect(provoked.count == 1 && during != nil, "\(run.tests[0].diagnostics)")
        // The first report is the control's (provoked, above); the detector's later reports of the
        // same task are noted in the checks running then, charged to the control, never as theirs.
        #expect(during != nil && run.tests.dropFirst().allSatisfy { $0.splats.isEmpty })
        #expect(run.tests.dropFirst().contains { $0.diagnostics.contains { $0.hasPrefix("hung task of check 1 control.hang_brief") } })

        // Named alone: the suite waits for the report, which comes with no check running, and is
        // still the control's.
        let alone = try tempDirectory("hang-brief-alone")
        let single = try p2plab(["test", "--check", "control.hang_brief", "--accel", "tcg", "--output", alone.path])
        #expect(single.status == 0, "exit \(single.status)")
        let only = try loadRun(alone)
        #expect(only.tests.map(\.status) == [.pass], "\(only.tests.map { "\($0.name) \($0.status.label) \($0.reason ?? "")" })")
        #expect(only.tests.first?.diagnostics.contains { $0.hasPrefix("provoked: INFO: task ") && $0.contains("while the suite waited for it") } == true,
                "\(only.tests.first?.diagnostics ?? [])")
    }
}

/// --compare with panic_on_warn=1 on v5, whose kernfs patches WARN, against the baseline, whose GUP
/// WARNs on FOLL_LONGTERM|FOLL_PCI_P2PDMA: each side crashes where it WARNs, and only there.
@Suite("End to end: --compare --panic-on-warn (real kernel, real QEMU)", .serialized,
       .enabled(if: endToEnd, "set P2PLAB_INTEGRATION=1 (scripts/test does) to build kernels and boot them"))
struct ComparePanicOnWarnEndToEndTests {
    @Test("v5 --compare --panic-on-warn: the baseline CRASHED in the LONGTERM|P2PDMA pins, v5 in its kernfs WARNs, every other cell as without the flag; PASS, exit 0",
          .timeLimit(.minutes(30)))
    func compare() throws {
        let out = try tempDirectory("compare-pow")
        let checks = "pin.longterm_p2pdma.fast,kernfs.page_mkwrite_attribute,kernfs.close_attribute,regmr.p2pmem,regmr.anon"
        let result = try p2plab(["test", "--series", "v5", "--compare", "--panic-on-warn", "--check", checks, "--accel", "tcg", "--output", out.path])
        #expect(result.status == 0, "exit \(result.status)")
        #expect(result.output.contains("crashes only where panic_on_warn predicts (kernfs.page_mkwrite_attribute, kernfs.close_attribute)"), "\(result.output)")
        let baseline = Dictionary(try loadRun(out.appendingPathComponent("baseline")).tests.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let series = Dictionary(try loadRun(out.appendingPathComponent("series")).tests.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        #expect(baseline["pin.longterm_p2pdma.fast"]?.status == .crashed, "\(baseline["pin.longterm_p2pdma.fast"]?.reason ?? "-")")
        #expect(baseline["pin.longterm_p2pdma.fast"]?.reason?.contains("panic_on_warn") == true)
        #expect(series["pin.longterm_p2pdma.fast"]?.status == .pass)
        for name in ["kernfs.page_mkwrite_attribute", "kernfs.close_attribute"] {
            #expect(series[name]?.status == .crashed, "\(name) on v5: \(series[name]?.status.label ?? "missing")")
            #expect(baseline[name]?.status != .crashed, "\(name) on the baseline does not WARN")
        }
        #expect(baseline["regmr.p2pmem"]?.errno == "EFAULT")
        #expect(series["regmr.anon"]?.status == .pass && baseline["regmr.anon"]?.status == .pass)
    }
}

/// A leaked pin on a p2pmem page: the provider's unbind waits for that page forever. The torture's
/// unbind loop gives up after 60 s and says so in one line; the run ends, it does not hang.
@Suite("End to end: an unbind blocked forever by a leaked p2pmem pin (opt-in: P2PLAB_E2E_MORE=1)", .serialized,
       .enabled(if: endToEnd && moreEndToEnd, "set P2PLAB_E2E_MORE=1 too: about 2 more minutes (the 60 s bound, an incremental build)"))
struct LeakedP2PMemUnbindEndToEndTests {
    @Test("v2 plus a planted leak of P2PDMA pins: torture.provider_cycled fails with 'still blocked after 60 s', the run ends within its bound, exit 1",
          .timeLimit(.minutes(20)))
    func blockedForever() throws {
        let series = try v2Planted(with: "planted-p2pdma-pin-leak.patch", directory: "planted-p2pdma-series")

        let out = try tempDirectory("torture-blocked")
        let started = Date()
        let result = try p2plab(["torture", "--series", series.path, "--seed", "5", "--workers", "2", "--duration", "10",
                                 "--accel", "tcg", "--output", out.path])
        let seconds = Date().timeIntervalSince(started)
        #expect(result.status == LabExit.failed.rawValue, "exit \(result.status)")
        let lines = result.output.split(separator: "\n").filter { $0.hasPrefix("invariant provider_cycled: ") }
        #expect(lines.count == 1 && lines[0].contains("still blocked after 60 s") && lines[0].contains("something keeps a reference to the provider's pages"),
                "\(result.output)")
        let run = try loadRun(out)
        #expect(run.tests.first { $0.name == TortureInvariant.providerCycled.testName }?.status == .fail)
        #expect(run.tests.first { $0.name == TortureInvariant.noLeakedPins.testName }?.status == .fail)
        // Bounded: 10 s of workers, the 60 s unbind bound, the poweroff that the blocked unbind holds up (30 s), and the build and boot.
        #expect(seconds < 10 + 60 + 30 + 240, "took \(Int(seconds)) s")
    }
}

/// Tests that cost CI more than they add every run: opt-in with P2PLAB_E2E_MORE=1.
let moreEndToEnd = ProcessInfo.processInfo.environment["P2PLAB_E2E_MORE"] == "1"

/// The sanitizers of the opt-in sanitizer tests: `P2PLAB_E2E_SANITIZE=1` is KASAN + lockdep, any
/// other value a list as `--sanitize` takes it; nil when unset.
let sanitizers: String? = {
    guard let value = ProcessInfo.processInfo.environment["P2PLAB_E2E_SANITIZE"], !value.isEmpty, value != "0" else { return nil }
    return value == "1" ? "kasan,lockdep" : value
}()

/// decode_stacktrace.sh against a kernel with line tables: a cold build of another config, so opt-in.
@Suite("End to end: a crash decoded to file:line (opt-in: P2PLAB_E2E_DECODE=1, a cold build)", .serialized,
       .enabled(if: endToEnd && ProcessInfo.processInfo.environment["P2PLAB_E2E_DECODE"] == "1",
                "set P2PLAB_E2E_DECODE=1 too: it builds the lab kernel with reduced DWARF (a cold build)"))
struct DecodeEndToEndTests {
    @Test("control.oops on a kernel with DEBUG_INFO_REDUCED: its trace names p2plab_test.c with a line, the table shows it", .timeLimit(.minutes(40)))
    func decodedWithLines() throws {
        let out = try tempDirectory("decode")
        let fragment = repoRoot.appendingPathComponent("Tests/P2PLabTests/Fixtures/debuginfo.config").path
        let result = try p2plab(["test", "--config", fragment, "--check", "control.oops,env.module", "--accel", "tcg", "--output", out.path])
        #expect(result.status == 7, "exit \(result.status)")
        let run = try loadRun(out)
        let oops = try #require(run.tests.first { $0.name == "control.oops" })
        #expect(oops.status == .crashed)
        #expect(oops.traceSummary?.contains("p2plab_test.c:") == true, "\(oops.trace)")
        #expect(!run.diagnostics.contains { $0.hasPrefix("no line info:") })
        #expect(run.tests.first { $0.name == "env.module" }?.status == .pass)
    }
}
