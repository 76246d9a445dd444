import Foundation

/// Finds the p2plab checkout the running binary belongs to: its `kernel/` and `vm/` directories
/// are data the tool reads at run time (the series, the config fragment, machine definitions).
public enum ProjectPaths {
    /// `$P2PLAB_ROOT`, else the nearest ancestor of the executable (or of the current directory)
    /// that holds `kernel/series/v2/series`.
    public static func root(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL? {
        if let explicit = environment["P2PLAB_ROOT"], !explicit.isEmpty {
            return URL(fileURLWithPath: explicit)
        }
        let starts = [
            URL(fileURLWithPath: CommandLine.arguments.first ?? ".").resolvingSymlinksInPath().deletingLastPathComponent(),
            URL(fileURLWithPath: FileManager.default.currentDirectoryPath),
            URL(fileURLWithPath: #filePath).deletingLastPathComponent(),
        ]
        for start in starts {
            var dir = start.standardizedFileURL
            while dir.path != "/" {
                if FileManager.default.fileExists(atPath: dir.appendingPathComponent("kernel/series/v2/series").path) {
                    return dir
                }
                dir = dir.deletingLastPathComponent()
            }
        }
        return nil
    }

    /// The version p2plab reports in results: the checkout's commit (12 hex digits), with `-dirty`
    /// when tracked files differ from it; "unknown" outside a git checkout. Asked of git, so a
    /// worktree (whose `.git` is a file) and packed refs read the same as a plain clone.
    public static let version: String = {
        guard let root = root(), let checkout = checkout(at: root) else { return "unknown" }
        return checkout.commit + (checkout.dirty ? "-dirty" : "")
    }()

    /// The git checkout at `root`: its commit (12 hex digits) and whether tracked files differ from
    /// it; nil when it is no git checkout.
    public static func checkout(at root: URL) -> (commit: String, dirty: Bool)? {
        guard let head = git(["rev-parse", "--short=12", "HEAD"], in: root) else { return nil }
        return (head, git(["status", "--porcelain", "--untracked-files=no"], in: root).map { !$0.isEmpty } ?? false)
    }

    /// The checkout's full commit, or nil outside a git checkout.
    public static func commit(of root: URL) -> String? { git(["rev-parse", "HEAD"], in: root) }

    /// `git -C DIRECTORY ARGUMENTS`' output, trimmed; nil when git is missing, fails, or takes more
    /// than 10 s (it is killed then).
    static func git(_ arguments: [String], in directory: URL) -> String? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["git", "-C", directory.path] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { return nil }
        DispatchQueue.global().asyncAfter(deadline: .now() + 10) { if process.isRunning { process.terminate() } }
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationReason == .exit, process.terminationStatus == 0 else { return nil }
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The running executable, symlinks resolved.
    public static var executable: URL {
        let path = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: path).resolvingSymlinksInPath().standardizedFileURL
    }

    /// The guest suite executable (`p2plab-guest`) beside the running one.
    public static var guestExecutable: URL {
        executable.deletingLastPathComponent().appendingPathComponent(guestExecutableName)
    }

    public static let guestExecutableName = "p2plab-guest"

    /// `root()`, or an error that says what to do.
    public static func requireRoot() throws -> URL {
        guard let root = root() else { throw ProjectPathError.notFound }
        return root
    }
}

/// The checkout could not be found.
public enum ProjectPathError: LabError {
    case notFound
    public var exitCode: LabExit { .missingDependency }
    public var description: String {
        "cannot find the p2plab checkout (kernel/series/v2/series): run p2plab from its checkout or set P2PLAB_ROOT"
    }
}
