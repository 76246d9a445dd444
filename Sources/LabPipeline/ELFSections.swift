import Foundation

/// The section names of a 64-bit little-endian ELF file (vmlinux, a module), read from its section
/// header table alone: a few kilobytes of a vmlinux of tens of megabytes.
public enum ELFSections {
    /// The names of `file`'s sections, or nil when it is not a readable ELF64 LSB file.
    public static func names(in file: URL) -> [String]? {
        guard let handle = try? FileHandle(forReadingFrom: file) else { return nil }
        defer { try? handle.close() }
        func read(_ offset: UInt64, _ count: Int) -> [UInt8]? {
            guard (try? handle.seek(toOffset: offset)) != nil,
                  let data = try? handle.read(upToCount: count), data.count == count else { return nil }
            return [UInt8](data)
        }
        // e_ident: magic, ELFCLASS64 (2), ELFDATA2LSB (1).
        guard let header = read(0, 64), header[0..<4] == [0x7F, 0x45, 0x4C, 0x46], header[4] == 2, header[5] == 1 else { return nil }
        let shoff = integer(header, 0x28, 8)
        let shentsize = Int(integer(header, 0x3A, 2))
        let shnum = Int(integer(header, 0x3C, 2))
        let shstrndx = Int(integer(header, 0x3E, 2))
        guard shoff > 0, shentsize >= 64, shnum > 0, shnum < 65_280, shstrndx < shnum,
              let table = read(shoff, shentsize * shnum) else { return nil }
        let strings = shstrndx * shentsize
        let stringsOffset = integer(table, strings + 0x18, 8)
        let stringsSize = Int(integer(table, strings + 0x20, 8))
        guard stringsSize > 0, stringsSize < 1 << 24, let names = read(stringsOffset, stringsSize) else { return nil }
        return (0..<shnum).map { index in
            let start = Int(integer(table, index * shentsize, 4))
            guard start < names.count else { return "" }
            let end = names[start...].firstIndex(of: 0) ?? names.count
            return String(decoding: names[start..<end], as: UTF8.self)
        }
    }

    /// Whether `file` carries DWARF line tables (`.debug_line`), which addr2line needs for file:line;
    /// nil when that cannot be told (not an ELF64 LSB file, unreadable).
    public static func hasLineTables(_ file: URL) -> Bool? {
        names(in: file).map { $0.contains(".debug_line") }
    }

    static func integer(_ bytes: [UInt8], _ offset: Int, _ width: Int) -> UInt64 {
        (0..<width).reduce(UInt64(0)) { value, index in value | UInt64(bytes[offset + index]) << (8 * UInt64(index)) }
    }
}
