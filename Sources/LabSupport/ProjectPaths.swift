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

    /// The version p2plab reports in results: the checkout's commit when it is a git checkout.
    public static let version: String = {
        guard let root = root() else { return "unknown" }
        let head = root.appendingPathComponent(".git/HEAD")
        guard let ref = try? String(contentsOf: head, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) else { return "unknown" }
        if ref.hasPrefix("ref: ") {
            let path = root.appendingPathComponent(".git/" + ref.dropFirst(5))
            if let sha = try? String(contentsOf: path, encoding: .utf8) { return String(sha.prefix(12)) }
            return String(ref.dropFirst(5))
        }
        return String(ref.prefix(12))
    }()

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
