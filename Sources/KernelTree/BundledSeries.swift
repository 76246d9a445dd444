import Foundation

/// The versions of the series that ship with p2plab, rebased onto Debian 6.12.117: one
/// `git format-patch` directory with a `series` file each, under the checkout's `kernel/series/`.
public enum BundledSeries {
    /// The version `build`, `test` and `bisect` use when no `--series` is given.
    public static let defaultVersion = "v2"

    /// `kernel/series` in the checkout at `root`.
    public static func directory(root: URL) -> URL { root.appendingPathComponent("kernel/series") }

    /// The bundled version names, oldest first (`v2`, `v3`, …, `v10`).
    public static func versions(root: URL) -> [String] {
        let fm = FileManager.default
        let names = (try? fm.contentsOfDirectory(atPath: directory(root: root).path)) ?? []
        return names.filter { isVersionName($0) && fm.fileExists(atPath: directory(root: root).appendingPathComponent("\($0)/series").path) }
            .sorted { Int($0.dropFirst())! < Int($1.dropFirst())! }
    }

    /// `v` followed by digits: the spelling of a bundled version on the command line.
    public static func isVersionName(_ text: String) -> Bool {
        text.count >= 2 && text.first == "v" && text.dropFirst().allSatisfy(\.isASCII) && Int(text.dropFirst()) != nil
    }

    /// What `--series` names: nil is the default version; `v5` a bundled version (unless a file or
    /// directory of that name exists where p2plab runs); anything else a path to a directory with a
    /// `series` file or an mbox.
    public static func resolve(_ spec: String?, root: URL) throws -> URL {
        let name = spec ?? defaultVersion
        if isVersionName(name), !FileManager.default.fileExists(atPath: name) {
            let dir = directory(root: root).appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: dir.appendingPathComponent("series").path) else {
                throw SeriesError.unknownVersion(name, bundled: versions(root: root))
            }
            return dir
        }
        return URL(fileURLWithPath: name)
    }
}
