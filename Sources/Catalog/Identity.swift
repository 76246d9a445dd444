/// A patch as the identity matcher sees it: its files and hunks, with whitespace taken out of the
/// changed lines so that a re-indented or whitespace-mangled copy is the same patch.
public struct PatchFingerprint: Sendable, Hashable {
    public struct Hunk: Sendable, Hashable {
        public var file: String
        /// The function the hunk header names (`static bool is_valid_gup_args(…)` → `is_valid_gup_args`).
        public var function: String?
        /// Changed lines, `+` or `-` first, whitespace removed.
        public var added: [String]
        public var removed: [String]

        /// Every changed line, without its sign.
        public var changed: [String] { added + removed }
    }

    public var subject: String
    public var hunks: [Hunk]

    public var files: [String] {
        var seen = Set<String>()
        return hunks.map(\.file).filter { seen.insert($0).inserted }
    }

    /// Parses a patch (`git format-patch` text, or the diff alone).
    public init(text: String, subject: String? = nil) {
        var hunks: [Hunk] = []
        var file: String?
        var found: String?
        var inHeader = true
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        for (index, line) in lines.enumerated() {
            if inHeader, found == nil, line.hasPrefix("Subject: ") {
                var value = String(line.dropFirst("Subject: ".count))
                var next = index + 1
                while next < lines.count, let c = lines[next].first, c == " " || c == "\t" {
                    value += " " + lines[next].trimmed
                    next += 1
                }
                found = PatchFingerprint.stripPrefix(value)
            }
            if line.hasPrefix("diff --git ") {
                inHeader = false
                let path = line.split(separator: " ").last.map(String.init) ?? ""
                file = path.hasPrefix("b/") ? String(path.dropFirst(2)) : path
                continue
            }
            guard let current = file else { continue }
            if line.hasPrefix("@@") {
                hunks.append(Hunk(file: current, function: PatchFingerprint.function(inHunkHeader: line), added: [], removed: []))
                continue
            }
            if line == "-- " || line.hasPrefix("From ") && line.hasSuffix("2001") {
                file = nil
                continue
            }
            guard !hunks.isEmpty, !line.hasPrefix("+++ "), !line.hasPrefix("--- ") else { continue }
            if line.hasPrefix("+") {
                hunks[hunks.count - 1].added.append(PatchFingerprint.squeeze(line.dropFirst()))
            } else if line.hasPrefix("-") {
                hunks[hunks.count - 1].removed.append(PatchFingerprint.squeeze(line.dropFirst()))
            }
        }
        self.subject = subject ?? found ?? "(no subject)"
        self.hunks = hunks
    }

    /// `[PATCH v5 2/4] kernfs: …` → `kernfs: …`.
    static func stripPrefix(_ subject: String) -> String {
        var s = subject.trimmed
        while s.hasPrefix("["), let close = s.firstIndex(of: "]") { s = String(s[s.index(after: close)...]).trimmed }
        return s
    }

    /// The identifier before the first `(` in the text after the second `@@`.
    static func function(inHunkHeader line: String) -> String? {
        let parts = line.components(separatedBy: "@@")
        guard parts.count >= 3 else { return nil }
        let context = parts[2...].joined(separator: "@@")
        guard let paren = context.firstIndex(of: "(") else { return nil }
        let name = context[..<paren].split(whereSeparator: { !($0.isLetter || $0.isNumber || $0 == "_") }).last
        return name.map(String.init)
    }

    static func squeeze<S: StringProtocol>(_ line: S) -> String {
        String(line.filter { !$0.isWhitespace })
    }
}

/// A patch recognised (or not) by what it changes.
public struct IdentifiedPatch: Sendable, Hashable {
    public var subject: String
    /// What the patch does to the kernel's behaviour, as far as the lab knows.
    public var effects: Set<Effect>
    /// The part of the patch no known effect explains (nil: all of it is explained).
    public var unknown: UnknownChange?

    public init(subject: String, effects: Set<Effect>, unknown: UnknownChange? = nil) {
        self.subject = subject
        self.effects = effects
        self.unknown = unknown
    }

    /// `gup LONGTERM|P2PDMA`, `no known effect (changes mm/gup.c)`, joined for one line.
    public var summary: String {
        var parts = effects.sorted().map(\.description)
        if let unknown {
            parts.append("no known effect for changes to \(unknown.files.joined(separator: ", "))"
                         + (unknown.functions.isEmpty ? "" : " (\(unknown.functions.joined(separator: ", ")))"))
        }
        return parts.isEmpty ? "no change to the kernel" : parts.joined(separator: "; ")
    }
}

/// Recognises the patches of "Enable P2PDMA in Userspace RDMA" (any version, any order, any
/// whitespace) by what their hunks change, and names the effect each has.
public enum PatchIdentity {
    /// Identifies one patch from its text.
    public static func identify(text: String, subject: String? = nil) -> IdentifiedPatch {
        identify(PatchFingerprint(text: text, subject: subject))
    }

    public static func identify(_ patch: PatchFingerprint) -> IdentifiedPatch {
        var effects = Set<Effect>()
        /// Indices of hunks an effect explains.
        var explained = Set<Int>()
        var undecided = false
        for recognizer in recognizers {
            switch recognizer(patch) {
            case .none: continue
            case .effect(let effect, let hunks):
                effects.insert(effect)
                explained.formUnion(hunks)
            case .neutral(let hunks):
                explained.formUnion(hunks)
            case .undecided:
                undecided = true
            }
        }
        let rest = patch.hunks.indices.filter { !explained.contains($0) || undecided }.map { patch.hunks[$0] }
        var unknown: UnknownChange?
        if !rest.isEmpty || undecided {
            var seenFiles = Set<String>(), seenFunctions = Set<String>()
            let source = rest.isEmpty ? patch.hunks : rest
            unknown = UnknownChange(
                patch: patch.subject,
                files: source.map(\.file).filter { seenFiles.insert($0).inserted },
                functions: source.compactMap(\.function).filter { seenFunctions.insert($0).inserted })
            if undecided { effects = [] }
        }
        return IdentifiedPatch(subject: patch.subject, effects: effects, unknown: unknown)
    }

    /// What a recogniser found in a patch.
    enum Finding {
        case none
        /// The patch has this effect; these hunks are its doing.
        case effect(Effect, hunks: [Int])
        /// These hunks change nothing the expectations see (a restructured check that does the same).
        case neutral(hunks: [Int])
        /// The patch touches what this recogniser knows, but in a way it cannot name.
        case undecided
    }

    static let recognizers: [@Sendable (PatchFingerprint) -> Finding] = [
        kernfsPageMkwrite, kernfsClose, gupFastZoneDevice, gupLongtermP2PDMA, umemP2PDMA,
    ]

    static func hunks(_ patch: PatchFingerprint, file: String, where predicate: (PatchFingerprint.Hunk) -> Bool) -> [Int] {
        patch.hunks.indices.filter { patch.hunks[$0].file == file && predicate(patch.hunks[$0]) }
    }

    /// kernfs_vm_ops loses `.page_mkwrite = kernfs_vma_page_mkwrite`; the line the patch adds about an
    /// implementation's ->page_mkwrite says what kernfs_fop_mmap() then does with it.
    @Sendable static func kernfsPageMkwrite(_ patch: PatchFingerprint) -> Finding {
        let file = "fs/kernfs/file.c"
        let drops = patch.hunks.contains { $0.file == file && $0.removed.contains(".page_mkwrite=kernfs_vma_page_mkwrite,") }
        guard drops else { return .none }
        let mine = hunks(patch, file: file) { $0.changed.contains { $0.contains("page_mkwrite") } }
        let handling = patch.hunks.filter { $0.file == file }.flatMap(\.added).filter { $0.contains("->page_mkwrite") }
        guard handling.count == 1, let line = handling.first else { return .undecided }
        let warnsOnce = line.contains("WARN_ON_ONCE(")
        let warns = warnsOnce || line.contains("WARN_ON(")
        let refuses = line.hasPrefix("if(")
        switch (warns, warnsOnce, refuses) {
        case (false, _, true): return .effect(.kernfsDropsPageMkwrite(.refused), hunks: mine)
        case (true, false, false): return .effect(.kernfsDropsPageMkwrite(.warnedAndMapped), hunks: mine)
        case (true, true, true): return .effect(.kernfsDropsPageMkwrite(.warnedOnceAndRefused), hunks: mine)
        default: return .undecided
        }
    }

    /// kernfs_fop_mmap()'s refusal of an implementation's ->close gains a WARN. A patch that only
    /// moves an existing WARN (v5 2/4) has no effect of its own there.
    @Sendable static func kernfsClose(_ patch: PatchFingerprint) -> Finding {
        let file = "fs/kernfs/file.c"
        func warns(_ line: String) -> Bool { line.contains("WARN_ON") && line.contains("->close") }
        let touched = hunks(patch, file: file) { $0.changed.contains { $0.contains("->close") } }
        guard !touched.isEmpty else { return .none }
        let added = patch.hunks.filter { $0.file == file }.flatMap(\.added).filter(warns).count
        let removed = patch.hunks.filter { $0.file == file }.flatMap(\.removed).filter(warns).count
        let refusals = patch.hunks.filter { $0.file == file }.flatMap(\.added).filter { $0.contains("->close") }
        guard refusals.allSatisfy({ $0.hasPrefix("if(") }) else { return .undecided }
        if added > removed { return .effect(.kernfsWarnsOnClose, hunks: touched) }
        if added == removed { return .neutral(hunks: touched) }
        return .undecided
    }

    /// gup_fast_folio_allowed() (folio_fast_pin_allowed() before 6.9) returns true for ZONE_DEVICE.
    @Sendable static func gupFastZoneDevice(_ patch: PatchFingerprint) -> Finding {
        let mine = hunks(patch, file: "mm/gup.c") { hunk in
            (hunk.function?.contains("fast") ?? false) && hunk.added.contains { $0.contains("is_zone_device") }
        }
        return mine.isEmpty ? .none : .effect(.gupFastAcceptsZoneDevice, hunks: mine)
    }

    /// is_valid_gup_args() loses its WARN_ON_ONCE refusal of FOLL_LONGTERM with FOLL_PCI_P2PDMA.
    @Sendable static func gupLongtermP2PDMA(_ patch: PatchFingerprint) -> Finding {
        let mine = hunks(patch, file: "mm/gup.c") { hunk in
            let removed = hunk.removed.joined()
            let added = hunk.added.joined()
            return removed.contains("FOLL_LONGTERM") && removed.contains("FOLL_PCI_P2PDMA")
                && !(added.contains("FOLL_LONGTERM") && added.contains("FOLL_PCI_P2PDMA"))
        }
        return mine.isEmpty ? .none : .effect(.gupAllowsLongtermP2PDMA, hunks: mine)
    }

    /// ib_umem_get() ORs FOLL_PCI_P2PDMA into its gup flags.
    @Sendable static func umemP2PDMA(_ patch: PatchFingerprint) -> Finding {
        let mine = hunks(patch, file: "drivers/infiniband/core/umem.c") { hunk in
            hunk.added.contains { $0.contains("gup_flags|=FOLL_PCI_P2PDMA") }
        }
        return mine.isEmpty ? .none : .effect(.umemAsksForP2PDMA, hunks: mine)
    }

    /// The effects (and unknown changes) of a series, in any order: what a kernel carrying all of
    /// `patches` does.
    public static func kernel(carrying patches: [IdentifiedPatch]) -> KernelEffects {
        var effects = Set<Effect>()
        for patch in patches { effects.formUnion(patch.effects) }
        return KernelEffects(effects, unknown: patches.compactMap(\.unknown))
    }
}

/// A version of the series the lab knows, by the effects of its patches.
public struct SeriesVersion: Sendable, Hashable {
    /// `v2` … `v5`.
    public var name: String
    public var effects: KernelEffects

    public static let v2 = SeriesVersion(name: "v2", effects: KernelEffects([
        .kernfsDropsPageMkwrite(.refused), .gupFastAcceptsZoneDevice, .gupAllowsLongtermP2PDMA, .umemAsksForP2PDMA,
    ]))
    public static let v3 = SeriesVersion(name: "v3", effects: KernelEffects([
        .kernfsDropsPageMkwrite(.warnedAndMapped), .gupAllowsLongtermP2PDMA, .umemAsksForP2PDMA,
    ]))
    public static let v4 = SeriesVersion(name: "v4", effects: KernelEffects([
        .kernfsDropsPageMkwrite(.warnedOnceAndRefused), .gupAllowsLongtermP2PDMA, .umemAsksForP2PDMA,
    ]))
    public static let v5 = SeriesVersion(name: "v5", effects: KernelEffects([
        .kernfsWarnsOnClose, .kernfsDropsPageMkwrite(.warnedOnceAndRefused), .gupAllowsLongtermP2PDMA, .umemAsksForP2PDMA,
    ]))

    public static let all: [SeriesVersion] = [v2, v3, v4, v5]
    /// What `p2plab check` asserts when not told otherwise (the version p2plab builds by default).
    public static let defaultVersion = v2

    public static func named(_ name: String) -> SeriesVersion? { all.first { $0.name == name } }
}

extension String {
    fileprivate var trimmed: String {
        var s = Substring(self)
        while let c = s.first, c.isWhitespace { s.removeFirst() }
        while let c = s.last, c.isWhitespace { s.removeLast() }
        return String(s)
    }
}
