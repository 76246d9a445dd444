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
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        let lines = KmsgLog.drain(fd).filter(isHint)
        return Array(lines.suffix(limit))
    }
}
