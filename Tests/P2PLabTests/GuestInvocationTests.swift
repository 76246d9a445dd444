import Foundation
@testable import GuestSuite
import LabSupport
import Machine
import Testing

@Suite("The host → guest contract")
struct GuestInvocationTests {
    @Test("an invocation survives the results share: written by the host, read by the guest")
    func roundTrip() throws {
        var limits = LabLimits.standard
        limits.check = 42
        let kernel = GuestInvocation.Kernel(
            release: "6.12.117", variant: "without-2",
            patches: [.init(index: 1, subject: "kernfs: remove page_mkwrite() from vm_operations_struct", contentHash: "abc")])
        for job in [GuestInvocation.Job.suite(checks: ["pin.*", "regmr.p2pmem"]), .bench(only: ["kernel.pin_throughput"], repetitions: 3)] {
            var invocation = GuestInvocation(job: job, limits: limits, module: "/cache/p2plab_test.ko", kernel: kernel, provider: "0000:01:00.0")
            invocation.host = try MachineDefinition.load(named: "lab", vmDirectory: repoRoot.appendingPathComponent("vm")).hostAccess
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-invocation-\(UUID().uuidString.prefix(8))")
            defer { try? FileManager.default.removeItem(at: directory) }
            try invocation.write(into: directory)
            let read = try GuestInvocation.read(from: directory.appendingPathComponent(GuestInvocation.fileName))
            #expect(read == invocation)
        }
    }

    @Test("the guest's fast path for the host's call (`check --invocation FILE`, no parser) starts from what the parser gives")
    func invocationSkipsTheParser() throws {
        let file = "/run/p2plab/results/\(GuestInvocation.fileName)"
        #expect(GuestCommand.Check.invocationFile(["check", "--invocation", file]) == file)
        for other in [["check", "--invocation", file, "--list"], ["check", "--filter", "pin.*"], ["bench", "--invocation", file], ["check", file]] {
            #expect(GuestCommand.Check.invocationFile(other) == nil)
        }
        let parsed = try GuestCommand.Check.parse(["--invocation", file])
        #expect(parsed.request == GuestCommand.Check.Request.defaults)
    }

    @Test("the lab machine offers its NVMe controllers to the checks, by QEMU id and the serial the guest sees")
    func hostAccess() throws {
        let lab = try MachineDefinition.load(named: "lab", vmDirectory: repoRoot.appendingPathComponent("vm"))
        #expect(lab.hostAccess == HostAccess(channel: "host", devices: [
            HostDevice(id: "nvme0", serial: "p2plab-cmb", bus: "sw0-dp0"), HostDevice(id: "nvme1", serial: "p2plab-client", bus: "sw0-dp1"),
        ]))
        #expect(RunDirectory(URL(fileURLWithPath: "/r")).hostChannel.directory.path == "/r/guest/host")
    }

    @Test("how a boot ended is a value, with one name and exit code per case")
    func bootEndings() {
        let kinds: [BootOutcome.Kind] = [.exited(0), .exited(1), .bootTimeout, .commandTimeout, .kernelPanic, .qemuDied, .qemuFailed]
        #expect(Set(kinds.map(\.name)).count == kinds.count - 1)
        #expect(BootOutcome.Kind.exited(1) != .exited(0))
        #expect(kinds.map(\.exitCode) == [0, 1, 121, 124, 122, 123, 120])
    }
}
