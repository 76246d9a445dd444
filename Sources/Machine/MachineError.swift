import Foundation
import LabSupport

/// What stops p2plab from booting a machine at all (outcomes of a boot are `BootOutcome`, not errors).
public enum MachineError: LabError {
    case unknownMachine(name: String, available: [String])
    case unreadableDefinition(path: String, reason: String)
    case invalidDefinition(name: String, reason: String)
    case noKernel(reason: String)
    case kernelNotFound(path: String)
    case qemuNotFound(executable: String)
    case kvmUnavailable(reason: String)
    case unusablePath(path: String, reason: String)
    case badEnvironmentName(String)

    public var exitCode: LabExit {
        switch self {
        case .qemuNotFound, .noKernel, .kernelNotFound, .kvmUnavailable: .missingDependency
        case .unknownMachine, .unreadableDefinition, .invalidDefinition, .unusablePath, .badEnvironmentName: .usage
        }
    }

    public var description: String {
        switch self {
        case .unknownMachine(let name, let available):
            "no machine definition named \(name): choose one of \(available.joined(separator: ", ")) (files in vm/)"
        case .unreadableDefinition(let path, let reason):
            "cannot read machine definition \(path): \(reason)"
        case .invalidDefinition(let name, let reason):
            "machine \(name): \(reason)"
        case .noKernel(let reason):
            "no kernel to boot: \(reason); run `p2plab build` or pass --kernel PATH (or set P2PLAB_KERNEL)"
        case .kernelNotFound(let path):
            "kernel \(path) does not exist: pass the bzImage of a finished build"
        case .qemuNotFound(let executable):
            "\(executable) not found: install it with `apt-get install qemu-system-x86`"
        case .kvmUnavailable(let reason):
            "--accel kvm: \(reason); use --accel tcg or --accel auto"
        case .unusablePath(let path, let reason):
            "cannot use \(path): \(reason)"
        case .badEnvironmentName(let name):
            "\(name) is not a shell variable name: use letters, digits and _ only"
        }
    }
}
