import Foundation
import Testing

/// A tool from the tools venv (`scripts/setup --tools`) or PATH.
func tool(_ name: String) -> String? {
    let tools = ProcessInfo.processInfo.environment["P2PLAB_TOOLS"] ?? NSHomeDirectory() + "/.cache/p2plab-tools"
    let candidates = ["\(tools)/venv/bin/\(name)"] + (ProcessInfo.processInfo.environment["PATH"] ?? "")
        .split(separator: ":").map { "\($0)/\(name)" }
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
}

let actionlint = tool("actionlint")
let shellcheck = tool("shellcheck")

/// Runs a command in the checkout, returning its status and combined output.
func runTool(_ executable: String, _ arguments: [String], input: String? = nil, in directory: URL = repoRoot) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.currentDirectoryURL = directory
    let output = Pipe(), stdin = Pipe()
    process.standardOutput = output
    process.standardError = output
    process.standardInput = stdin
    try process.run()
    if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
    try stdin.fileHandleForWriting.close()
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return (process.terminationStatus, text)
}

/// action.yml's composite steps as a reusable workflow's job, so actionlint checks them the way it
/// checks workflows (expressions, the actions they use, shellcheck of every run: script).
func actionAsWorkflow() throws -> String {
    let text = try String(contentsOf: repoRoot.appendingPathComponent("action.yml"), encoding: .utf8)
    let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    func block(_ key: String) -> [String] {
        guard let start = lines.firstIndex(of: "\(key):") else { return [] }
        return Array(lines[(start + 1)...].prefix { $0.isEmpty || $0.hasPrefix(" ") })
    }
    let inputs = block("inputs").compactMap { line -> String? in
        guard line.hasPrefix("  "), !line.hasPrefix("   "), line.hasSuffix(":") else { return nil }
        return String(line.dropFirst(2).dropLast())
    }
    let runs = block("runs")
    guard let stepsAt = runs.firstIndex(of: "  steps:") else { throw CocoaError(.fileReadCorruptFile) }
    let steps = runs[(stepsAt + 1)...].map { $0.isEmpty ? $0 : "  " + $0 }
    var out = ["name: action.yml as a workflow", "on:", "  workflow_call:", "    inputs:"]
    for input in inputs { out += ["      \(input):", "        type: string", "        required: false"] }
    out += ["jobs:", "  action:", "    runs-on: ubuntu-latest", "    steps:"] + steps
    return out.joined(separator: "\n") + "\n"
}

@Suite("GitHub workflows and the action, linted by actionlint", .serialized,
       .enabled(if: actionlint != nil, "actionlint not installed: run scripts/setup --tools (PyPI actionlint in ~/.cache/p2plab-tools/venv), as .ci/run does"))
struct WorkflowLintTests {
    var shellcheckFlag: String { "-shellcheck=\(shellcheck ?? "")" }

    @Test("the workflows lint clean (with shellcheck on their run: scripts, and the local action's inputs)")
    func workflows() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: repoRoot.appendingPathComponent(".github/workflows").path)
            .filter { $0.hasSuffix(".yml") }.sorted().map { ".github/workflows/\($0)" }
        #expect(files.count >= 2)
        let result = try runTool(actionlint!, [shellcheckFlag] + files)
        print("actionlint \(files.joined(separator: " ")): exit \(result.status)\n\(result.output)")
        #expect(result.status == 0, "\(result.output)")
        if shellcheck == nil { print("shellcheck not installed: actionlint did not check the run: scripts") }
    }

    @Test("action.yml's steps lint clean as a workflow job")
    func action() throws {
        let workflow = try actionAsWorkflow()
        #expect(workflow.contains("uses: actions/cache@"))
        let result = try runTool(actionlint!, [shellcheckFlag, "-stdin-filename", "action.yml", "-"], input: workflow)
        print("actionlint action.yml: exit \(result.status)\n\(result.output)")
        #expect(result.status == 0, "\(result.output)\n\(workflow)")
    }

    @Test("actionlint is alive: it rejects a workflow with a bad expression and an unknown input of the action")
    func rejectsBrokenWorkflow() throws {
        let broken = """
            on: push
            jobs:
              t:
                runs-on: ubuntu-latest
                steps:
                  - uses: actions/checkout@v5
                  - uses: ./
                    with:
                      no-such-input: x
                  - run: echo ${{ matrix.nope }}

            """
        // A scratch repository holding our action.yml, so `uses: ./` resolves to it.
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-lint-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: scratch) }
        try FileManager.default.createDirectory(at: scratch.appendingPathComponent(".github/workflows"), withIntermediateDirectories: true)
        // actionlint finds the project (and so the local action) by its .git directory.
        try FileManager.default.createDirectory(at: scratch.appendingPathComponent(".git"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: repoRoot.appendingPathComponent("action.yml"), to: scratch.appendingPathComponent("action.yml"))
        try broken.write(to: scratch.appendingPathComponent(".github/workflows/probe.yml"), atomically: true, encoding: .utf8)
        let result = try runTool(actionlint!, [".github/workflows/probe.yml"], in: scratch)
        #expect(result.status != 0)
        #expect(result.output.contains("no-such-input"))
        #expect(result.output.contains("nope"))
    }

    @Test("the scripts the workflows run pass shellcheck", .enabled(if: shellcheck != nil, "shellcheck not installed: scripts/setup --tools"))
    func scripts() throws {
        let result = try runTool(shellcheck!, ["scripts/in-container", "scripts/ci-action", "scripts/setup", "scripts/test", ".ci/run"])
        #expect(result.status == 0, "\(result.output)")
    }
}
