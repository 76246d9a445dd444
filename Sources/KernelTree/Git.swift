import Foundation
import LabSupport

/// Thin git access for one repository or worktree.
struct Git: Sendable {
    let directory: URL
    let runner: Runner

    /// A fixed identity and dates for the commits p2plab makes, so the same inputs give the same
    /// commit ids on every machine (the pristine baseline, applied series).
    static let identity: [String: String] = [
        "GIT_AUTHOR_NAME": "p2plab", "GIT_AUTHOR_EMAIL": "p2plab@localhost",
        "GIT_COMMITTER_NAME": "p2plab", "GIT_COMMITTER_EMAIL": "p2plab@localhost",
    ]

    /// Variables that point git at another repository. `git bisect run` exports GIT_DIR to its
    /// command, and with it set `git -C worktree checkout` would move the bisected worktree's HEAD
    /// and rewrite every file of ours through the wrong index.
    static let repositoryVariables = [
        "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_PREFIX",
    ]

    func command(_ args: [String], env: [String: String] = [:]) -> Command {
        Command(["git", "-C", directory.path] + args, environment: Git.identity.merging(env) { $1 }, unset: Git.repositoryVariables)
    }

    @discardableResult
    func run(_ args: [String], env: [String: String] = [:], timeout: Double = 600) async throws -> String {
        try await runner.checked(command(args, env: env), timeout: timeout).standardOutput
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func tryRun(_ args: [String], env: [String: String] = [:], timeout: Double = 600) async throws -> RunResult {
        try await runner.capture(command(args, env: env), timeout: timeout)
    }

    func revParse(_ rev: String) async throws -> String? {
        let r = try await tryRun(["rev-parse", "--verify", "--quiet", rev + "^{commit}"])
        return r.succeeded ? r.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines) : nil
    }

    /// The files a commit must hold for p2plab to build it as a kernel.
    static let kernelFiles = ["Makefile", "Kconfig", "mm/gup.c"]

    /// The full id of the kernel commit `rev` names. Throws `badRevision` (naming `tree` and the
    /// `option` that gave `rev`) when it names no commit, `notAKernelTree` when that commit lacks a
    /// kernel's top-level files.
    func kernelCommit(_ rev: String, tree: String, option: String = "--base") async throws -> String {
        guard let commit = try await revParse(rev) else { throw BuildError.badRevision(tree: tree, rev: rev, option: option) }
        for file in Git.kernelFiles where !(try await tryRun(["cat-file", "-e", "\(commit):\(file)"])).succeeded {
            throw BuildError.notAKernelTree(tree)
        }
        return commit
    }
}

/// The full id of the kernel commit `rev` names in the git tree `tree`; throws the error a user
/// reads (`rev` is not a commit there, with the `option` that gave it, or not a kernel commit).
public func verifyKernelCommit(_ rev: String, in tree: String, option: String, runner: Runner) async throws -> String {
    try await Git(directory: URL(fileURLWithPath: tree), runner: runner).kernelCommit(rev, tree: tree, option: option)
}

/// Removes the variables that point git at another repository from this process's environment,
/// for commands that `git bisect run` starts (it exports GIT_DIR).
public func clearGitRepositoryEnvironment() {
    for name in Git.repositoryVariables { unsetenv(name) }
}
