import Foundation
import LabSupport

/// Where the kernel source comes from.
public enum SourceSpec: Sendable, Equatable {
    /// Debian's `linux-source-<series>` package, fetched with `apt-get download`.
    case debian(package: String)
    /// A user's git kernel tree; p2plab works in its own worktree at `base`.
    case tree(path: URL, base: String)

    public static let defaultDebian = SourceSpec.debian(package: "linux-source-6.12")
}

/// A kernel source ready for variants: a git checkout that p2plab owns, where the pristine
/// base is one commit and each series variant is a branch on top of it.
public struct PreparedSource: Sendable, Codable, Equatable {
    /// The checkout p2plab builds from (never the user's own checkout).
    public var workdir: URL
    /// The base commit every variant starts from.
    public var baseCommit: String
    /// Human description: `Debian linux-source-6.12 6.12.117-1~deb12u1`, `tree /src/linux at 1a2b3c`.
    public var description: String
    /// Short stable id for cache keys.
    public var id: String
    /// The object-directory key: one per tree (not per commit), so every commit of a user's tree,
    /// bisect steps included, builds incrementally in the same object directory.
    public var objectKey: String

    public init(workdir: URL, baseCommit: String, description: String, id: String, objectKey: String? = nil) {
        self.workdir = workdir
        self.baseCommit = baseCommit
        self.description = description
        self.id = id
        self.objectKey = objectKey ?? id
    }
}

/// What happened to one patch when a variant was prepared.
public struct AppliedPatch: Sendable, Codable, Equatable {
    public enum State: String, Sendable, Codable { case applied, alreadyInTree = "already-in-tree" }
    public var index: Int
    public var name: String
    public var subject: String
    public var author: String
    public var contentHash: String
    public var state: State
    /// The commit `git am` made, for applied patches.
    public var commit: String?
    /// The Message-ID the patch was mailed with, where the series says.
    public var messageID: String? = nil
    /// The SHA-256 of the patch text (the term of KCIDB's patchset hash).
    public var sha256: String? = nil
}

/// A checked-out variant: the base plus a selection of the series.
public struct PreparedVariant: Sendable, Codable, Equatable {
    public var source: PreparedSource
    public var label: String
    public var branch: String
    public var head: String
    public var patches: [AppliedPatch]
    /// The series' id on the list (its cover letter's Message-ID), when known.
    public var seriesID: String? = nil
    /// KCIDB's patchset hash over the patches applied ("" for the baseline).
    public var patchsetHash: String? = nil
}

/// Fetches, unpacks and records kernel sources; applies series variants as branches.
public struct SourceManager: Sendable {
    public let cache: CacheLayout
    public let runner: Runner
    public let progress: @Sendable (String) -> Void
    public let limits: LabLimits

    public init(cache: CacheLayout, runner: Runner, limits: LabLimits = .standard, progress: @escaping @Sendable (String) -> Void) {
        self.cache = cache
        self.runner = runner
        self.limits = limits
        self.progress = progress
    }

    /// The branch a variant of `series` on `baseCommit` lives on: one name per base, series content
    /// and selection, so a changed series never reuses a stale branch.
    public static func branch(baseCommit: String, series: PatchSeries, selection: PatchSelection) -> String {
        let key = fnv1a64Hex([baseCommit, series.contentHash, selection.label].joined(separator: "|")).prefix(10)
        return "p2plab/\(selection.label)-\(key)"
    }

    /// The record of a variant checked out earlier (its branch, head and patches), if its branch
    /// still points where it did. Reads only: nothing is checked out.
    public func recordedVariant(_ source: PreparedSource, series: PatchSeries, selection: PatchSelection) async throws -> PreparedVariant? {
        let branch = Self.branch(baseCommit: source.baseCommit, series: series, selection: selection)
        let git = Git(directory: source.workdir, runner: runner)
        guard let data = try? Data(contentsOf: variantRecord(source, branch: branch)),
              var variant = try? JSONDecoder().decode(PreparedVariant.self, from: data),
              let head = try await git.revParse("refs/heads/\(branch)"), variant.head == head else { return nil }
        variant.source = source
        return variant
    }

    func variantRecord(_ source: PreparedSource, branch: String) -> URL {
        cache.builds.appendingPathComponent("variants/\(source.id)-\(branch.replacingOccurrences(of: "/", with: "_")).json")
    }

    /// The Debian source as recorded in the cache earlier, or nil; downloads and unpacks nothing.
    public func preparedDebian(package: String = "linux-source-6.12") async throws -> PreparedSource? {
        guard let deb = debPackage(package) else { return nil }
        let (id, description) = Self.debianIdentity(deb: deb, package: package)
        let dir = cache.sources.appendingPathComponent(id)
        guard FileManager.default.fileExists(atPath: dir.appendingPathComponent(".git").path),
              let base = try await Git(directory: dir, runner: runner).revParse("refs/heads/p2plab/pristine") else { return nil }
        return PreparedSource(workdir: dir, baseCommit: base, description: description, id: id)
    }

    func debPackage(_ package: String) -> String? {
        ((try? FileManager.default.contentsOfDirectory(atPath: cache.downloads.path)) ?? [])
            .filter { $0.hasPrefix(package + "_") && $0.hasSuffix(".deb") }.sorted().last
    }

    /// linux-source-6.12_6.12.117-1~deb12u1_all.deb → (debian-6.12.117-1_deb12u1, Debian linux-source-6.12 6.12.117-1~deb12u1)
    static func debianIdentity(deb: String, package: String) -> (id: String, description: String) {
        let version = deb.split(separator: "_").dropFirst().first.map(String.init) ?? "unknown"
        return ("debian-" + version.replacingOccurrences(of: "~", with: "_"), "Debian \(package) \(version)")
    }

    /// Prepares `spec` for building: downloads/unpacks/records the Debian source once, or makes
    /// a worktree of a user's tree at `base`.
    public func prepare(_ spec: SourceSpec) async throws -> PreparedSource {
        switch spec {
        case .debian(let package): try await prepareDebian(package: package)
        case .tree(let path, let base): try await prepareTree(path: path, base: base)
        }
    }

    func prepareDebian(package: String) async throws -> PreparedSource {
        let fm = FileManager.default
        try fm.ensureDirectory(cache.downloads)
        var deb = debPackage(package)
        if deb == nil {
            guard which("apt-get") != nil else { throw BuildError.aptMissing }
            progress("source: apt-get download \(package)")
            var r = try await runner.capture(Command(["apt-get", "download", package], in: cache.downloads.path), timeout: limits.download)
            if !r.succeeded && geteuid() == 0 {
                // A machine whose package lists were never fetched (or are stale) knows no such package yet.
                progress("source: apt-get update, then download again")
                _ = try? await runner.capture(Command(["apt-get", "update", "-qq"]), timeout: limits.download)
                r = try await runner.capture(Command(["apt-get", "download", package], in: cache.downloads.path), timeout: limits.download)
            }
            guard r.succeeded else { throw BuildError.sourceDownload(detail: (r.standardError + r.standardOutput).lastLines(5)) }
            deb = debPackage(package)
        }
        guard let deb else { throw BuildError.sourceDownload(detail: "no \(package)_*.deb in \(cache.downloads.path)") }
        let (id, description) = Self.debianIdentity(deb: deb, package: package)
        let dir = cache.sources.appendingPathComponent(id)
        let git = Git(directory: dir, runner: runner)
        if fm.fileExists(atPath: dir.appendingPathComponent(".git").path), let base = try await git.revParse("refs/heads/p2plab/pristine") {
            return PreparedSource(workdir: dir, baseCommit: base, description: description, id: id)
        }
        // Unpack into a scratch directory and move it into place only when complete, so an
        // interrupted first run never leaves a half-unpacked tree that looks usable.
        progress("source: unpacking \(deb) (once; about a minute)")
        try fm.ensureDirectory(cache.sources)
        let scratch = cache.sources.appendingPathComponent(".unpack-\(id)")
        try? fm.removeItem(at: scratch)
        try fm.ensureDirectory(scratch)
        let debPath = cache.downloads.appendingPathComponent(deb).path
        try await runner.checked(Command(["sh", "-c", "dpkg-deb --fsys-tarfile \"$1\" | tar -x -C \"$2\" ./usr/src", "sh", debPath, scratch.path]), timeout: limits.unpack)
        let tarballs = try fm.contentsOfDirectory(atPath: scratch.appendingPathComponent("usr/src").path).filter { $0.hasPrefix("linux-source") && $0.contains(".tar") }
        guard let tarball = tarballs.first else { throw BuildError.sourceDownload(detail: "\(deb) holds no linux-source tarball") }
        try await runner.checked(Command(["tar", "-xf", scratch.appendingPathComponent("usr/src/\(tarball)").path, "-C", scratch.path]), timeout: limits.unpack)
        let unpacked = try fm.contentsOfDirectory(atPath: scratch.path).filter { $0.hasPrefix("linux-source") && !$0.contains(".tar") }
        guard let top = unpacked.first else { throw BuildError.sourceDownload(detail: "\(tarball) did not unpack to a linux-source directory") }
        let tree = scratch.appendingPathComponent(top)
        progress("source: recording the pristine source as the baseline commit")
        let scratchGit = Git(directory: tree, runner: runner)
        try await scratchGit.run(["init", "-q"])
        // An automatic gc after recording 86k files would repack for minutes in the background,
        // competing with the kernel build that follows.
        try await scratchGit.run(["config", "gc.auto", "0"])
        // Debian's top-level .gitignore ignores everything; -f records the whole tree.
        try await scratchGit.run(["add", "-A", "-f"], timeout: limits.git)
        let date = ["GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z"]
        try await scratchGit.run(["commit", "-q", "--no-verify", "-m", "\(description) (pristine, recorded by p2plab)"], env: date, timeout: limits.git)
        try await scratchGit.run(["branch", "-f", "p2plab/pristine", "HEAD"])
        try? fm.removeItem(at: dir)
        try fm.moveItem(at: tree, to: dir)
        try? fm.removeItem(at: scratch)
        guard let base = try await git.revParse("refs/heads/p2plab/pristine") else {
            throw BuildError.sourceDownload(detail: "recording the baseline commit failed in \(dir.path)")
        }
        return PreparedSource(workdir: dir, baseCommit: base, description: description, id: id)
    }

    func prepareTree(path: URL, base: String) async throws -> PreparedSource {
        let fm = FileManager.default
        guard fm.isDirectory(path) else { throw BuildError.notAKernelTree(path.path) }
        let user = Git(directory: path, runner: runner)
        let top = try await user.tryRun(["rev-parse", "--show-toplevel"])
        guard top.succeeded else { throw BuildError.notAGitTree(path.path) }
        let topURL = URL(fileURLWithPath: top.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines))
        let commit = try await user.kernelCommit(base, tree: topURL.path)
        if base == "HEAD" {
            let status = try await user.run(["status", "--porcelain", "--untracked-files=no"])
            if !status.isEmpty { throw BuildError.dirtyTree(topURL.path) }
        }
        let id = "tree-" + fnv1a64Hex(topURL.standardizedFileURL.path).prefix(10)
        let worktree = cache.worktrees.appendingPathComponent(String(id))
        // A worktree whose repository was deleted or moved is useless: make it anew.
        if fm.fileExists(atPath: worktree.path),
           !(try await Git(directory: worktree, runner: runner).tryRun(["rev-parse", "--git-dir"]).succeeded) {
            try? fm.removeItem(at: worktree)
        }
        if !fm.fileExists(atPath: worktree.appendingPathComponent(".git").path) {
            try fm.ensureDirectory(cache.worktrees)
            _ = try? await user.run(["worktree", "prune"])
            progress("source: creating worktree \(worktree.path) of \(topURL.path)")
            try await user.run(["worktree", "add", "--detach", worktree.path, commit], timeout: limits.git)
        }
        let short = String(commit.prefix(12))
        return PreparedSource(workdir: worktree, baseCommit: commit, description: "tree \(topURL.path) at \(short)", id: "\(id)-\(short)", objectKey: String(id))
    }

    /// Checks out `base + selection of series` in the source's checkout, applying it with `git am`
    /// (one commit per patch) the first time and reusing the branch afterwards.
    public func checkout(_ source: PreparedSource, series: PatchSeries, selection: PatchSelection) async throws -> PreparedVariant {
        let chosen = try series.selecting(selection)
        let branch = Self.branch(baseCommit: source.baseCommit, series: series, selection: selection)
        let git = Git(directory: source.workdir, runner: runner)
        let record = variantRecord(source, branch: branch)
        if var variant = try await recordedVariant(source, series: series, selection: selection) {
            try await switchTo(git: git, ref: branch)
            // What the series says about itself comes from the series, not from an older record.
            let byIndex = Dictionary(chosen.map { ($0.index, $0) }, uniquingKeysWith: { a, _ in a })
            for i in variant.patches.indices {
                variant.patches[i].messageID = byIndex[variant.patches[i].index]?.messageID
                variant.patches[i].sha256 = byIndex[variant.patches[i].index]?.sha256
            }
            variant.seriesID = series.id
            variant.patchsetHash = Self.patchsetHash(variant.patches, chosen: chosen)
            progress("series: \(selection.label) (\(variant.patches.filter { $0.state == .applied }.count) patches) — reused branch \(branch)")
            return variant
        }
        try await switchTo(git: git, ref: source.baseCommit, detach: true)
        var applied: [AppliedPatch] = []
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-am-\(getpid())")
        try FileManager.default.ensureDirectory(scratch)
        defer { try? FileManager.default.removeItem(at: scratch) }
        for patch in chosen {
            let file = scratch.appendingPathComponent(patch.name)
            try patch.text.write(to: file, atomically: true, encoding: .utf8)
            let am = try await git.tryRun(["am", "-q", "--committer-date-is-author-date", "--no-3way", file.path])
            var entry = AppliedPatch(index: patch.index, name: patch.name, subject: patch.subject, author: patch.author,
                                     contentHash: patch.contentHash, state: .applied, commit: nil,
                                     messageID: patch.messageID, sha256: patch.sha256)
            if am.succeeded {
                entry.commit = try await git.run(["rev-parse", "HEAD"])
                progress("series: applied \(patch.name)")
            } else {
                _ = try? await git.tryRun(["am", "--abort"])
                let reverse = try await git.tryRun(["apply", "--check", "-R", file.path])
                if reverse.succeeded {
                    entry.state = .alreadyInTree
                    progress("series: \(patch.name) is already in this tree (it applies in reverse): skipped")
                } else {
                    let check = try await git.tryRun(["apply", "--check", "-v", file.path])
                    throw PatchFailure.describe(patch: patch, applyOutput: check.standardError + check.standardOutput, tree: source.workdir)
                }
            }
            applied.append(entry)
        }
        try await git.run(["branch", "-f", branch, "HEAD"])
        try await switchTo(git: git, ref: branch)
        let head = try await git.run(["rev-parse", "HEAD"])
        let variant = PreparedVariant(source: source, label: selection.label, branch: branch, head: head, patches: applied,
                                      seriesID: series.id, patchsetHash: Self.patchsetHash(applied, chosen: chosen))
        try FileManager.default.ensureDirectory(record.deletingLastPathComponent())
        try LabJSON.encode(variant).write(to: record)
        return variant
    }

    /// The patchset hash over the patches `git am` applied (one already in the tree was not).
    static func patchsetHash(_ applied: [AppliedPatch], chosen: [Patch]) -> String {
        let appliedIndices = Set(applied.filter { $0.state == .applied }.map(\.index))
        return PatchSeries.patchsetHash(chosen.filter { appliedIndices.contains($0.index) })
    }

    /// Checks out `ref`; git rewrites only the files that differ, so make rebuilds only what changed.
    func switchTo(git: Git, ref: String, detach: Bool = false) async throws {
        try await git.run(["checkout", "-q", "-f"] + (detach ? ["--detach"] : []) + [ref], timeout: limits.git)
    }
}

/// Turns `git apply --check -v` output into a message naming the patch, file and hunk.
enum PatchFailure {
    /// `tree`: the checkout the patch failed on, read to tell a renamed identifier from a real conflict.
    static func describe(patch: Patch, applyOutput: String, tree: URL? = nil) -> SeriesError {
        // "error: patch failed: mm/gup.c:2614"
        var file = patch.files.first ?? "?"
        var line: Int?
        for l in applyOutput.split(separator: "\n") where l.hasPrefix("error: patch failed: ") {
            let spec = l.dropFirst("error: patch failed: ".count)
            if let colon = spec.lastIndex(of: ":") {
                file = String(spec[..<colon])
                line = Int(spec[spec.index(after: colon)...])
            }
            break
        }
        var hunk = "?"
        if let line {
            hunk = hunkHeader(in: patch.text, file: file, oldStart: line) ?? "at line \(line)"
        }
        var detail: [String] = []
        for l in applyOutput.split(separator: "\n").map(String.init)
        where l.hasPrefix("error:") && !l.hasSuffix("while searching for:") && !detail.contains(l) {
            detail.append(l)
        }
        var renames: [IdentifierRename] = []
        if let line, let tree, let text = try? String(contentsOf: tree.appendingPathComponent(file), encoding: .utf8) {
            var lines = text.components(separatedBy: "\n")
            if lines.last == "" { lines.removeLast() }
            renames = HunkRenames.explain(oldSide: HunkRenames.oldSide(in: patch.text, file: file, oldStart: line), tree: lines)
        }
        return .doesNotApply(patch: patch.name, file: file, hunk: hunk, detail: detail.joined(separator: "\n"), renames: renames)
    }

    /// The `@@ -start,… @@` header of `file`'s hunk starting at old line `oldStart`.
    static func hunkHeader(in text: String, file: String, oldStart: Int) -> String? {
        var inFile = false
        for line in text.split(separator: "\n") {
            if line.hasPrefix("diff --git ") { inFile = line.hasSuffix(" b/\(file)") }
            if inFile, line.hasPrefix("@@ -\(oldStart),") || line.hasPrefix("@@ -\(oldStart) ") { return String(line) }
        }
        return nil
    }
}
