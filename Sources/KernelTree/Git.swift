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

    func command(_ args: [String], env: [String: String] = [:]) -> Command {
        Command(["git", "-C", directory.path] + args, environment: Git.identity.merging(env) { $1 })
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
}
