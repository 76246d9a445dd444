import Foundation

/// What kernfs does, once it no longer wraps `->page_mkwrite`, with an mmap implementation that
/// still sets one in its `vm_ops`: the part of "kernfs: remove page_mkwrite()" that changed between
/// the versions of the series.
public enum PageMkwriteHandling: String, Sendable, Hashable, CaseIterable, Codable, Comparable {
    /// `if (vma->vm_ops && vma->vm_ops->page_mkwrite) goto out_put;`: EINVAL, nothing in the log (v2).
    case refused
    /// `WARN_ON(vma->vm_ops && vma->vm_ops->page_mkwrite);`: a WARNING on every such mmap, which then
    /// goes ahead without the implementation's ->page_mkwrite (v3).
    case warnedAndMapped = "warned-and-mapped"
    /// `if (WARN_ON_ONCE(vma->vm_ops->page_mkwrite)) goto out_put;`: a WARNING (once per boot) and
    /// EINVAL (v4, v5).
    case warnedOnceAndRefused = "warned-once-and-refused"

    public static func < (lhs: Self, rhs: Self) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }

    /// "silently", "WARN but mmap goes ahead", "WARN and refuse".
    public var phrase: String {
        switch self {
        case .refused: "refuses an implementation's ->page_mkwrite silently"
        case .warnedAndMapped: "WARNs on an implementation's ->page_mkwrite but maps it"
        case .warnedOnceAndRefused: "WARNs once on an implementation's ->page_mkwrite and refuses it"
        }
    }
}

/// One behaviour a patch gives the kernel, named by what it does (never by its place in a series):
/// the expectation table is written in terms of these.
public enum Effect: Sendable, Hashable, Codable, Comparable, CustomStringConvertible {
    /// kernfs_vm_ops loses `.page_mkwrite`, so sysfs mappings (p2pmem) need no dirty tracking and
    /// may be pinned long-term; what happens to an implementation's own ->page_mkwrite varies.
    case kernfsDropsPageMkwrite(PageMkwriteHandling)
    /// kernfs_fop_mmap() WARNs when it refuses an implementation's ->close (v5 1/4).
    case kernfsWarnsOnClose
    /// gup_fast_folio_allowed() accepts ZONE_DEVICE folios without looking at their mapping (v2 only).
    case gupFastAcceptsZoneDevice
    /// is_valid_gup_args() no longer refuses (and WARNs on) `FOLL_LONGTERM|FOLL_PCI_P2PDMA`.
    case gupAllowsLongtermP2PDMA
    /// ib_umem_get() adds `FOLL_PCI_P2PDMA` when the device can do P2P DMA.
    case umemAsksForP2PDMA

    /// The effect without its variation, for rules that only ask whether it is there.
    public var kind: EffectKind {
        switch self {
        case .kernfsDropsPageMkwrite: .kernfsDropsPageMkwrite
        case .kernfsWarnsOnClose: .kernfsWarnsOnClose
        case .gupFastAcceptsZoneDevice: .gupFastAcceptsZoneDevice
        case .gupAllowsLongtermP2PDMA: .gupAllowsLongtermP2PDMA
        case .umemAsksForP2PDMA: .umemAsksForP2PDMA
        }
    }

    /// A stable token (`kernfs-drops-page-mkwrite:warned-once-and-refused`), for the command line.
    public var token: String {
        switch self {
        case .kernfsDropsPageMkwrite(let handling): "\(kind.rawValue):\(handling.rawValue)"
        default: kind.rawValue
        }
    }

    public init?(token: String) {
        let parts = token.split(separator: ":", maxSplits: 1).map(String.init)
        guard let kind = parts.first.flatMap(EffectKind.init(rawValue:)) else { return nil }
        switch kind {
        case .kernfsDropsPageMkwrite:
            guard parts.count == 2, let handling = PageMkwriteHandling(rawValue: parts[1]) else { return nil }
            self = .kernfsDropsPageMkwrite(handling)
        case .kernfsWarnsOnClose: self = .kernfsWarnsOnClose
        case .gupFastAcceptsZoneDevice: self = .gupFastAcceptsZoneDevice
        case .gupAllowsLongtermP2PDMA: self = .gupAllowsLongtermP2PDMA
        case .umemAsksForP2PDMA: self = .umemAsksForP2PDMA
        }
        if parts.count == 2 && kind != .kernfsDropsPageMkwrite { return nil }
    }

    public var description: String {
        switch self {
        case .kernfsDropsPageMkwrite(let handling): "kernfs drops page_mkwrite and \(handling.phrase)"
        case .kernfsWarnsOnClose: "kernfs WARNs when it refuses an implementation's ->close"
        case .gupFastAcceptsZoneDevice: "gup-fast accepts ZONE_DEVICE folios"
        case .gupAllowsLongtermP2PDMA: "GUP allows FOLL_LONGTERM|FOLL_PCI_P2PDMA"
        case .umemAsksForP2PDMA: "ib_umem_get asks for FOLL_PCI_P2PDMA on P2P-capable devices"
        }
    }

    public static func < (lhs: Effect, rhs: Effect) -> Bool {
        if lhs.kind != rhs.kind { return lhs.kind < rhs.kind }
        if case .kernfsDropsPageMkwrite(let a) = lhs, case .kernfsDropsPageMkwrite(let b) = rhs { return a < b }
        return false
    }
}

/// An effect without its variation.
public enum EffectKind: String, Sendable, Hashable, CaseIterable, Codable, Comparable {
    case kernfsDropsPageMkwrite = "kernfs-drops-page-mkwrite"
    case kernfsWarnsOnClose = "kernfs-warns-on-close"
    case gupFastAcceptsZoneDevice = "gup-fast-zone-device"
    case gupAllowsLongtermP2PDMA = "gup-longterm-p2pdma"
    case umemAsksForP2PDMA = "umem-p2pdma"

    public static func < (lhs: Self, rhs: Self) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }

    /// Short name for listings.
    public var short: String {
        switch self {
        case .kernfsDropsPageMkwrite: "kernfs-mkwrite"
        case .kernfsWarnsOnClose: "kernfs-close"
        case .gupFastAcceptsZoneDevice: "gup-fast"
        case .gupAllowsLongtermP2PDMA: "gup-longterm"
        case .umemAsksForP2PDMA: "umem"
        }
    }
}

/// A change to the kernel whose effect the lab does not know: the files and functions it touches
/// decide which checks it could change.
public struct UnknownChange: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The patch's subject (or file name).
    public var patch: String
    /// Files the patch changes, as in its diff headers.
    public var files: [String]
    /// Functions its hunk headers name.
    public var functions: [String]

    public init(patch: String, files: [String], functions: [String] = []) {
        self.patch = patch
        self.files = files
        self.functions = functions
    }

    public var description: String {
        "\(patch) (no known effect; changes \(files.joined(separator: ", ")))"
    }
}

/// What a kernel carries, as far as the expectations are concerned: the effects of the patches
/// applied on top of the base, and any applied change with no known effect.
public struct KernelEffects: Sendable, Hashable, Codable, CustomStringConvertible {
    public var effects: Set<Effect>
    public var unknown: [UnknownChange]

    public init(_ effects: Set<Effect> = [], unknown: [UnknownChange] = []) {
        self.effects = effects
        self.unknown = unknown
    }

    /// Plain 6.12: none of the series' effects.
    public static let baseline = KernelEffects()

    public var kinds: Set<EffectKind> { Set(effects.map(\.kind)) }

    public func has(_ kind: EffectKind) -> Bool { effects.contains { $0.kind == kind } }

    /// `kernfs-drops-page-mkwrite:refused,gup-fast-zone-device,…`, sorted; `none` when empty.
    public var tokens: String {
        effects.isEmpty ? "none" : effects.sorted().map(\.token).joined(separator: ",")
    }

    /// Parses `tokens` (the `none` form included). Unknown changes do not travel this way.
    public init?(tokens: String) {
        let text = tokens.trimmingCharacters(in: .whitespaces)
        if text == "none" || text.isEmpty {
            self.init()
            return
        }
        var set = Set<Effect>()
        for token in text.split(separator: ",") {
            guard let effect = Effect(token: token.trimmingCharacters(in: .whitespaces)) else { return nil }
            set.insert(effect)
        }
        self.init(set)
    }

    public var description: String {
        var parts = effects.sorted().map(\.description)
        parts += unknown.map(\.description)
        return parts.isEmpty ? "none of the series' effects" : parts.joined(separator: "; ")
    }
}
