import Foundation

/// What the kernel said about peer-to-peer DMA: the lines a user needs when p2pmem is missing or a
/// device pair cannot do P2P ("not in whitelist", "ACS redirect is set", "added peer-to-peer DMA memory").
public enum P2PDMAHints {
    /// Whether a kernel log message is about P2PDMA.
    public static func isHint(_ message: String) -> Bool {
        let lower = message.lowercased()
        return ["p2pdma", "p2pmem", "peer-to-peer", "acs redirect", "whitelist", "cmb"].contains { lower.contains($0) }
    }

    /// The P2PDMA lines of the whole kernel log (read from /dev/kmsg, non-blocking), newest last.
    public static func fromKernelLog(path: String = "/dev/kmsg", limit: Int = 8) -> [String] {
        let fd = open(path, O_RDONLY | O_NONBLOCK)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var lines: [String] = []
        var buffer = [UInt8](repeating: 0, count: 8192)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n < 0 && errno == EPIPE { continue }  // a record was overwritten while we read
            if n <= 0 { break }
            let record = String(decoding: buffer[0..<n], as: UTF8.self)
            // "6,339,5140900,-;nvme 0000:03:00.0: added peer-to-peer DMA memory …"
            guard let semicolon = record.firstIndex(of: ";") else { continue }
            let message = record[record.index(after: semicolon)...].split(separator: "\n").first.map(String.init) ?? ""
            if isHint(message) { lines.append(message) }
        }
        return Array(lines.suffix(limit))
    }
}
