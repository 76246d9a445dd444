import Catalog
import Foundation
import LabSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What the caller of the suite chose on its command line.
public struct SuiteOptions: Sendable {
    /// `--device NAME`: the RDMA device; the first libibverbs lists otherwise.
    public var device: String?
    /// `--provider BDF`: the p2pmem provider; the first published one otherwise.
    public var provider: PCIAddress?
    /// `--module PATH` or `$P2PLAB_MODULE`: the p2plab_test.ko to load when it is not loaded.
    public var modulePath: String?
    public var sysfs: Sysfs
    public var debugfs: String
    /// `--selftests DIR`: the kernel's mm selftests built for the running kernel.
    public var selftests: String?
    /// Why there are none (the host could not build them).
    public var selftestsProblem: String?
    /// The lab machine's host (from the invocation); nil on real hardware.
    public var host: HostLink?

    public init(
        device: String? = nil, provider: PCIAddress? = nil, modulePath: String? = nil, sysfs: Sysfs = Sysfs(),
        debugfs: String = "/sys/kernel/debug", selftests: String? = nil, selftestsProblem: String? = nil, host: HostLink? = nil
    ) {
        self.host = host
        self.selftests = selftests
        self.selftestsProblem = selftestsProblem
        self.device = device
        self.provider = provider
        self.modulePath = modulePath
        self.sysfs = sysfs
        self.debugfs = debugfs
    }
}

/// Finds what the checks need: the provider (sysfs), the RDMA device (libibverbs, kind from sysfs),
/// the module (libkmod), and explains what is missing in words a skip can carry.
public enum Discovery {
    /// Why no provider is usable, or nil with the provider.
    public static func provider(in sysfs: Sysfs, preferred: PCIAddress?) -> (P2PMemProvider?, String?) {
        let all = sysfs.p2pmemProviders()
        if let preferred {
            guard let found = all.first(where: { $0.address == preferred }) else {
                return (nil, "no p2pmem provider at \(preferred) (--provider); have: \(all.map(\.address.description).joined(separator: ", "))")
            }
            return found.published ? (found, nil) : (nil, "p2pmem of \(preferred) is registered but not published")
        }
        if let chosen = sysfs.chooseProvider() { return (chosen, nil) }
        if let registered = all.first {
            return (nil, "p2pmem of \(registered.address) is registered but not published")
        }
        if !FileManager.default.fileExists(atPath: sysfs.path("bus/pci/devices")) {
            return (nil, "no PCI bus in sysfs (is sysfs mounted?)")
        }
        let said = P2PDMAHints.fromKernelLog()
        return (nil, "no p2pmem provider published: enable CONFIG_PCI_P2PDMA and give an NVMe a CMB (QEMU: -device nvme,cmb_size_mb=64)"
            + (said.isEmpty ? "" : "; the kernel said: " + said.joined(separator: " | ")))
    }

    /// The RDMA device to use, or why there is none. `names` is what libibverbs lists.
    /// `provider` (when known) decides whether a PCI device can do P2PDMA with it; `kernelMessages`
    /// is read only for a PCI device (a software device has no route to check).
    public static func rdmaDevice(
        in sysfs: Sysfs, names: [String], preferred: String?, provider: PCIAddress? = nil, kernelMessages: @autoclosure () -> [String] = []
    ) -> (RDMADeviceInfo?, String?) {
        if let preferred {
            guard names.contains(preferred) else {
                return (nil, "RDMA device \(preferred) not found (--device); libibverbs lists: \(names.isEmpty ? "none" : names.joined(separator: ", "))")
            }
            return (sysfs.rdmaDeviceInfo(preferred, provider: provider, kernelMessages: kernelMessages()), nil)
        }
        if let first = names.first { return (sysfs.rdmaDeviceInfo(first, provider: provider, kernelMessages: kernelMessages()), nil) }
        let inSysfs = sysfs.rdmaDeviceNames()
        if !inSysfs.isEmpty {
            return (nil, "libibverbs sees none of \(inSysfs.joined(separator: ", ")): install the rdma-core providers (ibverbs-providers)")
        }
        return (nil, "no RDMA device: load rdma_rxe: rdma link add rxe0 type rxe netdev eth0")
    }

    /// Opens the module, loading it first from `path` when it is not loaded.
    public static func module(path: String?, debugfs: String) -> (TestModule?, String?) {
        if !TestModule.isLoaded(debugfs: debugfs) {
            guard let path else {
                return (nil, "test module not loaded: pass --module PATH to p2plab_test.ko or set P2PLAB_MODULE")
            }
            do {
                try TestModule.load(path: path)
            } catch {
                return (nil, "\(error)")
            }
        }
        do {
            return (try TestModule(debugfs: debugfs), nil)
        } catch {
            return (nil, "\(error)")
        }
    }

    /// Builds the checks' context for this machine; `devices`, when given, is a listing the caller
    /// began earlier.
    public static func context(
        options: SuiteOptions, holderCommand: [String]? = nil,
        reference: KernelEffects = SeriesVersion.defaultVersion.effects, devices: DeviceListing? = nil,
        log: @escaping @Sendable (String) -> Void = { _ in }
    ) -> CheckContext {
        // Loading the module (finit_module of a file that may come over 9p) and libibverbs' device
        // discovery (it dlopens every installed provider) wait on different things: load beside.
        let loading = Background { Discovery.module(path: options.modulePath, debugfs: options.debugfs) }
        let (provider, providerProblem) = provider(in: options.sysfs, preferred: options.provider)
        let (rdma, rdmaProblem) = rdmaDevice(
            in: options.sysfs, names: devices?.names ?? Verbs.deviceNames(), preferred: options.device, provider: provider?.address,
            kernelMessages: P2PDMAHints.fromKernelLog(limit: 64))
        let (module, moduleProblem) = loading.value
        return CheckContext(
            sysfs: options.sysfs, debugfs: options.debugfs, provider: provider, providerProblem: providerProblem,
            rdma: rdma, rdmaProblem: rdmaProblem, module: module, moduleProblem: moduleProblem,
            holderCommand: holderCommand, reference: reference, selftests: options.selftests,
            selftestsProblem: options.selftestsProblem ?? (options.selftests == nil
                ? "no kernel selftests given: pass --selftests DIR with gup_longterm and gup_test built from this kernel's tree (p2plab test does)"
                : nil),
            host: options.host, log: log)
    }

    /// Run-level diagnostics for the top of the KTAP output: kernel, provider, device, module.
    public static func preamble(_ context: CheckContext) -> [String] {
        var name = utsname()
        uname(&name)
        let release = withUnsafeBytes(of: &name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return [
            "kernel: \(release)",
            "provider: " + (context.provider.map { "\($0.address) (size \($0.size), available \($0.available))" }
                ?? "none (\(context.problem(.provider) ?? ""))"),
            "rdma_device: " + (context.rdma.map { "\($0.name) (\($0.kind.rawValue)\($0.p2pProblem == nil ? "" : ", no P2P route to the provider"))" }
                ?? "none (\(context.problem(.rdmaDevice) ?? ""))"),
            "module: " + (context.module?.path ?? "none (\(context.problem(.module) ?? ""))"),
            "expect: " + (SeriesVersion.all.first { $0.effects == context.reference }.map { "\($0.name): " } ?? "") + context.reference.description,
        ]
    }
}

/// libibverbs' device list, begun on a thread of its own as soon as the suite starts: listing
/// dlopens every installed provider (in the lab machine each one over 9p, some 150 ms in all under
/// TCG), and needs nothing the options say, so it goes on while they are read.
public final class DeviceListing: Sendable {
    private let listing = Background { Verbs.deviceNames() }

    public init() {}

    /// What libibverbs lists (waits for the listing).
    public var names: [String] { listing.value }
}

/// A value computed on a thread of its own, waited for on first use of ``value``.
final class Background<T: Sendable>: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private var result: T?

    init(_ body: @escaping @Sendable () -> T) {
        let thread = Thread { [self] in
            result = body()
            done.signal()
        }
        thread.start()
    }

    /// Waits for the body (once; later reads return the same value).
    var value: T {
        done.wait()
        defer { done.signal() }
        return result!
    }
}
