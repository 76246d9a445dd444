import Foundation
import LabSupport

/// The guest's init and fstab: `vm/init.sh` and `vm/fstab` with their `@FIELD@`s filled in for one boot.
///
/// Guest conventions (what a command running in the guest can rely on):
/// - `$P2PLAB_RESULTS` (`/run/p2plab/results`) is the run directory's `guest/` on the host, writable;
///   files written there land in the run directory.
/// - `$P2PLAB_GUEST` is `1`; `HOME` is `/root`; /root, /tmp, /run, /var/tmp, /var/log, /dev/shm are tmpfs.
/// - The command runs as `/bin/sh -c COMMAND` with stdin from /dev/null and stdout/stderr on the console;
///   init writes its exit status to `$P2PLAB_RESULTS/exit-status` and prints `p2plab-init: exit status N`.
/// - `eth0` is up as 10.0.2.15/24 (kernel `ip=`), and `rxe0` runs on it when the machine has `rxe`.
public struct GuestInit: Sendable {
    /// The line init prints once the machine is ready and the command is about to start.
    public static let readyMarker = "p2plab-init: ready"
    /// The start of the line init prints after the command, before powering off.
    public static let exitMarker = "p2plab-init: exit status"
    /// Directories init covers with tmpfs, hiding the host's contents there (the fstab in vm/init.sh).
    public static let hiddenDirectories = ["/tmp", "/run", "/var/tmp", "/var/log", "/root", "/dev/shm"]

    public var template: String
    public var fstabTemplate: String

    public init(template: String, fstabTemplate: String) {
        self.template = template
        self.fstabTemplate = fstabTemplate
    }

    /// Reads the templates from the checkout's `vm/init.sh` and `vm/fstab`.
    public static func load(vmDirectory: URL) throws -> GuestInit {
        func read(_ name: String) throws -> String {
            let url = vmDirectory.appendingPathComponent(name)
            guard let text = try? String(contentsOf: url, encoding: .utf8) else {
                throw MachineError.unusablePath(path: url.path, reason: "the guest \(name) template is missing from the checkout")
            }
            return text
        }
        return GuestInit(template: try read("init.sh"), fstabTemplate: try read("fstab"))
    }

    /// The fstab for `plan`: vm/fstab plus read-only shares of host paths a tmpfs would hide.
    public func renderFstab(plan: BootPlan) throws -> String {
        // fstab fields are space-separated, so spaces in paths are written \040.
        let mounts = plan.extraShares.map {
            "\($0.tag)  \(GuestInit.fstabEscape($0.guestPath))  9p  trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro,X-mount.mkdir 0 0"
        }.joined(separator: "\n")
        return try GuestInit.fill(fstabTemplate, name: "vm/fstab", fields: [("@MOUNTS@", mounts)])
    }

    /// The init script for `plan` on `definition`.
    public func render(plan: BootPlan, definition: MachineDefinition) throws -> String {
        for name in plan.environment.keys where !GuestInit.isVariableName(name) {
            throw MachineError.badEnvironmentName(name)
        }
        let environment = plan.environment.sorted { $0.key < $1.key }
            .map { "export \($0.key)=\(shellQuote($0.value))" }.joined(separator: "\n")
        let fields: [(String, String)] = [
            ("@TERM@", shellQuote(plan.term)),
            ("@ENVIRONMENT@", environment),
            ("@FSTAB@", shellQuote(plan.run.fstab.path)),
            ("@SETUP@", shellQuote(plan.guestSetup ?? "")),
            ("@SETUP_RXE@", definition.rxe ? " rxe0 eth0" : ""),
            ("@RXE@", definition.rxe ? "rdma link add rxe0 type rxe netdev eth0" : ": this machine has no rxe"),
            ("@DIRECTORY@", shellQuote(plan.workingDirectory)),
            ("@COMMAND@", shellQuote(plan.command ?? "")),
            ("@ROWS@", String(plan.terminalSize.rows)),
            ("@COLUMNS@", String(plan.terminalSize.columns)),
        ]
        return try GuestInit.fill(template, name: "vm/init.sh", fields: fields)
    }

    static func fill(_ template: String, name: String, fields: [(String, String)]) throws -> String {
        var text = template
        for (field, value) in fields {
            guard text.contains(field) else {
                throw MachineError.unusablePath(path: name, reason: "the template lacks \(field)")
            }
            text = text.replacingOccurrences(of: field, with: value)
        }
        return text
    }

    static func fstabEscape(_ path: String) -> String {
        path.replacingOccurrences(of: "\\", with: "\\134").replacingOccurrences(of: " ", with: "\\040")
            .replacingOccurrences(of: "\t", with: "\\011")
    }

    static func isVariableName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first == "_" || (first.isASCII && CharacterSet.letters.contains(first)) else {
            return false
        }
        return name.unicodeScalars.allSatisfy { $0 == "_" || ($0.isASCII && CharacterSet.alphanumerics.contains($0)) }
    }
}
