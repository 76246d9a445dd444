import Catalog
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The page size the kernel pins in.
public let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

/// An mmap'd range, unmapped when released.
public final class MappedRegion: @unchecked Sendable {
    public let base: UnsafeMutableRawPointer
    public let length: Int
    private var mapped = true

    private init(base: UnsafeMutableRawPointer, length: Int) {
        self.base = base
        self.length = length
    }

    deinit { unmap() }

    public var address: UInt64 { UInt64(UInt(bitPattern: base)) }
    public var pages: Int { length / pageSize }

    /// Unmaps now (idempotent).
    public func unmap() {
        if mapped {
            munmap(base, length)
            mapped = false
        }
    }

    /// Maps `length` bytes of anonymous private memory, optionally touching every page so it is
    /// populated. The corresponding C function is `mmap`.
    public static func anonymous(length: Int, populate: Bool = true) throws(Errno) -> MappedRegion {
        try _anonymous(length: length, populate: populate).get()
    }

    static func _anonymous(length: Int, populate: Bool) -> Result<MappedRegion, Errno> {
        let flags = MAP_PRIVATE | MAP_ANONYMOUS | (populate ? MAP_POPULATE : 0)
        guard let pointer = mmap(nil, length, PROT_READ | PROT_WRITE, flags, -1, 0), pointer != MAP_FAILED else {
            return .failure(.current)
        }
        return .success(MappedRegion(base: pointer, length: length))
    }

    /// Maps `length` bytes of the file at `path` MAP_SHARED. The corresponding C functions are
    /// `open` and `mmap`.
    public static func shared(path: String, length: Int, writable: Bool = true, offset: Int = 0) throws(Errno) -> MappedRegion {
        try _shared(path: path, length: length, writable: writable, offset: offset).get()
    }

    static func _shared(path: String, length: Int, writable: Bool, offset: Int) -> Result<MappedRegion, Errno> {
        let fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC)
        guard fd >= 0 else { return .failure(.current) }
        defer { close(fd) }
        let prot = PROT_READ | (writable ? PROT_WRITE : 0)
        guard let pointer = mmap(nil, length, prot, MAP_SHARED, fd, off_t(offset)), pointer != MAP_FAILED else {
            return .failure(.current)
        }
        return .success(MappedRegion(base: pointer, length: length))
    }

    /// Fills the range with a pattern derived from `seed` (distinct per 8 bytes).
    public func fill(seed: UInt64) {
        let words = base.bindMemory(to: UInt64.self, capacity: length / 8)
        for index in 0..<(length / 8) { words[index] = Self.pattern(seed: seed, index: index) }
    }

    /// The first byte offset that differs from the pattern of `seed`, or nil when all match.
    public func firstMismatch(seed: UInt64) -> Int? {
        let words = base.bindMemory(to: UInt64.self, capacity: length / 8)
        for index in 0..<(length / 8) where words[index] != Self.pattern(seed: seed, index: index) {
            return index * 8
        }
        return nil
    }

    static func pattern(seed: UInt64, index: Int) -> UInt64 {
        (seed &* 0x9E37_79B9_7F4A_7C15) ^ (UInt64(index) &* 0xBF58_476D_1CE4_E5B9)
    }
}
