import Foundation
import LabSupport

/// What `p2plab build` leaves in `builds/latest.json`: the kernel `boot` uses by default.
public struct LatestBuild: Codable, Sendable, Equatable {
    /// Absolute path of the bzImage.
    public var bzImage: String
    /// The kernel's O= object directory (for building modules against it).
    public var objectDir: String
    public var kernelRelease: String

    /// Reads `builds/latest.json` of the cache, or nil when there is none or it is unreadable.
    public static func load(cache: CacheLayout = CacheLayout()) -> LatestBuild? {
        guard let data = FileManager.default.contents(atPath: cache.latestBuild.path) else { return nil }
        return try? JSONDecoder().decode(LatestBuild.self, from: data)
    }
}

/// Finds the kernel to boot.
public enum KernelLocator {
    /// `explicit` if given, else `$P2PLAB_KERNEL`, else the latest `p2plab build`; the file must exist.
    public static func kernel(
        explicit: String? = nil, cache: CacheLayout = CacheLayout(),
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> URL {
        let path: String
        if let explicit, !explicit.isEmpty {
            path = explicit
        } else if let fromEnvironment = environment["P2PLAB_KERNEL"], !fromEnvironment.isEmpty {
            path = fromEnvironment
        } else if let latest = LatestBuild.load(cache: cache) {
            path = latest.bzImage
        } else {
            throw MachineError.noKernel(reason: "\(cache.latestBuild.path) does not exist")
        }
        let url = URL(fileURLWithPath: path).standardizedFileURL
        guard FileManager.default.fileExists(atPath: url.path), !FileManager.default.isDirectory(url) else {
            throw MachineError.kernelNotFound(path: url.path)
        }
        return url
    }
}
