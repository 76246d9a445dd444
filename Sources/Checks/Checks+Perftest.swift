import Catalog
import Foundation
import LabSupport

extension Suite {
    /// `p2plab check --perftest`: perftest's `ib_write_bw` with its buffer in p2pmem (`--mmap` of
    /// the provider's `p2pmem/allocate`), server and client on this host. Not in the default suite:
    /// it needs a P2P-capable HCA and takes seconds.
    public static let perftestCheck = CheckDefinition("perftest.write_bw_p2pmem") { ctx, rec in
        let device = try ctx.requireRDMA()
        let provider = try ctx.requireProvider()
        if let problem = device.p2pProblem { throw CheckSkip(problem) }
        guard device.isP2PCapable else {
            throw CheckSkip("\(device.name) uses virtual DMA: it refuses p2pmem MRs (EREMOTEIO), so perftest cannot use p2pmem; run on a P2P-capable HCA")
        }
        guard let tool = which("ib_write_bw") else { throw CheckSkip("ib_write_bw not found: apt-get install perftest") }
        var common = [tool, "-d", device.name, "-F", "--report_gbits", "-s", String(BenchGuest.writeMessageBytes),
                      "-D", String(BenchGuest.writeSeconds), "--mmap=\(ctx.sysfs.allocatePath(provider.address))", "-p", "18600"]
        if let gid = BenchGuest.ipv4GIDIndex(sysfs: ctx.sysfs, device: device.name) { common += ["-x", String(gid)] }
        let outcome = WatchdogBox<Result<String, any Error>>()
        let done = DispatchSemaphore(value: 0)
        let server = Command(common), client = Command(common + ["127.0.0.1"])
        Task {
            do {
                outcome.value = .success(try await BenchGuest.runClientAndServer(server: server, client: client, runner: Runner()))
            } catch {
                outcome.value = .failure(error)
            }
            done.signal()
        }
        done.wait()
        switch outcome.value {
        case .success(let output)?:
            guard let result = PerftestOutput.parse(output) else { rec.fail("no result line in ib_write_bw's output: \(output.lastLines(5))"); return }
            rec.note(String(format: "perftest_bw_avg_gbps: %.2f (%d iterations of %d bytes, MTU %@)", result.averageGigabitsPerSecond,
                            result.iterations, result.messageBytes, result.mtu.map(String.init) ?? "?"))
        case .failure(let error)?:
            rec.fail("ib_write_bw with p2pmem buffers failed: \(error)")
        case nil:
            rec.fail("ib_write_bw did not report")
        }
    }
}
