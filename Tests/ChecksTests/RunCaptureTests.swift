import CP2PLabUAPI
import Foundation
import Testing

@testable import Checks

@Suite("The exit holder's spawn: output and status of a child started with posix_spawn")
struct RunCaptureTests {
    func run(_ arguments: [String], size: Int = 4096) -> (rc: Int32, output: String, status: WaitStatus) {
        var argv = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var output = [CChar](repeating: 0, count: size)
        var status: Int32 = 0
        let rc = p2plab_run_capture(&argv, &output, output.count, &status)
        return (rc, output.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }, WaitStatus(status))
    }

    @Test("stdout and stderr both reach the output; the exit status is the child's")
    func outputAndStatus() {
        let result = run(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"])
        #expect(result.rc == 0)
        #expect(result.output == "out\nerr\n")
        #expect(!result.status.exitedCleanly && (result.status.raw >> 8) & 0xff == 3)
    }

    @Test("output past the buffer is read and dropped, so the child never blocks on a full pipe")
    func longOutput() {
        let result = run(["/bin/sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x; exit 0"], size: 16)
        #expect(result.rc == 0 && result.status.exitedCleanly)
        #expect(result.output == String(repeating: "x", count: 15))
    }

    @Test("a program that does not exist: an errno, no child")
    func missing() {
        #expect(run(["/nonexistent/p2plab-exit-holder"]).rc == -ENOENT)
    }
}
