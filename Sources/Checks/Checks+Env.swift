/// The suite: every check in the order it runs. Lifecycle checks come last because unbinding the
/// provider disturbs everything that uses it.
public enum Suite {
    public static let checks: [CheckDefinition] =
        envChecks + regMRChecks + pinChecks + umemChecks + kernfsChecks + fsChecks + oracleChecks
        + lifecycleChecks

    /// The check named `name`.
    public static func check(named name: String) -> CheckDefinition? {
        checks.first { $0.name == name }
    }

    static let envChecks: [CheckDefinition] = [
        CheckDefinition("env.p2pmem_provider", "a PCI function publishes p2pmem (the NVMe CMB)", patches: []) { ctx, rec in
            let provider = try ctx.requireProvider()
            rec.note("provider \(provider.address): size \(provider.size), available \(provider.available), published \(provider.published)")
            // Distance problems ("not in whitelist", ACS redirect) show up here before any check fails on them.
            for line in P2PDMAHints.fromKernelLog() { rec.note("kernel: \(line)") }
        },
        CheckDefinition("env.rdma_device", "an RDMA device is present (libibverbs)", patches: []) { ctx, rec in
            let device = try ctx.requireRDMA()
            rec.note("device \(device.name): \(device.kind.rawValue), \(device.reason)")
        },
        CheckDefinition("env.module", "the p2plab_test module is loaded and its debugfs file opens", patches: []) { ctx, rec in
            let module = try ctx.requireModule()
            rec.note("module file \(module.path)")
        },
    ]
}
