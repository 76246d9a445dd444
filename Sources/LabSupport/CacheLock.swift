import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An advisory lock (flock(2)) on a file under the cache, so two p2plab runs that share a cache never
/// switch or build in one checkout at the same time. The kernel drops it when the process ends, so a
/// crashed run cannot leave it held.
public final class CacheLock: @unchecked Sendable {
    private let fd: Int32
    public let path: URL

    private init(fd: Int32, path: URL) {
        self.fd = fd
        self.path = path
    }

    /// Takes the lock named `name` in `cache`, waiting (and saying so once) while another run
    /// holds it; throws `CacheLockError.timedOut` after `timeout` seconds.
    public static func acquire(
        _ name: String, in cache: CacheLayout, timeout: Double, waiting: @Sendable (String) -> Void = { _ in }
    ) async throws -> CacheLock {
        let path = cache.locks.appendingPathComponent(name + ".lock")
        try FileManager.default.ensureDirectory(cache.locks)
        let fd = open(path.path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw CacheLockError.cannotOpen(path: path.path, errno: errno) }
        let deadline = Date().addingTimeInterval(timeout)
        var said = false
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            guard errno == EWOULDBLOCK || errno == EINTR else {
                let e = errno
                close(fd)
                throw CacheLockError.cannotOpen(path: path.path, errno: e)
            }
            if !said {
                waiting("another p2plab run is using \(name); waiting for it (lock \(path.path))")
                said = true
            }
            if Date() > deadline {
                close(fd)
                throw CacheLockError.timedOut(path: path.path, seconds: timeout)
            }
            do { try await Task.sleep(nanoseconds: 500_000_000) } catch {
                close(fd)
                throw error
            }
        }
        return CacheLock(fd: fd, path: path)
    }

    /// Runs `body` holding the lock `name`.
    public static func withLock<T: Sendable>(
        _ name: String, in cache: CacheLayout, timeout: Double, waiting: @Sendable (String) -> Void = { _ in },
        _ body: () async throws -> T
    ) async throws -> T {
        let lock = try await acquire(name, in: cache, timeout: timeout, waiting: waiting)
        defer { lock.release() }
        return try await body()
    }

    private var released = false

    public func release() {
        guard !released else { return }
        released = true
        flock(fd, LOCK_UN)
        close(fd)
    }

    deinit { release() }
}

/// The cache lock could not be taken.
public enum CacheLockError: LabError {
    case cannotOpen(path: String, errno: Int32)
    case timedOut(path: String, seconds: Double)

    public var exitCode: LabExit {
        switch self {
        case .cannotOpen: .usage
        case .timedOut: .couldNotTest
        }
    }

    public var description: String {
        switch self {
        case .cannotOpen(let path, let e):
            "cannot lock \(path): \(String(cString: strerror(e))); is the cache (P2PLAB_CACHE) writable?"
        case .timedOut(let path, let seconds):
            "another p2plab run held \(path) for more than \(Int(seconds)) s: is one stuck? (`fuser \(path)` names it)"
        }
    }
}
