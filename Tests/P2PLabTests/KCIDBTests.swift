import Foundation
import KTAP
import KernelTree
import LabSupport
import LabPipeline
import Testing
@testable import P2PLab

/// kcidb-io's validator (PyPI `kcidb-io`, in the tools venv `.ci/run` and `scripts/setup --tools` make).
let kcidbPython: String? = {
    let env = ProcessInfo.processInfo.environment
    let tools = env["P2PLAB_TOOLS"] ?? NSHomeDirectory() + "/.cache/p2plab-tools"
    let python = tools + "/venv/bin/python"
    guard FileManager.default.isExecutableFile(atPath: python) else { return nil }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: python)
    process.arguments = ["-c", "import kcidb_io"]
    process.standardError = FileHandle.nullDevice
    guard (try? process.run()) != nil else { return nil }
    process.waitUntilExit()
    return process.terminationStatus == 0 ? python : nil
}()

/// Validates a KCIDB document with kcidb-io against schema v5.3 exactly; returns the validator's
/// complaint, or nil when valid.
func kcidbValidate(_ json: String) throws -> String? {
    let python = try #require(kcidbPython)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: python)
    process.arguments = ["-c", """
        import json, sys, kcidb_io
        data = json.load(sys.stdin)
        assert kcidb_io.schema.LATEST.major == 5 and kcidb_io.schema.LATEST.minor >= 3, kcidb_io.schema.LATEST
        kcidb_io.schema.V5_3.validate_exactly(data)
        print("valid KCIDB v5.3:", ", ".join(f"{len(data[k])} {k}" for k in ("checkouts", "builds", "tests")))
        """]
    let input = Pipe(), output = Pipe()
    process.standardInput = input
    process.standardOutput = output
    process.standardError = output
    try process.run()
    input.fileHandleForWriting.write(Data(json.utf8))
    try input.fileHandleForWriting.close()
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    print(text.trimmingCharacters(in: .whitespacesAndNewlines))
    return process.terminationStatus == 0 ? nil : text
}

func decodeKCIDB(_ json: String) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
}

func kcidbTests(_ doc: [String: Any]) -> [String: [String: Any]] {
    Dictionary(((doc["tests"] as? [[String: Any]]) ?? []).map { ($0["path"] as! String, $0) }, uniquingKeysWith: { a, _ in a })
}

let crashedKTAP = """
    KTAP version 1
    1..3
    ok 1 env.p2pmem_provider
    # pinning
    """

let crashedConsole = crashedKTAP + """

    [    9.100000] BUG: unable to handle page fault for address: ffff888000000000
    [    9.200000] Kernel panic - not syncing: Fatal exception
    """

@Suite("report --format kcidb")
struct KCIDBTests {
    @Test("a passing run: checkout with the patchset, build, one test per check, statuses and misc")
    func passingRun() throws {
        let parent = try scratch("kcidb-pass")
        defer { try? FileManager.default.removeItem(at: parent) }
        let dir = try makeRunDirectory(parent, .full, ktap: passing)
        let json = try KCIDBReport().render([dir])
        let doc = try decodeKCIDB(json)
        #expect((doc["version"] as? [String: Int]) == ["major": 5, "minor": 3])
        let checkout = try #require((doc["checkouts"] as? [[String: Any]])?.first)
        #expect(checkout["origin"] as? String == "p2plab")
        #expect(checkout["git_commit_hash"] as? String == "b068c38091908d01f87368f0c891530875665b2a")
        #expect((checkout["patchset_files"] as? [[String: String]])?.count == 4)
        // sha256sum *.patch | cut -c-64 | sha256sum | cut -c-64, as KCIDB defines it.
        let files = try RunRecord.load(from: dir)!.appliedPatchFiles(in: dir)
        let perPatch = files.map { KCIDBReport.sha256(try? Data(contentsOf: $0))! + "\n" }.joined()
        #expect(checkout["patchset_hash"] as? String == KCIDBReport.sha256(Data(perPatch.utf8)))
        let build = try #require((doc["builds"] as? [[String: Any]])?.first)
        #expect(build["architecture"] as? String == "x86_64")
        #expect(build["compiler"] as? String == "gcc (Debian 12.2.0-14+deb12u1) 12.2.0")
        #expect(build["config_name"] as? String == "tinyconfig+kvm_guest.config+p2plab.config")
        #expect((build["misc"] as? [String: Any])?["config_hash"] as? String == "ad692860c2c83bb5")
        #expect(build["status"] as? String == "PASS")
        let tests = kcidbTests(doc)
        #expect(Set(tests.keys) == ["p2plab.env.p2pmem_provider", "p2plab.regmr.p2pmem", "p2plab.kernfs.page_mkwrite_attribute"])
        let regmr = try #require(tests["p2plab.regmr.p2pmem"])
        #expect(regmr["status"] as? String == "PASS")
        #expect((regmr["misc"] as? [String: Any])?["errno"] as? String == "EREMOTEIO")
        #expect((regmr["environment"] as? [String: Any])?["comment"] as? String == "QEMU machine lab (vm/lab.json), tcg (forced)")
    }

    @Test("the build's recorded series Message-ID and patchset hash are the checkout's")
    func recordedIdentity() throws {
        let parent = try scratch("kcidb-recorded")
        defer { try? FileManager.default.removeItem(at: parent) }
        let hash = String(repeating: "ab", count: 32)
        let dir = try makeRunDirectory(parent, .full, ktap: passing,
                                       recorded: ["seriesID": "<20240612.cover@example.org>", "patchsetHash": hash])
        let json = try KCIDBReport().render([dir])
        let checkout = try #require((try decodeKCIDB(json)["checkouts"] as? [[String: Any]])?.first)
        #expect(checkout["message_id"] as? String == "20240612.cover@example.org")
        #expect(checkout["patchset_hash"] as? String == hash)
    }

    @Test("a failing run maps not ok to FAIL, keeps the errno; the baseline's patchset hash is empty")
    func failingRun() throws {
        let parent = try scratch("kcidb-fail")
        defer { try? FileManager.default.removeItem(at: parent) }
        let dir = try makeRunDirectory(parent, .baseline, ktap: baselineFailing)
        let json = try KCIDBReport().render([dir])
        let doc = try decodeKCIDB(json)
        let checkout = try #require((doc["checkouts"] as? [[String: Any]])?.first)
        #expect(checkout["patchset_hash"] as? String == "")
        #expect(checkout["patchset_files"] == nil)
        let regmr = try #require(kcidbTests(doc)["p2plab.regmr.p2pmem"])
        #expect(regmr["status"] as? String == "FAIL")
        #expect((regmr["misc"] as? [String: Any])?["errno"] as? String == "EFAULT")
    }

    @Test("a crashed run: the running check FAILs, the rest are MISS, the kernel's panic is a FAIL of its own")
    func crashedRun() throws {
        let parent = try scratch("kcidb-crash")
        defer { try? FileManager.default.removeItem(at: parent) }
        let dir = try makeRunDirectory(parent, .full, ktap: crashedKTAP, console: crashedConsole)
        let json = try KCIDBReport().render([dir])
        let tests = kcidbTests(try decodeKCIDB(json))
        #expect(tests["p2plab.env.p2pmem_provider"]?["status"] as? String == "PASS")
        #expect(tests["p2plab.kernel"]?["status"] as? String == "FAIL")
        #expect((tests["p2plab.kernel"]?["log_excerpt"] as? String)?.contains("Kernel panic") == true)
        #expect(tests.values.contains { $0["status"] as? String == "FAIL" && ($0["path"] as? String) != "p2plab.kernel" }
                || tests.values.contains { $0["status"] as? String == "MISS" })
    }

    @Test("a variant that could not be tested is one MISS with the reason; the build says ERROR")
    func couldNotTest() throws {
        let parent = try scratch("kcidb-miss")
        defer { try? FileManager.default.removeItem(at: parent) }
        let dir = try makeRunDirectory(parent, .full, ktap: "", problem: "boot-timeout: the guest did not reach init in 120 s")
        let json = try KCIDBReport().render([dir])
        let doc = try decodeKCIDB(json)
        let tests = (doc["tests"] as? [[String: Any]]) ?? []
        #expect(tests.count == 1)
        #expect(tests.first?["status"] as? String == "MISS")
        #expect((tests.first?["log_excerpt"] as? String)?.contains("boot-timeout") == true)
    }

    @Test("statuses: pass, fail, crash, timeout, not run, skip")
    func statusMapping() {
        #expect(TestStatus.allCases.map(KCIDBReport.status) == ["PASS", "FAIL", "SKIP", "FAIL", "ERROR", "MISS"])
    }

    @Test("kcidb-io validates the output against schema v5.3", .enabled(if: kcidbPython != nil,
          "kcidb-io not installed (no ~/.cache/p2plab-tools/venv): run scripts/setup --tools, as .ci/run does"),
          arguments: ["passing", "failing", "crashed", "could not test", "two runs"])
    func validatedByKCIDBIO(_ kind: String) throws {
        let parent = try scratch("kcidb-io")
        defer { try? FileManager.default.removeItem(at: parent) }
        let dirs: [URL]
        switch kind {
        case "passing": dirs = [try makeRunDirectory(parent, .full, ktap: passing)]
        case "failing": dirs = [try makeRunDirectory(parent, .baseline, ktap: baselineFailing)]
        case "crashed": dirs = [try makeRunDirectory(parent, .full, ktap: crashedKTAP, console: crashedConsole)]
        case "could not test": dirs = [try makeRunDirectory(parent, .full, ktap: "", problem: "boot-timeout: no init in 120 s")]
        default: dirs = [try makeRunDirectory(parent, .baseline, ktap: baselineFailing), try makeRunDirectory(parent, .full, ktap: passing)]
        }
        let verdict = try kcidbValidate(try KCIDBReport().render(dirs))
        #expect(verdict == nil, "kcidb-io rejects the \(kind) run: \(verdict ?? "")")
    }

    @Test("the validator is alive: it rejects a bad origin and an unknown status", .enabled(if: kcidbPython != nil,
          "kcidb-io not installed (no ~/.cache/p2plab-tools/venv): run scripts/setup --tools, as .ci/run does"))
    func validatorRejects() throws {
        let bad = #"{"version": {"major": 5, "minor": 3}, "tests": [{"id": "p2plab:x", "build_id": "p2plab:y", "origin": "Not An Origin", "status": "OK"}]}"#
        #expect(try kcidbValidate(bad) != nil)
    }

    @Test("several run directories share one checkout per base + patchset; ids stay unique; file links follow --url-base")
    func severalRuns() throws {
        let parent = try scratch("kcidb-many")
        defer { try? FileManager.default.removeItem(at: parent) }
        let dirs = [try makeRunDirectory(parent, .baseline, ktap: baselineFailing), try makeRunDirectory(parent, .full, ktap: passing)]
        let json = try KCIDBReport(origin: "myci", urlBase: "https://ci.example.org/runs").render(dirs)
        let doc = try decodeKCIDB(json)
        #expect((doc["checkouts"] as? [Any])?.count == 2)
        #expect((doc["builds"] as? [Any])?.count == 2)
        let ids = ((doc["tests"] as? [[String: Any]]) ?? []).compactMap { $0["id"] as? String }
        #expect(ids.count == 6 && Set(ids).count == 6 && ids.allSatisfy { $0.hasPrefix("myci:") })
        let files = ((doc["checkouts"] as? [[String: Any]])?.last?["patchset_files"] as? [[String: String]]) ?? []
        #expect(files.first?["url"]?.hasPrefix("https://ci.example.org/runs/series/series/0001-") == true)
    }
}
