import LabSupport

/// Problems preparing a kernel source or building it.
public enum BuildError: LabError, Equatable {
    case aptMissing
    case sourceDownload(detail: String)
    case notAKernelTree(String)
    case notAGitTree(String)
    case dirtyTree(String)
    /// `option`: the command-line option that named the revision.
    case badRevision(tree: String, rev: String, option: String = "--base")
    case missingFragment(String)
    case configDropped(options: [String], config: String)
    case buildFailed(log: String, errors: String)
    case noSpace(path: String, freeMiB: Int, needMiB: Int)
    case missingTool(tool: String, package: String)
    case moduleBuildFailed(log: String, errors: String)
    case selftestBuildFailed(log: String, errors: String)

    public var exitCode: LabExit {
        switch self {
        case .aptMissing, .missingTool: .missingDependency
        case .sourceDownload, .notAKernelTree, .notAGitTree, .badRevision: .badSource
        case .dirtyTree: .dirtyTree
        case .missingFragment, .configDropped: .configDropped
        case .buildFailed: .buildFailed
        case .noSpace: .noSpace
        case .moduleBuildFailed: .moduleBuildFailed
        case .selftestBuildFailed: .couldNotTest
        }
    }

    public var description: String {
        switch self {
        case .aptMissing:
            "apt-get not found: p2plab fetches Debian's linux-source-6.12 with it; on other systems pass --tree DIR"
        case .sourceDownload(let detail):
            "could not download linux-source-6.12 (apt-get download): run `apt-get update`, or pass --tree DIR\n\(detail)"
        case .notAKernelTree(let p):
            "\(p) is not a kernel tree (no Makefile and Kconfig at its top): pass the top of a Linux source tree"
        case .notAGitTree(let p):
            "\(p) is not a git repository: p2plab works in a worktree of your tree; run `git init` there or use the Debian source (no --tree)"
        case .dirtyTree(let p):
            "\(p) has uncommitted changes that a worktree at HEAD would not include: commit or stash them, or pass --base REV"
        case .badRevision(let tree, let rev, let option):
            "\(rev) is not a commit in \(tree): pass \(option) with a branch, tag or commit"
        case .missingFragment(let p):
            "config fragment not found: \(p)"
        case .configDropped(let options, let config):
            "olddefconfig dropped \(options.count) option(s) the fragments ask for (missing dependencies?): \(options.joined(separator: ", "))\nsee \(config)"
        case .buildFailed(let log, let errors):
            "kernel build failed; full log: \(log)\n\(errors)"
        case .noSpace(let path, let free, let need):
            "not enough disk space in \(path): \(free) MiB free, a build needs about \(need) MiB; free some space or set P2PLAB_CACHE to a larger disk"
        case .missingTool(let tool, let package):
            "\(tool) not found: install it with `apt-get install \(package)` (scripts/setup installs everything p2plab needs)"
        case .moduleBuildFailed(let log, let errors):
            "test module build failed; full log: \(log)\n\(errors)"
        case .selftestBuildFailed(let log, let errors):
            "the kernel's mm selftests (gup_longterm, gup_test) did not build; full log: \(log)\n\(errors)"
        }
    }
}
