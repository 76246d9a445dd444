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
