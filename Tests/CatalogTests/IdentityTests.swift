import Catalog
import Foundation
import KernelTree
import Testing

func fixture(_ name: String) throws -> URL {
    try #require(Bundle.module.url(forResource: "Fixtures/\(name)", withExtension: nil))
}

/// The 6.12 excerpt the import tests repair against: one copy, kept with KernelTree's tests.
let kernelTreeExcerpt = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("KernelTreeTests/Fixtures/tree-6.12-excerpt")

/// The patches of a version as the lab reads them (cover letters carry no diff and are left out).
func patches(_ version: String) throws -> [Patch] {
    let series: PatchSeries
    if version == "v2" {
        series = try PatchSeries.load(from: try fixture("v2"))
    } else {
        let text = try String(contentsOf: try fixture("\(version).mbx"), encoding: .utf8)
        series = try PatchSeries.parseMbox(text, origin: version)
    }
    return series.patches.filter { $0.text.contains("diff --git ") }
}

func identified(_ version: String) throws -> [IdentifiedPatch] {
    try patches(version).map { PatchIdentity.identify(text: $0.text, subject: $0.subject) }
}

@Suite("Patch identity: every version's patches recognised by what they change")
struct IdentityTests {
    /// Each version's patches in order, with the effect the lab must find in each.
    static let expected: [(String, [Set<Effect>])] = [
        ("v2", [[.kernfsDropsPageMkwrite(.refused)], [.gupFastAcceptsZoneDevice], [.gupAllowsLongtermP2PDMA], [.umemAsksForP2PDMA]]),
        ("v3", [[.kernfsDropsPageMkwrite(.warnedAndMapped)], [.gupAllowsLongtermP2PDMA], [.umemAsksForP2PDMA]]),
        ("v4", [[.kernfsDropsPageMkwrite(.warnedOnceAndRefused)], [.gupAllowsLongtermP2PDMA], [.umemAsksForP2PDMA]]),
        ("v5", [[.kernfsWarnsOnClose], [.kernfsDropsPageMkwrite(.warnedOnceAndRefused)], [.gupAllowsLongtermP2PDMA], [.umemAsksForP2PDMA]]),
    ]

    @Test("every patch of v2…v5 is recognised, nothing is left unexplained", arguments: 0..<expected.count)
    func versions(_ index: Int) throws {
        let (version, effects) = Self.expected[index]
        let found = try identified(version)
        #expect(found.map(\.effects) == effects, "\(version): \(found.map(\.summary))")
        for patch in found { #expect(patch.unknown == nil, "\(version) \(patch.subject): \(patch.summary)") }
        let kernel = PatchIdentity.kernel(carrying: found)
        #expect(kernel == SeriesVersion.named(version)?.effects)
    }

    @Test("the seed's whitespace-mangled v2, repaired by series import, is the same v2 (its patch 2 is missing from the text)")
    func mangledSeed() throws {
        let text = try String(contentsOf: try fixture("seed-001-series-v2.txt"), encoding: .utf8)
        let result = try MangledImport(readFile: MangledImport.treeReader(kernelTreeExcerpt)).run(text: text)
        let found = result.patches.map { PatchIdentity.identify(text: $0.text, subject: $0.subject) }
        #expect(found.map(\.effects) == [[.kernfsDropsPageMkwrite(.refused)], [.gupAllowsLongtermP2PDMA], [.umemAsksForP2PDMA]])
        #expect(found.allSatisfy { $0.unknown == nil })
        // The mangled text itself (whitespace gone, nothing repaired) is recognised too.
        let raw = PatchIdentity.kernel(carrying: text.components(separatedBy: "\nFrom ").map { PatchIdentity.identify(text: $0) })
        #expect(raw.effects == [.kernfsDropsPageMkwrite(.refused), .gupAllowsLongtermP2PDMA, .umemAsksForP2PDMA])
    }

    @Test("order does not matter: a reversed series carries the same effects and predicts the same", arguments: ["v2", "v3", "v4", "v5"])
    func reordered(_ version: String) throws {
        let found = try identified(version)
        let forward = PatchIdentity.kernel(carrying: found)
        let backward = PatchIdentity.kernel(carrying: found.reversed())
        #expect(forward == backward)
        for check in SuiteCatalog.checks {
            for leftOut in found.indices {
                let a = PatchIdentity.kernel(carrying: found.enumerated().filter { $0.offset != leftOut }.map(\.element))
                let b = PatchIdentity.kernel(carrying: found.enumerated().filter { $0.offset != leftOut }.map(\.element).reversed())
                #expect(check.prediction(on: a, reference: forward) == check.prediction(on: b, reference: backward))
            }
        }
    }

    @Test("hunk headers name the function; whitespace does not change a fingerprint")
    func fingerprint() throws {
        let v5 = try patches("v5")
        let print = PatchFingerprint(text: v5[2].text)
        #expect(print.files == ["mm/gup.c"])
        #expect(print.hunks.first?.function == "is_valid_gup_args")
        let squashed = v5[2].text.replacingOccurrences(of: "\t", with: "  ")
        #expect(PatchFingerprint(text: squashed).hunks == print.hunks)
        #expect(print.subject == "mm/gup: allow FOLL_LONGTERM & FOLL_PCI_P2PDMA")
    }

    static let unknownPatch = """
        From 1 Mon Sep 17 00:00:00 2001
        From: Someone <someone@example.org>
        Subject: [PATCH 5/5] mm/gup: rework the pin loop

        ---
        diff --git a/mm/gup.c b/mm/gup.c
        --- a/mm/gup.c
        +++ b/mm/gup.c
        @@ -3300,7 +3300,7 @@ static long __gup_longterm_locked(struct mm_struct *mm,
         \tunsigned long nr_pinned_pages;
        -\tlong rc;
        +\tlong rc = 0;
         \tunsigned int flags;
        -- 
        2.43.0
        """

    static let docsPatch = """
        Subject: [PATCH] Documentation: spell P2PDMA the same everywhere

        diff --git a/Documentation/driver-api/pci/p2pdma.rst b/Documentation/driver-api/pci/p2pdma.rst
        --- a/Documentation/driver-api/pci/p2pdma.rst
        +++ b/Documentation/driver-api/pci/p2pdma.rst
        @@ -1,3 +1,3 @@
        -P2P DMA
        +P2PDMA
        """

    @Test("a patch with no known effect is named, and leaves the cells it could change unpredicted, never pass")
    func unknown() throws {
        let patch = PatchIdentity.identify(text: Self.unknownPatch)
        #expect(patch.effects.isEmpty && patch.unknown != nil)
        #expect(patch.unknown?.files == ["mm/gup.c"])
        #expect(patch.unknown?.functions == ["__gup_longterm_locked"])
        #expect(patch.summary.contains("no known effect"))
        var series = try identified("v4")
        series.append(patch)
        let reference = PatchIdentity.kernel(carrying: series)
        let full = SuiteCatalog.checks.map { ($0.name, $0.prediction(on: reference, reference: reference)) }
        let unpredicted = full.filter { if case .notPredicted = $0.1 { true } else { false } }.map(\.0)
        // Every check whose operations go through mm/gup.c; none of the kernfs attribute ones.
        #expect(unpredicted.contains("pin.fast_path"))
        #expect(unpredicted.contains("regmr.p2pmem"))
        #expect(!unpredicted.contains("kernfs.page_mkwrite_attribute"))
        #expect(!unpredicted.contains("env.module"))
        for (name, prediction) in full where !unpredicted.contains(name) { #expect(prediction == .pass, "\(name)") }
        // A documentation-only patch changes nothing the checks depend on.
        let docs = PatchIdentity.identify(text: Self.docsPatch)
        #expect(docs.effects.isEmpty && docs.unknown != nil)
        let withDocs = PatchIdentity.kernel(carrying: try identified("v4") + [docs])
        #expect(SuiteCatalog.checks.allSatisfy { $0.prediction(on: withDocs, reference: withDocs) == .pass })
    }

    @Test("a kernfs patch that handles ->page_mkwrite in a way no version did is not guessed")
    func undecidedKernfs() throws {
        let v4 = try patches("v4")[0].text
        let odd = v4.replacingOccurrences(of: "if (WARN_ON_ONCE(vma->vm_ops->page_mkwrite))", with: "WARN_ON_ONCE(vma->vm_ops->page_mkwrite);")
        #expect(odd != v4)
        let patch = PatchIdentity.identify(text: odd)
        #expect(patch.effects.isEmpty)
        #expect(patch.unknown?.files == ["fs/kernfs/file.c"])
    }

    @Test("effect tokens round-trip, as p2plab test passes them to the guest")
    func tokens() {
        for version in SeriesVersion.all {
            #expect(KernelEffects(tokens: version.effects.tokens) == version.effects)
        }
        #expect(KernelEffects(tokens: "none") == .baseline)
        #expect(KernelEffects(tokens: "kernfs-drops-page-mkwrite") == nil)
        #expect(KernelEffects(tokens: "umem-p2pdma:x") == nil)
    }
}

@Suite("The bundled versions, rebased onto 6.12")
struct BundledSeriesTests {
    /// kernel/series/ of this checkout.
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../kernel/series").standardizedFileURL

    @Test("each bundled version is recognised as itself", arguments: SeriesVersion.all.map(\.name))
    func bundled(_ name: String) throws {
        let series = try PatchSeries.load(from: Self.directory.appendingPathComponent(name))
        let found = series.patches.map { PatchIdentity.identify(text: $0.text, subject: $0.subject) }
        #expect(found.allSatisfy { $0.unknown == nil }, "\(found.map(\.summary))")
        #expect(PatchIdentity.kernel(carrying: found) == SeriesVersion.named(name)?.effects)
    }
}
