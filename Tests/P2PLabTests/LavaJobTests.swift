import Foundation
import Machine
import Testing
@testable import P2PLab

/// Debian's lava-common (LAVA's own job schema) for the system Python, as `scripts/setup --tools` installs it.
let lavaSchemaAvailable: Bool = {
    guard FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") else { return false }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
    process.arguments = ["-c", "import yaml, lava_common.schemas"]
    process.standardError = FileHandle.nullDevice
    guard (try? process.run()) != nil else { return false }
    process.waitUntilExit()
    return process.terminationStatus == 0
}()

/// LAVA's validator (`lava_common.schemas.validate`, strict): nil when the job is valid, else why not.
func lavaValidate(_ yaml: String) throws -> String? {
    let result = try runTool("/usr/bin/python3", ["-c", """
        import sys, yaml
        from lava_common.schemas import validate
        job = yaml.safe_load(sys.stdin)
        validate(job, strict=True)
        print("valid LAVA job:", job["device_type"], [next(iter(a)) for a in job["actions"]])
        """], input: yaml)
    print(result.output.trimmingCharacters(in: .whitespacesAndNewlines))
    return result.status == 0 ? nil : result.output
}

func labMachine() throws -> MachineDefinition {
    try MachineDefinition.load(named: "lab", vmDirectory: repoRoot.appendingPathComponent("vm"))
}

func boardJob() -> LavaJob {
    LavaJob(deviceType: "x86-connectx", kernelURL: "https://lab.example.org/p2plab/bzImage",
            modulesURL: "https://lab.example.org/p2plab/modules.tar.xz", rootfsURL: "https://lab.example.org/debian-12-nfsroot.tar.xz",
            p2plabRepository: "https://example.org/p2plab.git", p2plabRevision: "main", checks: ["regmr.*", "pin.*"],
            name: "p2plab on x86-connectx")
}

func qemuJob() throws -> LavaJob {
    var job = boardJob()
    job.deviceType = "qemu"
    job.rootfsURL = "https://lab.example.org/debian-12-p2plab.img"
    job.machine = try labMachine()
    job.namespaceURLs = ["nvme0": "https://lab.example.org/zero-256M.img", "nvme1": "https://lab.example.org/zero-256M.img"]
    return job
}

@Suite("p2plab lava-job")
struct LavaJobTests {
    @Test("the board job deploys kernel, modules and root over TFTP, boots, and runs p2plab check")
    func boardShape() {
        let text = boardJob().document.render()
        #expect(text.hasPrefix("device_type: \"x86-connectx\"\n"))
        #expect(text.contains("    to: \"tftp\"\n"))
        #expect(text.contains("url: \"https://lab.example.org/p2plab/modules.tar.xz\"\n      compression: \"xz\""))
        #expect(text.contains("method: \"grub\""))
        #expect(text.contains("./p2plab check $MODULE_ARGS --filter 'regmr.*' --filter 'pin.*' --results"))
        #expect(text.contains("lava-test-case \\\"$name\\\" --result \\\"$result\\\""))
    }

    @Test("the QEMU variant carries the lab machine's switch and CMB NVMe from vm/lab.json")
    func qemuShape() throws {
        let text = try qemuJob().document.render()
        #expect(text.hasPrefix("device_type: \"qemu\"\n"))
        #expect(text.contains("  machine: \"q35\"\n  cpu: \"qemu64,+rdrand\"\n  memory: 2048\n"))
        #expect(text.contains("- \"-device x3130-upstream,id=sw0-up,bus=sw0-rp\""))
        #expect(text.contains("- \"-device nvme,id=nvme0,serial=p2plab-cmb,drive=nvme0-ns,bus=sw0-dp0,cmb_size_mb=64\""))
        #expect(text.contains("image_arg: \"-blockdev driver=raw,node-name=nvme0-ns,cache.no-flush=on,file.driver=file,file.filename={nvme0}\""))
        #expect(text.contains("nvme.use_cmb_sqes=0"))
    }

    @Test("LAVA's own schema accepts the board job and the QEMU job", .enabled(if: lavaSchemaAvailable,
          "Debian's lava-common is not installed: run scripts/setup --tools, as .ci/run does"),
          arguments: ["board", "qemu", "ipxe", "u-boot"])
    func validatedByLAVA(_ kind: String) throws {
        var job = kind == "qemu" ? try qemuJob() : boardJob()
        if kind == "ipxe" || kind == "u-boot" { job.bootMethod = kind }
        let verdict = try lavaValidate(job.document.render())
        #expect(verdict == nil, "LAVA rejects the \(kind) job: \(verdict ?? "")")
    }

    @Test("LAVA's schema is alive: it rejects a job without timeouts", .enabled(if: lavaSchemaAvailable,
          "Debian's lava-common is not installed: run scripts/setup --tools"))
    func validatorRejects() throws {
        let text = boardJob().document.render()
        let broken = text.replacingOccurrences(of: "timeouts:\n  job:\n    minutes: 90\n", with: "timeouts:\n")
        #expect(broken != text)
        #expect(try lavaValidate(broken) != nil)
    }

    @Test("the test definition turns each KTAP result line into lava-test-case with its outcome")
    func ktapToTestCases() throws {
        let dir = try scratch("lava-ktap")
        defer { try? FileManager.default.removeItem(at: dir) }
        try """
            KTAP version 1
            1..4
            # provider: 0000:03:00.0
            ok 1 env.p2pmem_provider
            # errno: EREMOTEIO
            not ok 2 regmr.p2pmem
            ok 3 perftest.write_bw_p2pmem # SKIP rxe0 uses virtual DMA
            not ok 4 pin.longterm_p2pdma.fast # TIMEOUT
            """.write(to: dir.appendingPathComponent("results.ktap"), atomically: true, encoding: .utf8)
        // LAVA's helper, recorded: what the job would report.
        let bin = dir.appendingPathComponent("bin")
        try FileManager.default.createDirectory(at: bin, withIntermediateDirectories: true)
        try "#!/bin/sh\necho \"$*\" >> \"$RESULTS/cases\"\n".write(to: bin.appendingPathComponent("lava-test-case"), atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: bin.appendingPathComponent("lava-test-case").path)
        let steps = boardJob().runSteps.filter { $0.contains("lava-test-case") }
        #expect(steps.count == 2)
        let script = "export RESULTS=\(dir.path) PATH=\(bin.path):$PATH\n" + steps.joined(separator: "\n")
        let result = try runTool("/bin/sh", ["-c", script])
        #expect(result.status == 0, "\(result.output)")
        let cases = try String(contentsOf: dir.appendingPathComponent("cases"), encoding: .utf8)
        #expect(cases == """
            env.p2pmem_provider --result pass
            regmr.p2pmem --result fail
            perftest.write_bw_p2pmem --result skip
            pin.longterm_p2pdma.fast --result fail
            p2plab-suite-ran --result pass

            """)
    }

    @Test("YAML scalars are quoted so that any text survives")
    func yamlQuoting() {
        let node = YAMLNode.map([("a", .string("x: \"y\" # z\\")), ("b", .list([.int(1), .bool(true)])), ("c", .map([]))])
        #expect(node.render() == "a: \"x: \\\"y\\\" # z\\\\\"\nb:\n- 1\n- true\nc: {}\n")
    }
}
