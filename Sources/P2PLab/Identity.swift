import Catalog
import KernelTree

/// A series with each patch recognised by what it changes: what a kernel carrying any selection of
/// it does, as far as the expectation table is concerned.
struct IdentifiedSeries: Sendable {
    var patches: [IdentifiedPatch]

    init(_ series: PatchSeries) {
        patches = series.patches.map { PatchIdentity.identify(text: $0.text, subject: $0.subject) }
    }

    init(patches: [IdentifiedPatch]) { self.patches = patches }

    /// The effects of the patches `selection` applies (numbered from 1, as on the command line).
    func kernel(_ selection: PatchSelection) -> KernelEffects {
        let limit = selection.upto ?? patches.count
        let chosen = patches.enumerated().filter { index, _ in
            index + 1 <= limit && !selection.without.contains(index + 1)
        }.map(\.element)
        return PatchIdentity.kernel(carrying: chosen)
    }

    /// The whole series: what the checks assert.
    var reference: KernelEffects { kernel(.full) }

    /// One line per patch: its number, subject and effect (or that it has none the lab knows).
    var lines: [String] {
        patches.enumerated().map { index, patch in "\(index + 1) \(patch.subject): \(patch.summary)" }
    }

    /// The bundled version with exactly these effects, if any.
    var version: SeriesVersion? {
        let reference = self.reference
        guard reference.unknown.isEmpty else { return nil }
        return SeriesVersion.all.first { $0.effects.effects == reference.effects }
    }
}
