import Foundation
import LabSupport

/// The files of one boot, all in one directory the user can inspect afterwards.
public struct RunDirectory: Sendable, Equatable {
    public var url: URL

    public init(_ url: URL) { self.url = url.standardizedFileURL }

    /// A fresh directory under the cache's `runs/`, named by time and machine so `ls` sorts them.
    public static func fresh(in cache: CacheLayout = CacheLayout(), machine: String, now: Date = Date()) -> RunDirectory {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd-HHmmss"
        let stamp = formatter.string(from: now)
        let suffix = String(UInt32.random(in: 0..<0x10000), radix: 16)
        return RunDirectory(cache.runs.appendingPathComponent("\(stamp)-\(machine)-\(suffix)"))
    }

    /// Everything the serial console printed (written by QEMU itself, so it survives us).
    public var console: URL { url.appendingPathComponent("console.log") }
    /// QEMU's own stdout and stderr.
    public var qemuLog: URL { url.appendingPathComponent("qemu.log") }
    /// The QEMU command line, shell-quoted, so the boot can be repeated by hand.
    public var qemuCommandLine: URL { url.appendingPathComponent("qemu-cmdline.sh") }
    /// The generated guest init (the guest reads it through the read-only 9p root).
    public var initScript: URL { url.appendingPathComponent("init") }
    /// The guest's mount table, read by init's `mount -a`.
    public var fstab: URL { url.appendingPathComponent("fstab") }
    /// What the guest wrote: shared writable as `p2plab-results`, `$P2PLAB_RESULTS` in the guest.
    public var guest: URL { url.appendingPathComponent("guest") }
    /// The exit status of the guest's command, written by init.
    public var exitStatus: URL { guest.appendingPathComponent("exit-status") }
    public var manifest: URL { url.appendingPathComponent("manifest.json") }
    /// Every QMP line sent and received, with the host's seconds since QEMU started.
    public var qmpLog: URL { url.appendingPathComponent("qmp.log") }
    /// The checks' requests to the host and its responses (`HostChannel`), in the results share.
    public var hostChannel: HostChannel { HostChannel(directory: guest.appendingPathComponent(HostChannel.directoryName)) }

    /// QEMU's QMP socket: `qmp.sock` in the run directory, or, when that path is too long for a
    /// Unix socket address (108 bytes), one in the temporary directory named after the run.
    public var qmpSocket: String {
        let inside = url.appendingPathComponent("qmp.sock").path
        if inside.utf8.count < 100 { return inside }
        let name = "p2plab-qmp-\(SHA256.hex(url.path).prefix(16)).sock"
        return FileManager.default.temporaryDirectory.appendingPathComponent(name).path
    }

    /// The sparse namespace image of an NVMe device.
    public func image(for device: MachineDefinition.NVMe) -> URL {
        url.appendingPathComponent("\(device.id).img")
    }
}
