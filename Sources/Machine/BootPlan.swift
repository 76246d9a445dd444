import Foundation
import LabSupport

/// A host directory shared read-only into the guest at the same path, because a guest tmpfs
/// (e.g. on /tmp) would otherwise hide it.
public struct GuestShare: Sendable, Equatable {
    public var tag: String
    public var hostPath: String
    public var guestPath: String

    public init(tag: String, hostPath: String, guestPath: String) {
        self.tag = tag
        self.hostPath = hostPath
        self.guestPath = guestPath
    }

    /// The shares needed so every path in `paths` is visible in the guest.
    ///
    /// Paths elsewhere are already visible through the read-only 9p root and need none.
    /// A file is shared through its directory.
    public static func needed(for paths: [String], isDirectory: (String) -> Bool = { FileManager.default.isDirectory(URL(fileURLWithPath: $0)) }) -> [GuestShare] {
        var directories: [String] = []
        for path in paths {
            let clean = URL(fileURLWithPath: path).standardizedFileURL.path
            guard GuestInit.hiddenDirectories.contains(where: { clean == $0 || clean.hasPrefix($0 + "/") }) else { continue }
            let directory = isDirectory(clean) ? clean : URL(fileURLWithPath: clean).deletingLastPathComponent().path
            directories.append(directory)
        }
        // Keep only the outermost of nested directories; one share covers the rest.
        let unique = Array(Set(directories)).sorted()
        let outermost = unique.filter { dir in !unique.contains { $0 != dir && dir.hasPrefix($0 + "/") } }
        return outermost.enumerated().map { GuestShare(tag: "p2plab-x\($0.offset)", hostPath: $0.element, guestPath: $0.element) }
    }
}

/// Everything about one boot that is not the machine: which kernel, how, what to run, where to keep it.
public struct BootPlan: Sendable {
    /// The 9p tag of the host's root, read-only.
    public static let rootTag = "hostroot"
    /// The 9p tag of the run directory's `guest/`, writable.
    public static let resultsTag = "p2plab-results"

    public var kernel: URL
    public var accel: Accelerator
    public var run: RunDirectory
    /// A shell command for `/bin/sh -c` in the guest; nil for an interactive shell on the console.
    public var command: String?
    /// Extra environment for the command (names must be shell variable names).
    public var environment: [String: String]
    /// Read-only shares for host paths a guest tmpfs would hide.
    public var extraShares: [GuestShare]
    /// Appended to the kernel command line.
    public var extraKernelArguments: [String]
    /// The guest command's working directory (a host path, seen read-only); `/` if not visible.
    public var workingDirectory: String
    /// Terminal size for the interactive shell.
    public var terminalSize: (rows: Int, columns: Int)
    /// TERM in the guest.
    public var term: String
    /// The host-measured TSC rate and delay loop a TCG guest need not calibrate; nil under KVM.
    public var tcgTiming: TCGTiming?
    /// The statically linked program init runs for its mounts and rxe0 (`GuestSetupProgram`, a host
    /// path the guest sees before anything is mounted over it); nil, or not executable in the guest:
    /// init runs mount and rdma instead.
    public var guestSetup: String?

    public init(
        kernel: URL, accel: Accelerator, run: RunDirectory, command: String?, environment: [String: String] = [:],
        extraShares: [GuestShare] = [], extraKernelArguments: [String] = [], workingDirectory: String = "/",
        terminalSize: (rows: Int, columns: Int) = (24, 80), term: String = "dumb", tcgTiming: TCGTiming? = nil,
        guestSetup: String? = nil
    ) {
        self.kernel = kernel
        self.accel = accel
        self.run = run
        self.command = command
        self.environment = environment
        self.extraShares = extraShares
        self.extraKernelArguments = extraKernelArguments
        self.workingDirectory = workingDirectory
        self.terminalSize = terminalSize
        self.term = term
        self.tcgTiming = tcgTiming
        self.guestSetup = guestSetup
    }

    public var interactive: Bool { command == nil }

    /// The kernel command line: console and 9p root first, then the machine's, then the extras.
    ///
    /// While the kernel boots, the console prints notices and worse (`loglevel=6`): the ~300 info
    /// lines of a boot cost ~0.15 s under TCG, where the 8250 takes each byte as emulated port I/O.
    /// `sysctl.kernel.printk=7` restores the info level just before init runs, so from init on
    /// every line reaches the console as before (check markers, hung-task reports with their
    /// `task:` lines and traces). A WARNING, BUG, oops or panic while booting still shows: their
    /// headers are warnings or worse and their traces print at the default level (4), and a panic
    /// turns the console fully verbose. An `--append loglevel=7` (later arguments win) prints the
    /// whole boot.
    ///
    /// `no_timer_check` skips probing whether the timer interrupt works (~50 ms under TCG; a
    /// KVM guest kernel sets it itself). Under TCG, `tcgTiming` adds the host-measured TSC rate
    /// and delay loop.
    ///
    /// `rcupdate.rcu_expedited=1`: every synchronize_rcu() is an expedited grace period. Unbinding
    /// or removing the NVMe, killing a pagemap's reference and deleting its disk each wait for
    /// grace periods, which at HZ=100 under TCG take tens of milliseconds apiece; expedited, the
    /// suite's unbind, remove and hot-unplug checks took 0.2-0.4 s less each (a full suite about
    /// 1 s less). The semantics are the same; `p2plab boot --append rcupdate.rcu_expedited=0` turns it off.
    ///
    /// The root is cached (`cache=loose`): it is read-only and the host does not change it under a
    /// boot, and without the cache every program start rereads its libraries over 9p.
    /// The kernel configures eth0 itself (`ip=`), which saves init starting `ip` under TCG.
    public func kernelCommandLine(_ definition: MachineDefinition) -> [String] {
        var arguments = [
            "console=ttyS0", "loglevel=6", "sysctl.kernel.printk=7", "no_timer_check", "rcupdate.rcu_expedited=1",
            "root=\(BootPlan.rootTag)", "rootfstype=9p", "rootflags=trans=virtio,version=9p2000.L,msize=262144,cache=loose", "ro",
            "init=\(run.initScript.path)",
        ]
        if definition.network == .user {
            arguments.append("ip=\(BootPlan.guestAddress)::\(BootPlan.gatewayAddress):255.255.255.0:p2plab:eth0:off")
        }
        if accel == .tcg, let tcgTiming {
            arguments += tcgTiming.kernelArguments
        }
        return arguments + definition.kernelArguments + extraKernelArguments
    }

    /// eth0's address: the one QEMU's user network hands out.
    public static let guestAddress = "10.0.2.15"
    public static let gatewayAddress = "10.0.2.2"
}
