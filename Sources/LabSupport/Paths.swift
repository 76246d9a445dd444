import Foundation

/// Where p2plab keeps what it downloads, unpacks and builds: never inside a repository.
public struct CacheLayout: Sendable {
    /// The cache root: `$P2PLAB_CACHE`, else `$XDG_CACHE_HOME/p2plab`, else `~/.cache/p2plab`.
    public let root: URL

    public init(root: URL? = nil, environment: [String: String] = ProcessInfo.processInfo.environment) {
        if let root { self.root = root; return }
        if let explicit = environment["P2PLAB_CACHE"], !explicit.isEmpty {
            self.root = URL(fileURLWithPath: explicit)
        } else if let xdg = environment["XDG_CACHE_HOME"], !xdg.isEmpty {
            self.root = URL(fileURLWithPath: xdg).appendingPathComponent("p2plab")
        } else {
            let home = environment["HOME"] ?? NSHomeDirectory()
            self.root = URL(fileURLWithPath: home).appendingPathComponent(".cache/p2plab")
        }
    }

    public var downloads: URL { root.appendingPathComponent("downloads") }
    public var sources: URL { root.appendingPathComponent("src") }
    public var worktrees: URL { root.appendingPathComponent("worktrees") }
    public var objects: URL { root.appendingPathComponent("obj") }
    public var builds: URL { root.appendingPathComponent("builds") }
    public var runs: URL { root.appendingPathComponent("runs") }
    /// Lock files that keep concurrent runs out of each other's checkouts.
    public var locks: URL { root.appendingPathComponent("locks") }
    /// The newest successful build's manifest, so `boot` and `check` can find its kernel.
    public var latestBuild: URL { root.appendingPathComponent("builds/latest.json") }
}

extension FileManager {
    /// Creates a directory and its parents if they do not exist.
    public func ensureDirectory(_ url: URL) throws {
        try createDirectory(at: url, withIntermediateDirectories: true)
    }

    /// True when `url` names an existing directory.
    public func isDirectory(_ url: URL) -> Bool {
        var isDir: ObjCBool = false
        return fileExists(atPath: url.path, isDirectory: &isDir) && isDir.boolValue
    }
}
