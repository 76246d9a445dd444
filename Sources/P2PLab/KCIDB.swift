import Foundation
import KTAP
import KernelTree
import LabPipeline
import LabSupport

/// KCIDB I/O schema v5.3 (the KernelCI common results database): one checkout (base commit plus the
/// applied patchset), one build, and one test per check for each run directory.
///
/// Paths are dotted under `p2plab.` (`p2plab.regmr.p2pmem`); statuses map pass → PASS,
/// fail/crashed → FAIL, timeout → ERROR, not run or could not test → MISS, skip → SKIP.
struct KCIDBReport {
    static let major = 5
    static let minor = 3

    /// The submitting CI system, the prefix of every id (`[a-z0-9_]+`).
    var origin = "p2plab"
    /// When set, file links become BASE/<run directory name>/<file> (where CI uploaded the runs).
    var urlBase: String?

    /// One run directory as KCIDB objects.
    struct Objects {
        var checkout: [String: Any]
        var build: [String: Any]
        var tests: [[String: Any]]
    }

    /// The KCIDB document for `directories`, as JSON text.
    func render(_ directories: [URL]) throws -> String {
        var checkouts: [[String: Any]] = [], builds: [[String: Any]] = [], tests: [[String: Any]] = []
        for directory in directories {
            let objects = try self.objects(directory)
            if !checkouts.contains(where: { ($0["id"] as? String) == (objects.checkout["id"] as? String) }) {
                checkouts.append(objects.checkout)
            }
            builds.append(objects.build)
            tests += objects.tests
        }
        let document: [String: Any] = [
            "version": ["major": Self.major, "minor": Self.minor], "checkouts": checkouts, "builds": builds, "tests": tests,
        ]
        let data = try JSONSerialization.data(withJSONObject: document, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    func objects(_ directory: URL) throws -> Objects {
        let record = try RunRecord.load(from: directory)
        let run: TestRun? = try? RunLoader.load(runDirectory: directory)
        guard record != nil || run != nil else { throw ReportError.emptyRunDirectory(directory.path) }
        let boot = BootSummary.load(directory)
        let manifest = record?.manifest
        let started = boot?.started ?? manifest?.createdAt
        let patches = record?.appliedPatchFiles(in: directory) ?? []

        // The checkout: the base commit plus the patchset applied to it.
        var checkout: [String: Any] = ["origin": origin]
        // The build manifest's own patchset hash (same definition) when the build recorded one.
        let patchsetHash = patches.isEmpty ? "" : (manifest?.patchsetHash.flatMap { $0.isEmpty ? nil : $0 } ?? Self.patchsetHash(patches))
        if let manifest {
            let base = manifest.baseCommit
            checkout["id"] = "\(origin):\(base.prefix(12))-\(patchsetHash.isEmpty ? "baseline" : String(patchsetHash.prefix(16)))"
            if Self.isCommitHash(base) { checkout["git_commit_hash"] = base }
            checkout["tree_name"] = manifest.sourceId.hasPrefix("debian-") ? "debian-linux-6.12" : manifest.sourceId
            checkout["comment"] = "\(manifest.source), \(manifest.variant): " +
                (manifest.patches.isEmpty ? "no patches" : manifest.patches.map(\.subject).joined(separator: "; "))
            checkout["patchset_hash"] = patchsetHash
            checkout["valid"] = true
        } else {
            let kernel = Self.diagnostic("kernel", in: run) ?? run?.metadata[RunMetadata.Keys.kernel] ?? "unknown"
            checkout["id"] = "\(origin):kernel-\(Self.idSafe(kernel))"
            checkout["comment"] = "the running kernel \(kernel) (no build record: results from p2plab check)"
        }
        if !patches.isEmpty {
            checkout["patchset_files"] = patches.map { ["name": $0.lastPathComponent, "url": url(for: $0, in: directory)] }
        }
        // The series' Message-ID as the build recorded it (cover letter, else first patch), else the patches' headers.
        let recorded = (manifest?.seriesID).flatMap { $0.isEmpty ? nil : $0 }
            ?? manifest?.patches.lazy.compactMap(\.messageID).first
        if let messageID = recorded.map({ $0.trimmingCharacters(in: CharacterSet(charactersIn: "<>")) }).flatMap({ $0.contains("@") ? $0 : nil })
            ?? Self.messageID(patches) {
            checkout["message_id"] = messageID
        }
        if let started { checkout["start_time"] = started }
        let checkoutID = checkout["id"] as! String

        // The build.
        var build: [String: Any] = ["origin": origin, "checkout_id": checkoutID, "architecture": "x86_64"]
        if let manifest {
            build["id"] = "\(checkoutID)-\(manifest.configHash.prefix(12))"
            build["config_name"] = (baseConfigRecipe + manifest.fragments.map { URL(fileURLWithPath: $0).lastPathComponent }).joined(separator: "+")
            build["compiler"] = manifest.compiler
            build["duration"] = manifest.buildSeconds
            build["start_time"] = manifest.createdAt
            build["status"] = "PASS"
            build["log_url"] = Self.fileURL(manifest.log)
            build["config_url"] = Self.fileURL(manifest.config)
            build["output_files"] = [["name": "bzImage", "url": Self.fileURL(manifest.bzImage)]]
            build["misc"] = [
                "config_hash": manifest.configHash, "kernel_release": manifest.kernelRelease, "variant": manifest.variant,
                "cache_hit": manifest.cacheHit, "head": manifest.head,
            ] as [String: Any]
        } else {
            build["id"] = "\(checkoutID)-\(record?.label ?? "running")"
            if let problem = record?.problem {
                // Nothing was built (or the build failed): say so on the build.
                build["status"] = record?.problemExit == LabExit.buildFailed.rawValue ? "FAIL" : "ERROR"
                build["log_excerpt"] = Self.clip(problem)
            } else {
                build["comment"] = "the running kernel: built and installed outside p2plab"
            }
        }
        let buildID = build["id"] as! String

        // The environment the checks ran in.
        var environment: [String: Any] = [:]
        var environmentMisc: [String: Any] = [:]
        if let run, let machine = run.metadata[RunMetadata.Keys.machine] {
            let accel = run.metadata[RunMetadata.Keys.accel] ?? boot?.accel ?? "?"
            environment["comment"] = "QEMU machine \(machine) (vm/\(machine).json), \(accel)"
            environmentMisc["machine"] = machine
            environmentMisc["accel"] = accel
            if let line = run.metadata[RunMetadata.Keys.qemuCommandLine], !line.isEmpty { environmentMisc["qemu_command_line"] = line }
        } else {
            environment["comment"] = "real hardware"
        }
        for key in ["provider", "rdma_device", "kernel"] {
            if let value = Self.diagnostic(key, in: run) { environmentMisc[key] = value }
        }
        if !environmentMisc.isEmpty { environment["misc"] = environmentMisc }

        // One test per check.
        let stamp = Self.idSafe(started ?? directory.lastPathComponent)
        var tests: [[String: Any]] = []
        let console = directory.appendingPathComponent("console.log")
        func test(path: String, status: String) -> [String: Any] {
            var t: [String: Any] = [
                "origin": origin, "build_id": buildID, "id": "\(buildID):\(stamp):\(path)", "path": path, "status": status,
                "environment": environment,
            ]
            if let started { t["start_time"] = started }
            if FileManager.default.fileExists(atPath: console.path) { t["log_url"] = url(for: console, in: directory) }
            return t
        }
        if let problem = record?.problem {
            var t = test(path: "p2plab", status: "MISS")
            t["log_excerpt"] = Self.clip(problem)
            t["misc"] = ["variant": record?.label ?? "", "boot_outcome": record?.bootOutcome ?? ""]
            tests.append(t)
        } else if let run {
            for leaf in run.leaves {
                let result = leaf.test
                var t = test(path: (["p2plab"] + (leaf.path + [result.name]).map(Self.pathComponent)).joined(separator: "."),
                             status: Self.status(result.status))
                if let duration = result.duration { t["duration"] = duration }
                let summary = result.summary
                if !summary.isEmpty { t["log_excerpt"] = Self.clip(summary) }
                var misc: [String: Any] = ["ktap_status": result.status.rawValue]
                if let errno = result.errno { misc["errno"] = errno }
                if let reason = result.reason, !reason.isEmpty { misc["reason"] = reason }
                if let expected = result.expected { misc["expected"] = expected }
                if let observed = result.observed { misc["observed"] = observed }
                if !result.diagnostics.isEmpty { misc["diagnostics"] = result.diagnostics }
                if !result.splats.isEmpty { misc["splats"] = result.splats }
                if let label = record?.label { misc["variant"] = label }
                t["misc"] = misc
                tests.append(t)
            }
            if run.crashed, let panic = run.consoleFindings.first(where: { $0.kind == .panic }) {
                // The kernel itself: a crash is a FAIL of the boot, beside the check that was running.
                var t = test(path: "p2plab.kernel", status: "FAIL")
                t["log_excerpt"] = Self.clip(panic.text)
                tests.append(t)
            }
        }
        return Objects(checkout: checkout, build: build, tests: tests)
    }

    static func status(_ status: TestStatus) -> String {
        switch status {
        case .pass: "PASS"
        case .fail, .crashed: "FAIL"
        case .timeout: "ERROR"
        case .notRun: "MISS"
        case .skip: "SKIP"
        }
    }

    /// KCIDB path components are `[a-zA-Z0-9_-]+`; anything else becomes `_`.
    static func pathComponent(_ name: String) -> String {
        name.split(separator: ".").map { part in
            String(part.unicodeScalars.map { CharacterSet.alphanumerics.contains($0) && $0.isASCII || $0 == "_" || $0 == "-" ? Character($0) : "_" })
        }.joined(separator: ".")
    }

    static func idSafe(_ text: String) -> String {
        String(text.unicodeScalars.map { ($0.isASCII && CharacterSet.alphanumerics.contains($0)) || "._-".unicodeScalars.contains($0) ? Character($0) : "_" })
    }

    static func isCommitHash(_ text: String) -> Bool {
        text.count == 40 && text.allSatisfy(\.isHexDigit) && text == text.lowercased()
    }

    static func clip(_ text: String) -> String {
        text.count <= 16000 ? text : String(text.prefix(16000)) + "…"
    }

    /// `provider: …` and the like from the suite's preamble.
    static func diagnostic(_ key: String, in run: TestRun?) -> String? {
        run?.diagnostics.first { $0.hasPrefix("\(key): ") }.map { String($0.dropFirst(key.count + 2)) }
    }

    static func fileURL(_ path: String) -> String { URL(fileURLWithPath: path).absoluteString }

    func url(for file: URL, in directory: URL) -> String {
        guard let urlBase else { return file.standardizedFileURL.absoluteString }
        let relative = file.standardizedFileURL.path.replacingOccurrences(of: directory.standardizedFileURL.path + "/", with: "")
        let base = urlBase.hasSuffix("/") ? urlBase : urlBase + "/"
        return base + directory.lastPathComponent + "/" + relative
    }

    /// KCIDB's patchset hash: sha256 over the newline-terminated sha256 of each patch, in order
    /// (`sha256sum *.patch | cut -c-64 | sha256sum | cut -c-64`).
    static func patchsetHash(_ files: [URL]) -> String {
        let hashes = files.compactMap { sha256(try? Data(contentsOf: $0)) }
        guard hashes.count == files.count else { return "" }
        return sha256(Data(hashes.map { $0 + "\n" }.joined().utf8)) ?? ""
    }

    /// SHA-256 of `data` in hex (nil for no data).
    static func sha256(_ data: Data?) -> String? {
        guard let data else { return nil }
        var digest = SHA256()
        digest.update(data)
        return digest.finalizeHex()
    }

    /// The Message-ID the patchset was mailed with: the first patch's header (a mailed series' patches
    /// carry one; git format-patch output does not).
    static func messageID(_ files: [URL]) -> String? {
        for file in files {
            guard let text = try? String(contentsOf: file, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
                if line.isEmpty { break }  // end of the headers
                if line.lowercased().hasPrefix("message-id:") {
                    let id = line.dropFirst("message-id:".count).trimmingCharacters(in: .whitespaces)
                        .trimmingCharacters(in: CharacterSet(charactersIn: "<>"))
                    if id.contains("@") { return id }
                }
            }
        }
        return nil
    }
}

/// The boot's manifest.json (written by the machine room), as far as reports need it.
struct BootSummary: Decodable {
    var started: String?
    var accel: String?
    var machine: String?
    var outcome: String?

    static func load(_ directory: URL) -> BootSummary? {
        guard let data = try? Data(contentsOf: directory.appendingPathComponent("manifest.json")) else { return nil }
        return try? JSONDecoder().decode(BootSummary.self, from: data)
    }
}

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

extension KCIDBReport {
    /// POSTs a KCIDB document to a submission endpoint (KernelCI's KCIDB REST API) with the bearer
    /// token in $KCIDB_TOKEN.
    static func submit(_ json: String, to endpoint: String) async throws {
        guard let token = ProcessInfo.processInfo.environment["KCIDB_TOKEN"], !token.isEmpty else {
            throw ReportError.submitFailed("set KCIDB_TOKEN to the token KernelCI gave you for \(endpoint)")
        }
        guard let url = URL(string: endpoint), url.scheme == "https" || url.scheme == "http" else {
            throw ReportError.submitFailed("\(endpoint) is not an http(s) URL")
        }
        var request = URLRequest(url: url, timeoutInterval: 60)
        request.httpMethod = "POST"
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        request.httpBody = Data(json.utf8)
        let (data, response) = try await URLSession.shared.data(for: request)
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        let body = String(decoding: data.prefix(500), as: UTF8.self)
        guard (200..<300).contains(status) else { throw ReportError.submitFailed("\(endpoint) answered \(status): \(body)") }
        FileHandle.standardError.write(Data("p2plab: submitted to \(endpoint) (\(status)) \(body)\n".utf8))
    }
}
