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
            let verbs = ctx.rdma.flatMap { try? Verbs.open($0.name) }
            if verbs == nil { rec.note("no RDMA device: ibv_reg_mr part not run") }

            let ext4 = try mountScratch(device, at: "/run/p2plab-ext4", rec: rec)
            defer { ext4.unmount(rec) }
            try exercise(memory: .ext4Shared, file: "\(ext4.path)/pinme", module: module, verbs: verbs, rec: rec)

            let tmpfs = try Mount(source: "p2plab-tmpfs", at: "/run/p2plab-tmpfs", type: "tmpfs", options: "size=16m", rec: rec)
            defer { tmpfs.unmount(rec) }
            try exercise(memory: .tmpfsShared, file: "\(tmpfs.path)/pinme", module: module, verbs: verbs, rec: rec)
        },
    ]

    /// Mounts the scratch namespace's ext4 at `directory`. The namespace is formatted only when it
    /// does not already hold the suite's own ext4 (the lab machine's host made it before the boot,
    /// or an earlier check of the run did; mkfs.ext4 takes a few hundred ms under TCG), or when that
    /// one does not mount.
    static func mountScratch(_ device: String, at directory: String, rec: CheckRecorder) throws -> Mount {
        if try requireScratch(device) {
            do {
                let mount = try Mount(source: device, at: directory, type: "ext4", rec: rec)
                rec.note("\(device) already held the suite's scratch ext4 (label \(scratchLabel)): mounted, not formatted again")
                return mount
            } catch {
                rec.note("the suite's scratch ext4 on \(device) did not mount (\(error)): formatting it again")
            }
        }
        try runCommand(["mkfs.ext4", "-F", "-q", "-L", scratchLabel, device], recorder: rec)
        return try Mount(source: device, at: directory, type: "ext4", rec: rec)
    }

    /// Refuses to format a namespace that holds anything but zeros or the suite's own ext4: on
    /// real hardware the "second NVMe" may hold someone's data. True when it holds the suite's ext4.
    @discardableResult
    static func requireScratch(_ device: String) throws -> Bool {
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
        // All zeros: the first byte is 0 and every byte equals the next (memcmp, not a Swift loop
        // over a MiB, which takes about half a second in a debug build under TCG).
        let zeros = head.withUnsafeBytes { bytes -> Bool in
            guard let base = bytes.baseAddress, bytes.count > 1 else { return bytes.allSatisfy { $0 == 0 } }
            return bytes[0] == 0 && memcmp(base, base + 1, bytes.count - 1) == 0
        }
        if zeros { return false }
        // ext4 superblock at 1024: magic 0xEF53 at +56, volume label at +120.
        if head.count >= 1024 + 136, head[1024 + 56] == 0x53, head[1024 + 57] == 0xEF {
            let label = String(decoding: head[(1024 + 120)..<(1024 + 136)].prefix { $0 != 0 }, as: UTF8.self)
            if label == scratchLabel { return true }
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

/// A file system the check mounted with mount(2) and unmounts with umount(2): mount(8) and
/// umount(8) would each be another process start, a few hundred ms under TCG.
struct Mount {
    let path: String

    init(source: String, at path: String, type: String, options: String? = nil, rec: CheckRecorder) throws {
        self.path = path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        rec.note("+ mount -t \(type)\(options.map { " -o \($0)" } ?? "") \(source) \(path)   (mount(2))")
        let rc = options.map { data in data.withCString { mount(source, path, type, 0, $0) } } ?? mount(source, path, type, 0, nil)
        guard rc == 0 else { throw CheckFailure("mount -t \(type) \(source) \(path): \(Errno.current)") }
    }

    func unmount(_ rec: CheckRecorder) {
        rec.note("+ umount \(path)   (umount(2))")
        if umount2(path, 0) != 0 { rec.fail("umount \(path): \(Errno.current)") }
    }
}
