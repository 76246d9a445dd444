import ArgumentParser
import Foundation
import KernelTree
import LabSupport

extension P2PLabCommand {
    /// Work with patch series: fetch one by Message-ID, import whitespace-mangled mail text.
    struct Series: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "series",
            abstract: "Work with patch series: fetch one from the list by Message-ID, import whitespace-mangled mail text.",
            subcommands: [Fetch.self, Import.self])
    }
}

extension P2PLabCommand.Series {
    /// Repairs a series copied from a web archive into `git format-patch` files.
    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "import",
            abstract: "Repair a whitespace-mangled series (mail text) into git format-patch files.",
            discussion: """
                Context and removed lines are matched against the tree, ignoring whitespace, and taken \
                verbatim from it; added lines are re-indented from the code around them. A hunk that \
                matches in several places is refused with the hunk shown.
                """)

        @Argument(help: "The mail text (a patch series copied from a web archive).")
        var file: String

        @Option(help: "The kernel tree the series is meant for (default: the cached Debian 6.12 source).")
        var tree: String?

        @Option(help: "With --tree: the commit to match against.")
        var base: String = "HEAD"

        @Option(help: "Where to write the patches and the series file.")
        var output: String = "imported-series"

        @Option(help: "Cache directory (default: $P2PLAB_CACHE or ~/.cache/p2plab).")
        var cache: String?

        func run() async throws {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw SeriesError.unreadable(file)
            }
            let runner = Runner()
            let root: URL
            let rev: String?
            if let tree {
                root = URL(fileURLWithPath: tree)
                let isGit = FileManager.default.fileExists(atPath: root.appendingPathComponent(".git").path)
                rev = isGit ? base : nil
            } else {
                let cacheLayout = CacheLayout(root: cache.map { URL(fileURLWithPath: $0) })
                let source = try await SourceManager(cache: cacheLayout, runner: runner, progress: progressLine).prepare(.defaultDebian)
                root = source.workdir
                rev = source.baseCommit
            }
            // Read every file the diffs name up front, from the commit (not the checkout, which
            // may hold another variant).
            var files: [String: [String]] = [:]
            for line in text.split(separator: "\n") where line.hasPrefix("diff --git ") {
                guard let b = line.split(separator: " ").last, b.hasPrefix("b/") else { continue }
                let path = String(b.dropFirst(2))
                if files[path] != nil { continue }
                if let rev {
                    let r = try await runner.capture(Command(["git", "-C", root.path, "show", "\(rev):\(path)"]))
                    if r.succeeded {
                        var lines = r.standardOutput.components(separatedBy: "\n")
                        if lines.last == "" { lines.removeLast() }
                        files[path] = lines
                    }
                } else if let lines = MangledImport.treeReader(root)(path) {
                    files[path] = lines
                }
            }
            let snapshot = files
            let result = try MangledImport(readFile: { snapshot[$0] }).run(text: text)
            let out = URL(fileURLWithPath: output)
            try FileManager.default.ensureDirectory(out)
            for patch in result.patches {
                try patch.text.write(to: out.appendingPathComponent(patch.name), atomically: true, encoding: .utf8)
            }
            try (result.patches.map(\.name).joined(separator: "\n") + "\n")
                .write(to: out.appendingPathComponent("series"), atomically: true, encoding: .utf8)
            for patch in result.patches { print("wrote \(out.appendingPathComponent(patch.name).path)") }
            for note in result.notes { print("note: \(note.patch): \(note.file): \(note.message)") }
            if !result.missing.isEmpty {
                print("missing: patch \(result.missing.map { "\($0)/\(result.total)" }.joined(separator: ", ")) is not in the text (add it by hand; the series file lists what was imported)")
            }
        }
    }
}

extension P2PLabCommand.Series {
    /// Fetches a series from the list archive with `b4 am`.
    struct Fetch: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "fetch",
            abstract: "Fetch a series by Message-ID with b4 am, ready for --series.",
            discussion: """
                Runs `b4 am -o OUTPUT MSGID` (b4 is on PyPI: pip install b4) and prints the .mbx to pass \
                to --series; b4 also writes the cover letter beside it, whose Message-ID becomes the \
                series' id in the build manifest. Offline, with the thread saved as an mbox, --mbox FILE \
                makes b4 read it instead of the archive. Without network it says what to run instead \
                and exits 10; without b4 it exits 3.
                """)

        @Argument(help: "The Message-ID of the cover letter (or of any patch), with or without <>, or a lore link.")
        var messageID: String

        @Option(help: "Where b4 writes the .mbx and the .cover (default: here, as b4 does).")
        var output: String = "."

        @Option(help: "A saved mbox of the thread: b4 reads it instead of the archive (no network needed).")
        var mbox: String?

        func run() async throws {
            let fetched = try await SeriesFetcher(runner: Runner()).fetch(
                messageID, output: URL(fileURLWithPath: output), mbox: mbox.map { URL(fileURLWithPath: $0) })
            let series = fetched.series
            print("wrote \(fetched.mbox.path): \(series.patches.count) patches" + (series.id.map { ", series \($0)" } ?? ""))
            for patch in series.patches { print("  \(patch.index) \(patch.subject)") }
            print("build it: p2plab build --series \(shellQuote(fetched.mbox.path))")
        }
    }
}
