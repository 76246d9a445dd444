import Catalog
/// The suite: every check of `SuiteCatalog`, in its order, with its body. Lifecycle checks come
/// last because unbinding the provider disturbs everything that uses it.
public enum Suite {
    /// Every body, by name.
    static let bodies: [String: CheckDefinition] = {
        let all = envChecks + regMRChecks + pinChecks + umemChecks + kernfsChecks + fsChecks + oracleChecks
            + selftestChecks + perftestChecks + lifecycleChecks + teardownChecks + hotplugChecks + controlChecks
        return Dictionary(all.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
    }()

    public static let checks: [CheckDefinition] = SuiteCatalog.checks.map(body)

    /// The default suite and the opt-in controls, which run only when named (`--check control.oops`).
    public static let all: [CheckDefinition] = SuiteCatalog.all.map(body)

    static func body(_ info: CheckInfo) -> CheckDefinition {
        guard let check = bodies[info.name] else { preconditionFailure("no body for the catalog's check \(info.name)") }
        return check
    }

    /// The check named `name`.
    public static func check(named name: String) -> CheckDefinition? {
        checks.first { $0.name == name }
    }

    static let envChecks: [CheckDefinition] = [
        CheckDefinition("env.p2pmem_provider") { ctx, rec in
            let provider = try ctx.requireProvider()
            rec.note("provider \(provider.address): size \(provider.size), available \(provider.available), published \(provider.published)")
            // Distance problems ("not in whitelist", ACS redirect) show up here before any check fails on them.
            for line in P2PDMAHints.fromKernelLog() { rec.note("kernel: \(line)") }
        },
        CheckDefinition("env.rdma_device") { ctx, rec in
            let device = try ctx.requireRDMA()
            rec.note("device \(device.name): \(device.kind.rawValue), \(device.reason)")
        },
        CheckDefinition("env.module") { ctx, rec in
            let module = try ctx.requireModule()
            rec.note("module file \(module.path)")
        },
    ]
}
