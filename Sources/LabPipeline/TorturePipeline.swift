import Foundation
import KTAP
import KernelTree
import LabSupport
import Machine

extension VariantPipeline {
    /// `p2plab torture` for one variant: the same kernel and module steps as `run`, then one boot
    /// whose guest runs the torture `plan` instead of the suite; the guest's command may take the
    /// plan's duration plus `LabLimits.tortureGrace`. The summary is nil when the guest wrote none.
    public func torture(_ recipe: KernelRecipe, _ selection: PatchSelection, plan: TorturePlan, machine: MachineDefinition,
                        accel: AccelChoice, expect: String?, prelude: String?, directory: URL,
                        panicOnWarn: Bool = false) async -> (VariantResult, TortureSummary?) {
        let start = Date()
        let label = selection.label
        var result = VariantResult(label: label, selection: selection, runDirectory: directory)
        var summary: TortureSummary?
        do {
            progress("[\(label)] build")
            let kernel = try await self.kernel(recipe, selection)
            let manifest = kernel.manifest
            result.manifest = manifest
            let invocation = GuestInvocation(
                job: .torture(plan), expect: expect, limits: setup.limits, module: kernel.module?.path, kernel: Self.guestKernel(manifest))
            progress("[\(label)] boot \(manifest.kernelRelease) on \(machine.name) (\(accel.rawValue)), torture for \(TorturePlan.number(plan.duration)) s with seed \(plan.seed)")
            let timeout = plan.duration + setup.limits.tortureGrace
            let outcome = try await boot(
                kernel, machine: machine, accel: accel, job: .invocation(invocation), directory: directory, timeout: timeout, prelude: prelude,
                kernelArguments: panicOnWarn ? ["panic_on_warn=1"] : []
            ) { [progress] line in
                let text = line.text.trimmingCharacters(in: .whitespacesAndNewlines)
                if text.hasPrefix("ok ") || text.hasPrefix("not ok ") { progress("[\(label)] \(text)") }
            }
            result.ending = outcome.kind
            let parsed = Self.results(of: outcome, expectedNames: plan.testNames,
                                      metadata: metadata(manifest: manifest, outcome: outcome, machine: machine))
            if outcome.kind == .qemuFailed || outcome.kind == .bootTimeout {
                let limits = ConsoleMonitor.Limits(boot: setup.limits.boot, command: timeout)
                result.problem = "\(outcome.kind.name): \(outcome.problem(limits: limits) ?? "the guest did not come up") (console: \(outcome.console.path))"
                result.problemExit = LabExit(rawValue: outcome.exitCode)
            }
            try RunLoader.write(parsed, into: directory)
            result.run = parsed
            summary = try? TortureSummary.read(from: outcome.run.guest)
        } catch {
            couldNotTest(error, result: &result, label: label)
        }
        result.seconds = Date().timeIntervalSince(start)
        return (result, summary)
    }
}
