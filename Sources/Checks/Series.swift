/// One patch of "Enable P2PDMA in Userspace RDMA" (v2, kernel/series/v2/), by its place in the series.
///
/// Checks name the patches they depend on, so an ablation (the series with one patch left out) can
/// predict which checks fail before it boots anything.
public enum SeriesPatch: Int, Sendable, Hashable, CaseIterable, Comparable, Codable, CustomStringConvertible {
    /// 0001 kernfs: remove page_mkwrite() from vm_operations_struct.
    case kernfs = 1
    /// 0002 mm/gup: handle ZONE_DEVICE pages in folio_fast_pin_allowed().
    case gupFastZoneDevice = 2
    /// 0003 mm/gup: allow FOLL_LONGTERM & FOLL_PCI_P2PDMA.
    case longtermP2PDMA = 3
    /// 0004 RDMA/umem: add support for P2P RDMA.
    case umemP2P = 4

    public static func < (lhs: SeriesPatch, rhs: SeriesPatch) -> Bool { lhs.rawValue < rhs.rawValue }

    /// `1 kernfs`, the short form used in listings.
    public var description: String {
        switch self {
        case .kernfs: "1 kernfs"
        case .gupFastZoneDevice: "2 gup-fast ZONE_DEVICE"
        case .longtermP2PDMA: "3 LONGTERM+P2PDMA"
        case .umemP2P: "4 ib_umem_get"
        }
    }
}

extension Set where Element == SeriesPatch {
    /// Every patch of the series: the kernel the checks assert.
    public static var wholeSeries: Set<SeriesPatch> { Set(SeriesPatch.allCases) }
    /// None of them: plain 6.12.
    public static var baseline: Set<SeriesPatch> { [] }

    /// `1,3` (sorted), or `none`.
    public var listing: String {
        isEmpty ? "none" : sorted().map { String($0.rawValue) }.joined(separator: ",")
    }
}
