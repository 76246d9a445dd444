#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An error number from a system call or an ioctl, named the way the kernel names it.
///
/// Shaped like swift-system's `Errno`, but the suite needs the symbolic names (`EREMOTEIO`), which
/// are what the expectation tables, the KTAP `# errno:` key and the series' commit messages use.
public struct Errno: Error, Hashable, Sendable, RawRepresentable, CustomStringConvertible {
    public let rawValue: Int32

    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// The calling thread's `errno`.
    public static var current: Errno { Errno(rawValue: errno) }

    public static let EPERM = Errno(rawValue: 1)
    public static let ENOENT = Errno(rawValue: 2)
    public static let EINTR = Errno(rawValue: 4)
    public static let EIO = Errno(rawValue: 5)
    public static let ENXIO = Errno(rawValue: 6)
    public static let EAGAIN = Errno(rawValue: 11)
    public static let ENOMEM = Errno(rawValue: 12)
    public static let EACCES = Errno(rawValue: 13)
    public static let EFAULT = Errno(rawValue: 14)
    public static let EBUSY = Errno(rawValue: 16)
    public static let EEXIST = Errno(rawValue: 17)
    public static let ENODEV = Errno(rawValue: 19)
    public static let EINVAL = Errno(rawValue: 22)
    public static let ENOSPC = Errno(rawValue: 28)
    public static let ENOTTY = Errno(rawValue: 25)
    public static let ERANGE = Errno(rawValue: 34)
    public static let ENOSYS = Errno(rawValue: 38)
    public static let EOPNOTSUPP = Errno(rawValue: 95)
    public static let ETIMEDOUT = Errno(rawValue: 110)
    public static let EREMOTEIO = Errno(rawValue: 121)

    private static let names: [Int32: String] = [
        1: "EPERM", 2: "ENOENT", 4: "EINTR", 5: "EIO", 6: "ENXIO", 11: "EAGAIN", 12: "ENOMEM",
        13: "EACCES", 14: "EFAULT", 16: "EBUSY", 17: "EEXIST", 19: "ENODEV", 22: "EINVAL", 25: "ENOTTY",
        28: "ENOSPC", 34: "ERANGE", 38: "ENOSYS", 95: "EOPNOTSUPP", 110: "ETIMEDOUT", 121: "EREMOTEIO",
    ]

    /// `EREMOTEIO`, or `errno 200` for a number the table does not know.
    public var name: String { Errno.names[rawValue] ?? "errno \(rawValue)" }

    /// Looks a symbolic name up (`"EFAULT"`), for tables written as text.
    public init?(name: String) {
        guard let entry = Errno.names.first(where: { $0.value == name }) else { return nil }
        self.rawValue = entry.key
    }

    /// `EREMOTEIO (Remote I/O error)`.
    public var description: String {
        guard let text = strerror(rawValue) else { return name }
        return "\(name) (\(String(cString: text)))"
    }
}
