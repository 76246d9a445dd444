import Catalog
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension Suite {
    /// Label of the ext4 the suite makes, so a later run knows the namespace is its own scratch.
    static let scratchLabel = "p2plab-scratch"

    static let fsChecks: [CheckDefinition] = [
        CheckDefinition("fs.longterm_real_fs_refused") { ctx, rec in
            let module = try ctx.requireModule()
            guard let (controller, namespace) = ctx.sysfs.scratchNamespace() else {
                throw CheckSkip("no NVMe namespace without a CMB to put ext4 on (add a second NVMe)")
            }
            let device = "/dev/\(namespace)"
            rec.note("scratch namespace \(device) of \(controller.name) (\(controller.address), no CMB)")
            try requireScratch(device)
            let verbs = ctx.rdma.flatMap { try? Verbs.open($0.name) }
            if verbs == nil { rec.note("no RDMA device: ibv_reg_mr part not run") }

            let ext4 = "/run/p2plab-ext4"
            try runCommand(["mkfs.ext4", "-F", "-q", "-L", scratchLabel, device], recorder: rec)
            try FileManager.default.createDirectory(atPath: ext4, withIntermediateDirectories: true)
            try runCommand(["mount", "-t", "ext4", device, ext4], recorder: rec)
            defer { try? runCommand(["umount", ext4], recorder: rec) }
            try exercise(memory: .ext4Shared, file: "\(ext4)/pinme", module: module, verbs: verbs, rec: rec)

            let tmpfs = "/run/p2plab-tmpfs"
            try FileManager.default.createDirectory(atPath: tmpfs, withIntermediateDirectories: true)
            try runCommand(["mount", "-t", "tmpfs", "-o", "size=16m", "p2plab-tmpfs", tmpfs], recorder: rec)
            defer { try? runCommand(["umount", tmpfs], recorder: rec) }
            try exercise(memory: .tmpfsShared, file: "\(tmpfs)/pinme", module: module, verbs: verbs, rec: rec)
        },
    ]

    /// Refuses to format a namespace that holds anything but zeros or the suite's own ext4: on
    /// real hardware the "second NVMe" may hold someone's data.
    static func requireScratch(_ device: String) throws {
        if let mounts = try? String(contentsOfFile: "/proc/mounts", encoding: .utf8),
            mounts.split(separator: "\n").contains(where: { $0.hasPrefix(device + " ") })
        {
            throw CheckSkip("\(device) is mounted; unmount it (the suite formats it)")
        }
        guard let handle = FileHandle(forReadingAtPath: device) else {
            throw CheckFailure("cannot open \(device) for reading")
        }
        defer { try? handle.close() }
        let head = [UInt8](handle.readData(ofLength: 1 << 20))
        if head.allSatisfy({ $0 == 0 }) { return }
        // ext4 superblock at 1024: magic 0xEF53 at +56, volume label at +120.
        if head.count >= 1024 + 136, head[1024 + 56] == 0x53, head[1024 + 57] == 0xEF {
            let label = String(decoding: head[(1024 + 120)..<(1024 + 136)].prefix { $0 != 0 }, as: UTF8.self)
            if label == scratchLabel { return }
        }
        throw CheckSkip("\(device) holds data that is not the suite's scratch ext4; wipe it if it is yours to lose (wipefs -a \(device))")
    }

    /// Maps a 64 KiB file MAP_SHARED, pins it long-term writable (slow and fast) and registers it.
    static func exercise(memory: MemoryKind, file: String, module: TestModule, verbs: VerbsContext?, rec: CheckRecorder) throws {
        let pages = 16
        let length = pages * pageSize
        guard FileManager.default.createFile(atPath: file, contents: Data(repeating: 0xA5, count: length)) else {
            throw CheckFailure("cannot create \(file)")
        }
        let region: MappedRegion
        do {
            region = try MappedRegion.shared(path: file, length: length)
        } catch {
            throw CheckFailure("mmap of \(file) failed: \(error)")
        }
        defer { region.unmap() }
        for flags: PinFlags in [[.longterm, .write], [.longterm, .write, .fast]] {
            let result = module.pinResult(address: region.address, pages: pages, flags: flags)
            rec.expect(.pin(memory, flags), observed: CheckRecorder.observation(result))
        }
        if let verbs {
            let result = verbs.registerMRResult(address: region.base, length: length, writable: true)
            rec.expect(.registerMR(memory, writable: true), observed: CheckRecorder.observation(result))
            if case .success(let mr) = result { mr.deregister() }
        }
    }
}
