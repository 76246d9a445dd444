import Foundation

/// Every time limit of the lab, in seconds, in one place: no build, boot, check or git command runs
/// without one. The defaults are documented here and nowhere else; `test`, `bisect`, `boot` and
/// `bench` override the ones they expose as options.
public struct LabLimits: Sendable, Codable, Equatable {
    /// QEMU's start until the guest's init is ready.
    public var boot: Double = 120
    /// The whole guest command (the suite) once init is ready.
    public var suite: Double = 900
    /// One check: the suite's watchdog.
    public var check: Double = 120
    /// `make bzImage modules` for one variant (a cold defconfig build on 2 cores takes ~18 min).
    public var build: Double = 3600
    /// One configuration step: a config target, `merge_config.sh`, `olddefconfig`.
    public var configure: Double = 300
    /// The test module against a built kernel.
    public var module: Double = 600
    /// A git command on a kernel tree (checkout, worktree add, recording 86k files).
    public var git: Double = 900
    /// `apt-get download` / `apt-get update` of the source package.
    public var download: Double = 900
    /// Unpacking the source package.
    public var unpack: Double = 900
    /// Waiting for another p2plab run to finish with a checkout this run needs.
    public var cacheLock: Double = 7200
    /// A quick question to a tool (`gcc --version`, `git rev-parse`).
    public var query: Double = 30
    /// A whole `git bisect run`.
    public var bisect: Double = 6 * 3600
    /// A warm-cycle or guest bench boot's command.
    public var benchGuest: Double = 1800
    /// `p2plab boot --exec`'s command once the guest is up.
    public var command: Double = 600
    /// The short probe boot that decides whether KVM works (`--accel auto`).
    public var kvmProbe: Double = 10
    /// Within the probe boot, how long QEMU may go without any kernel output: a working KVM prints
    /// the kernel's first lines well under a second after QEMU starts, a hung one never does.
    public var kvmProbeFirstOutput: Double = 4
    /// After a panic line, how long the console may go on (the trace) before QEMU is stopped.
    public var panicGrace: Double = 3
    /// From the command's end until QEMU must have powered off.
    public var poweroff: Double = 30
    /// One of the kernel's selftest programs in the guest.
    public var selftest: Double = 300
    /// `p2plab torture`'s guest command beyond its `--duration`: setup, the workers' last steps, an
    /// unbind that waits (60 s at most), the rebind and the invariants.
    public var tortureGrace: Double = 240
    /// Decoding one kernel report with the tree's `scripts/decode_stacktrace.sh`.
    public var decode: Double = 60
    /// Boots after the first, per variant, when checks crash or hang the kernel: a kernel that
    /// crashes at every boot stops here, the checks left NOT RUN (a count, not seconds).
    public var reboots: Int = 5
    /// Connecting to QEMU's monitor (QMP), and one command's reply there.
    public var qmp: Double = 10
    /// A hot-unplug or re-add through QEMU's monitor once nothing holds the device: until
    /// DEVICE_DELETED (pciehp, on a native-hotplug port, first waits 5 s after the button press),
    /// or until the re-added device publishes p2pmem again.
    public var hotplug: Double = 60

    public init() {}

    /// The defaults.
    public static let standard = LabLimits()
}
