import CHostClock
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// What a TCG guest's kernel would otherwise calibrate while it boots, measured on the host.
///
/// Under TCG the guest's TSC is the host's own counter (QEMU reads it for every RDTSC), so its
/// rate is known before the guest starts. Without it, a TCG boot spends up to 0.2 s calibrating:
/// the TSC against the PIT, and against the HPET when the quick PIT calibration fails (as it does
/// on a busy host); and the second CPU's delay loop, which cannot reuse the first CPU's value
/// because qemu64 reports no constant TSC, so `calibrate_delay()` falls back from the timer-based
/// estimate to `calibrate_delay_converge()` (0.16 s of the CPU's bring-up). `tsc_early_khz=` and
/// `lpj=` hand both over. Not for KVM: there kvmclock gives the rate and the calibrations are
/// quick.
public struct TCGTiming: Sendable, Equatable {
    /// The host's TSC rate, in kHz.
    public var tscKilohertz: Int
    /// CONFIG_HZ of the kernel booted (`lpj=` counts TSC cycles per jiffy); nil when unknown,
    /// and then no `lpj=` is passed.
    public var kernelHZ: Int?

    public init(tscKilohertz: Int, kernelHZ: Int?) {
        self.tscKilohertz = tscKilohertz
        self.kernelHZ = kernelHZ
    }

    /// The kernel arguments: `tsc_early_khz=` and, with the kernel's HZ, `lpj=`.
    public var kernelArguments: [String] {
        var arguments = ["tsc_early_khz=\(tscKilohertz)"]
        if let kernelHZ, kernelHZ > 0 {
            arguments.append("lpj=\(tscKilohertz * 1000 / kernelHZ)")
        }
        return arguments
    }

    /// The timing for booting `kernel` under TCG on this host, or nil when the host's TSC rate
    /// cannot be trusted (then the guest calibrates as before).
    public static func forKernel(_ kernel: URL) -> TCGTiming? {
        guard let khz = hostKilohertz else { return nil }
        return TCGTiming(tscKilohertz: khz, kernelHZ: kernelHZ(besideKernel: kernel))
    }

    /// Measured once per process.
    static let hostKilohertz: Int? = measureHostTSC()

    /// The host TSC's rate against CLOCK_MONOTONIC_RAW over 5 ms; nil on a host that is not
    /// x86-64 or whose CPU does not report a constant TSC (`constant_tsc` in /proc/cpuinfo),
    /// or when the result is outside 100 MHz…10 GHz.
    static func measureHostTSC(cpuinfo: String = "/proc/cpuinfo") -> Int? {
        guard p2plab_host_tsc() != 0, hostHasConstantTSC(cpuinfo: cpuinfo),
              let start = sample() else { return nil }
        usleep(5000)
        guard let end = sample(), end.ns > start.ns, end.tsc > start.tsc else { return nil }
        // cycles per nanosecond × 10^6 = kHz
        let khz = Int((end.tsc - start.tsc) * 1_000_000 / (end.ns - start.ns))
        return (100_000...10_000_000).contains(khz) ? khz : nil
    }

    /// A TSC reading and the clock read between two TSC readings at most 2000 cycles apart
    /// (a preemption in between would skew the pair; then it is read again).
    private static func sample() -> (tsc: UInt64, ns: UInt64)? {
        for _ in 0..<100 {
            let before = p2plab_host_tsc()
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC_RAW, &now)
            let after = p2plab_host_tsc()
            if after >= before && after - before < 2000 {
                return (before / 2 + after / 2, UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec))
            }
        }
        return nil
    }

    static func hostHasConstantTSC(cpuinfo: String) -> Bool {
        guard let text = try? String(contentsOfFile: cpuinfo, encoding: .utf8),
              let flags = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return false }
        return flags.split(separator: " ").contains("constant_tsc")
    }

    /// CONFIG_HZ from the kernel config beside a bzImage: `config` in the same directory (a
    /// `p2plab build` output), `.config` there, or the object directory's `.config` for
    /// `arch/x86/boot/bzImage`.
    public static func kernelHZ(besideKernel kernel: URL) -> Int? {
        let directory = kernel.deletingLastPathComponent()
        let candidates = [
            directory.appendingPathComponent("config"), directory.appendingPathComponent(".config"),
            directory.appendingPathComponent("../../../.config").standardizedFileURL,
        ]
        for candidate in candidates {
            guard let text = try? String(contentsOf: candidate, encoding: .utf8) else { continue }
            return hz(inConfig: text)
        }
        return nil
    }

    static func hz(inConfig text: String) -> Int? {
        for line in text.split(separator: "\n") where line.hasPrefix("CONFIG_HZ=") {
            return Int(line.dropFirst("CONFIG_HZ=".count))
        }
        return nil
    }
}
