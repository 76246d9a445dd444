import ArgumentParser
import Foundation
import KernelTree
import LabPipeline
import LabSupport
import Machine

/// A YAML document built in order: maps keep their keys' order, scalars are written quoted (a JSON
/// string is a YAML string), so the output reads like a hand-written LAVA job and parses exactly.
indirect enum YAMLNode {
    case map([(String, YAMLNode)])
    case list([YAMLNode])
    case string(String)
    case int(Int)
    case bool(Bool)

    func render(indent: Int = 0) -> String {
        let pad = String(repeating: " ", count: indent)
        switch self {
        case .map(let entries):
            return entries.map { key, value in
                switch value {
                case .map(let inner) where !inner.isEmpty: "\(pad)\(key):\n" + value.render(indent: indent + 2)
                case .list(let items) where !items.isEmpty: "\(pad)\(key):\n" + value.render(indent: indent)
                default: "\(pad)\(key): \(value.scalar)\n"
                }
            }.joined()
        case .list(let items):
            return items.map { item in
                switch item {
                case .map(let entries) where !entries.isEmpty:
                    // The first key shares the dash's line.
                    let body = item.render(indent: indent + 2)
                    return pad + "- " + body.dropFirst(indent + 2)
                case .list(let inner) where !inner.isEmpty:
                    return pad + "-\n" + item.render(indent: indent + 2)
                default:
                    return "\(pad)- \(item.scalar)\n"
                }
            }.joined()
        default:
            return pad + scalar + "\n"
        }
    }

    var scalar: String {
        switch self {
        case .string(let s):
            let data = (try? JSONSerialization.data(withJSONObject: [s], options: [.withoutEscapingSlashes])) ?? Data("[\"\"]".utf8)
            return String(String(decoding: data, as: UTF8.self).dropFirst().dropLast())
        case .int(let n): return String(n)
        case .bool(let b): return b ? "true" : "false"
        case .map: return "{}"
        case .list: return "[]"
        }
    }
}

/// A LAVA job that runs the p2plab suite on a board (or the lab machine under LAVA's QEMU): deploy
/// the built kernel and modules, boot, run `p2plab check` from a test definition that reports each
/// check as a LAVA test case with its KTAP outcome.
struct LavaJob {
    var deviceType: String
    var kernelURL: String
    var modulesURL: String?
    var rootfsURL: String?
    var bootMethod = "grub"
    var p2plabRepository: String
    var p2plabRevision: String
    var checks: [String] = []
    var moduleURL: String?
    var jobMinutes = 90
    var name: String
    /// The QEMU variant: the lab machine's devices (switch, CMB NVMe) from its definition.
    var machine: MachineDefinition?
    /// Blank namespace images for the QEMU variant's NVMe drives, by device id.
    var namespaceURLs: [String: String] = [:]
    var metadata: [(String, String)] = []

    static let suiteName = "p2plab"
    static let prompt = "root@[^:]*:[^#]*#"

    /// The test definition's shell steps: fetch p2plab, run the suite, one lava-test-case per KTAP result.
    var runSteps: [String] {
        let filters = checks.map { " --filter " + shellQuote([$0]) }.joined()
        return [
            "RESULTS=/tmp/p2plab-results; rm -rf \"$RESULTS\" /tmp/p2plab && mkdir -p \"$RESULTS\"",
            "git clone --quiet \"$P2PLAB_REPOSITORY\" /tmp/p2plab && git -C /tmp/p2plab checkout --quiet \"$P2PLAB_REVISION\"",
            "MODULE_ARGS=; if [ -n \"$P2PLAB_MODULE_URL\" ]; then wget -q -O \"$RESULTS/p2plab_test.ko\" \"$P2PLAB_MODULE_URL\" && MODULE_ARGS=\"--module $RESULTS/p2plab_test.ko\"; fi",
            // The README's real-hardware step 3: as root, the module built against the running kernel.
            "cd /tmp/p2plab && ./p2plab check $MODULE_ARGS\(filters) --results \"$RESULTS\" >\"$RESULTS/check.log\" 2>&1; echo \"p2plab check exit status $?\"",
            "cat \"$RESULTS/results.ktap\" || tail -n 40 \"$RESULTS/check.log\"",
            // Each KTAP result line becomes a LAVA test case: not ok → fail, # SKIP → skip, ok → pass.
            "grep -E '^(not )?ok [0-9]+ ' \"$RESULTS/results.ktap\" | while read -r line; do case \"$line\" in 'not ok '*) result=fail ;; *'# SKIP'*) result=skip ;; *) result=pass ;; esac; name=$(echo \"$line\" | sed -E 's/^(not )?ok [0-9]+ ([^ #]+).*/\\2/'); lava-test-case \"$name\" --result \"$result\"; done",
            "lava-test-case p2plab-suite-ran --result $(test -s \"$RESULTS/results.ktap\" && echo pass || echo fail)",
        ]
    }

    /// The test definition, inline.
    var testDefinition: YAMLNode {
        .map([
            ("metadata", .map([
                ("format", .string("Lava-Test Test Definition 1.0")),
                ("name", .string(Self.suiteName)),
                ("description", .string("p2plab's P2PDMA-in-userspace-RDMA checks (KTAP), one test case per check")),
                ("os", .list([.string("debian")])),
                ("scope", .list([.string("functional")])),
            ])),
            ("params", .map([
                ("P2PLAB_REPOSITORY", .string(p2plabRepository)), ("P2PLAB_REVISION", .string(p2plabRevision)),
                ("P2PLAB_MODULE_URL", .string(moduleURL ?? "")),
            ])),
            ("run", .map([("steps", .list(runSteps.map(YAMLNode.string)))])),
        ])
    }

    var document: YAMLNode {
        var top: [(String, YAMLNode)] = [
            ("device_type", .string(machine == nil ? deviceType : "qemu")),
            ("job_name", .string(name)),
            ("timeouts", .map([
                ("job", .map([("minutes", .int(jobMinutes))])),
                ("action", .map([("minutes", .int(30))])),
                ("connection", .map([("minutes", .int(2))])),
            ])),
            ("priority", .string("medium")),
            ("visibility", .string("public")),
        ]
        if !metadata.isEmpty { top.append(("metadata", .map(metadata.map { ($0.0, YAMLNode.string($0.1)) }))) }
        var actions: [YAMLNode] = []
        if let machine {
            let (context, images) = qemu(machine)
            top.append(("context", context))
            actions.append(.map([("deploy", .map([
                ("timeout", .map([("minutes", .int(10))])), ("to", .string("tmpfs")), ("images", images),
            ]))]))
            actions.append(.map([("boot", .map([
                ("timeout", .map([("minutes", .int(10))])), ("method", .string("qemu")), ("media", .string("tmpfs")),
                ("prompts", .list([.string(Self.prompt)])),
                ("auto_login", .map([("login_prompt", .string("login:")), ("username", .string("root"))])),
            ]))]))
        } else {
            var deploy: [(String, YAMLNode)] = [
                ("timeout", .map([("minutes", .int(10))])), ("to", .string("tftp")),
                ("kernel", .map([("url", .string(kernelURL))])),
            ]
            if let modulesURL { deploy.append(("modules", .map([("url", .string(modulesURL)), ("compression", .string(Self.compression(modulesURL)))]))) }
            if let rootfsURL { deploy.append(("nfsrootfs", .map([("url", .string(rootfsURL)), ("compression", .string(Self.compression(rootfsURL)))]))) }
            actions.append(.map([("deploy", .map(deploy))]))
            var boot: [(String, YAMLNode)] = [
                ("timeout", .map([("minutes", .int(15))])), ("method", .string(bootMethod)),
            ]
            if ["grub", "u-boot", "ipxe", "grub-efi"].contains(bootMethod) { boot.append(("commands", .string(rootfsURL == nil ? "ramdisk" : "nfs"))) }
            boot.append(("prompts", .list([.string(Self.prompt)])))
            actions.append(.map([("boot", .map(boot))]))
        }
        actions.append(.map([("test", .map([
            ("timeout", .map([("minutes", .int(max(10, jobMinutes - 30)))])),
            ("definitions", .list([.map([
                ("from", .string("inline")), ("name", .string(Self.suiteName)), ("path", .string("inline/p2plab.yaml")),
                ("repository", testDefinition),
            ])])),
        ]))]))
        top.append(("actions", .list(actions)))
        return .map(top)
    }

    /// LAVA's qemu device type: the lab machine's CPU, memory and PCIe devices as context, the
    /// kernel, root filesystem and NVMe namespaces as images.
    func qemu(_ machine: MachineDefinition) -> (context: YAMLNode, images: YAMLNode) {
        var line = QEMUCommandLine()
        for port in machine.rootPorts ?? [] { line.addRootPort(id: port.id, chassis: port.chassis) }
        for spec in machine.switches { line.addSwitch(spec) }
        var images: [(String, YAMLNode)] = []
        let append = (["console=ttyS0,115200", "root=/dev/vda", "rw"] + machine.kernelArguments).joined(separator: " ")
        images.append(("kernel", .map([("url", .string(kernelURL)), ("image_arg", .string("-kernel {kernel} -append \"\(append)\""))])))
        images.append(("rootfs", .map([("url", .string(rootfsURL ?? "")), ("image_arg", .string("-drive format=raw,file={rootfs},if=virtio"))])))
        var devices: [String] = []
        for device in machine.nvme {
            var nvme = QEMUCommandLine()
            nvme.addNVMe(id: device.id, serial: device.serial, image: URL(fileURLWithPath: "/{\(device.id)}"), cmbMiB: device.cmbMiB, bus: device.bus)
            // -blockdev NODE, -device nvme,…: the block node names the image LAVA downloads.
            let args = nvme.arguments  // -blockdev SPEC -device SPEC
            images.append((device.id, .map([
                ("url", .string(namespaceURLs[device.id] ?? "")),
                ("image_arg", .string("-blockdev " + args[1].replacingOccurrences(of: "file.filename=/{", with: "file.filename={"))),
            ])))
            devices.append("-device " + args[3])
        }
        var extra: [String] = []
        var args = line.arguments[...]
        while let flag = args.first {
            args = args.dropFirst()
            if let value = args.first, !value.hasPrefix("-") {
                extra.append("\(flag) \(value)")
                args = args.dropFirst()
            } else {
                extra.append(flag)
            }
        }
        let context: YAMLNode = .map([
            ("arch", .string("amd64")), ("machine", .string(machine.machine)), ("cpu", .string(machine.cpu)),
            ("memory", .int(machine.memoryMiB)), ("extra_options", .list((extra + devices + ["-smp \(machine.cpus)"]).map(YAMLNode.string))),
        ])
        return (context, .map(images))
    }

    static func compression(_ url: String) -> String {
        if url.hasSuffix(".xz") { return "xz" }
        if url.hasSuffix(".gz") || url.hasSuffix(".tgz") { return "gz" }
        if url.hasSuffix(".bz2") { return "bz2" }
        if url.hasSuffix(".zst") { return "zstd" }
        return "none"
    }
}

extension P2PLabCommand {
    /// Write a LAVA job definition that runs the suite on a board, or on LAVA's QEMU.
    struct LavaJobCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "lava-job",
            abstract: "Write a LAVA job that deploys the built kernel to a board, boots it and runs p2plab check.",
            discussion: """
                The job deploys the kernel (default: the latest p2plab build) and modules over TFTP, \\
                boots with --boot-method, and runs an inline test definition that fetches p2plab, runs \\
                `p2plab check` as root (the test module is built against the running kernel, or \\
                downloaded from --module-url) and reports every check as a LAVA test case with its KTAP \\
                outcome (ok: pass, not ok: fail, SKIP: skip). --device-type qemu writes the QEMU \\
                variant instead: LAVA's qemu device type with the lab machine's PCIe switch and CMB \\
                NVMe (vm/lab.json, or --machine), a root filesystem image (--rootfs) and blank NVMe \\
                namespace images (--namespace-url). Submit it with lavacli jobs submit FILE.
                """)

        @Option(help: "The LAVA device type of the board (qemu: the QEMU variant).")
        var deviceType: String

        @Option(help: ArgumentHelp("URL of the kernel image (default: file:// of the latest p2plab build's bzImage).", valueName: "URL"))
        var kernel: String?

        @Option(help: ArgumentHelp("URL of a modules tarball (make modules_install output) to install on the board.", valueName: "URL"))
        var modules: String?

        @Option(help: ArgumentHelp("The root filesystem: an NFS root tarball for a board, a raw disk image for qemu.", valueName: "URL"))
        var rootfs: String?

        @Option(help: "How the board boots: grub, ipxe, u-boot, minimal, …")
        var bootMethod: String = "grub"

        @Option(help: ArgumentHelp("The p2plab repository the board clones (default: this checkout's origin).", valueName: "URL"))
        var p2plabRepository: String?

        @Option(help: ArgumentHelp("The p2plab revision (default: this checkout's commit).", valueName: "REF"))
        var p2plabRevision: String?

        @Option(name: .customLong("check"), help: ArgumentHelp("Run only checks matching this glob (repeatable).", valueName: "GLOB"))
        var checks: [String] = []

        @Option(help: ArgumentHelp("URL of a prebuilt p2plab_test.ko for the deployed kernel.", valueName: "URL"))
        var moduleUrl: String?

        @Option(help: ArgumentHelp("The QEMU variant's machine definition: a name in vm/ or a .json path.", valueName: "NAME"))
        var machine: String = MachineDefinition.defaultName

        @Option(name: .customLong("namespace-url"), help: ArgumentHelp("The QEMU variant: ID=URL of a blank image for an NVMe namespace (repeatable).", valueName: "ID=URL"))
        var namespaceURLs: [String] = []

        @Option(help: ArgumentHelp("Minutes the whole job may take.", valueName: "MINUTES"))
        var timeout: Int = 90

        @Option(name: .shortAndLong, help: ArgumentHelp("Write the job here instead of stdout.", valueName: "FILE"))
        var output: String?

        func validate() throws {
            if deviceType.isEmpty { throw ValidationError("--device-type names the LAVA device type of your board, or qemu") }
            if deviceType == "qemu" && rootfs == nil {
                throw ValidationError("the qemu variant boots a root filesystem image: pass --rootfs URL (a raw Debian 12 image with p2plab's packages)")
            }
            if timeout < 20 { throw ValidationError("--timeout is the whole job's minutes: 20 or more") }
            for entry in namespaceURLs where !entry.contains("=") { throw ValidationError("--namespace-url takes ID=URL, got \(entry)") }
        }

        func run() async throws {
            let root = try ProjectPaths.requireRoot()
            let cache = CacheLayout()
            let latest = (try? Data(contentsOf: cache.latestBuild)).flatMap { try? JSONDecoder().decode(BuildManifest.self, from: $0) }
            guard let kernelURL = kernel ?? latest.map({ URL(fileURLWithPath: $0.bzImage).absoluteString }) else {
                throw LavaJobError.noKernel
            }
            var definition: MachineDefinition?
            if deviceType == "qemu" {
                definition = try MachineDefinition.load(named: machine, vmDirectory: root.appendingPathComponent("vm"))
            }
            var job = LavaJob(
                deviceType: deviceType, kernelURL: kernelURL, modulesURL: modules, rootfsURL: rootfs, bootMethod: bootMethod,
                p2plabRepository: p2plabRepository ?? Self.originURL(root) ?? "https://github.com/p2plab/p2plab.git",
                p2plabRevision: p2plabRevision ?? Self.revision(root), checks: checks, moduleURL: moduleUrl, jobMinutes: timeout,
                name: "p2plab on \(deviceType): \(latest.map { "\($0.kernelRelease) \($0.variant)" } ?? kernelURL)",
                machine: definition)
            for entry in namespaceURLs {
                let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
                job.namespaceURLs[parts[0]] = parts[1]
            }
            if let latest, kernel == nil {
                job.metadata = [
                    ("p2plab.kernel_release", latest.kernelRelease), ("p2plab.variant", latest.variant),
                    ("p2plab.config_hash", latest.configHash), ("p2plab.head", latest.head),
                ]
            }
            if let definition {
                for device in definition.nvme where job.namespaceURLs[device.id] == nil {
                    throw LavaJobError.missingNamespace(device.id, namespaceMiB: device.namespaceMiB)
                }
            }
            let text = "# LAVA job written by p2plab lava-job; submit with: lavacli jobs submit FILE\n" + job.document.render()
            if let output {
                do {
                    try text.write(toFile: output, atomically: true, encoding: .utf8)
                } catch {
                    throw ReportError.cannotWrite(path: output, reason: error.localizedDescription)
                }
                print("wrote \(output)")
            } else {
                print(text, terminator: "")
            }
        }

        /// The checkout's commit.
        static func revision(_ root: URL) -> String { ProjectPaths.commit(of: root) ?? ProjectPaths.version }

        /// `git remote get-url origin` of the checkout, read from .git/config.
        static func originURL(_ root: URL) -> String? {
            guard let config = try? String(contentsOf: root.appendingPathComponent(".git/config"), encoding: .utf8) else { return nil }
            var inOrigin = false
            for line in config.split(separator: "\n") {
                let text = line.trimmingCharacters(in: .whitespaces)
                if text.hasPrefix("[") { inOrigin = text == "[remote \"origin\"]" }
                if inOrigin, text.hasPrefix("url = ") { return String(text.dropFirst(6)) }
            }
            return nil
        }
    }
}

/// Why a LAVA job could not be written.
enum LavaJobError: LabError {
    case noKernel
    case missingNamespace(String, namespaceMiB: Int)

    var exitCode: LabExit { .usage }

    var description: String {
        switch self {
        case .noKernel:
            "no kernel to deploy: run p2plab build first, or pass --kernel URL"
        case .missingNamespace(let id, let mib):
            "the qemu variant needs a blank image for NVMe \(id): pass --namespace-url \(id)=URL (a \(mib) MiB file of zeros, e.g. truncate -s \(mib)M \(id).img)"
        }
    }
}
