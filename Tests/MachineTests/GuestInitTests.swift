import Foundation
import LabSupport
import Testing

@testable import Machine

@Suite("Guest init")
struct GuestInitTests {
    let run = RunDirectory(URL(fileURLWithPath: "/cache/runs/r1"))

    func render(command: String?, environment: [String: String] = [:], shares: [GuestShare] = [], rxe: Bool = true) throws -> String {
        var definition = try MachineDefinition.load(named: "lab", vmDirectory: TestPaths.vm)
        definition.rxe = rxe
        let plan = BootPlan(
            kernel: URL(fileURLWithPath: "/k/bzImage"), accel: .tcg, run: run, command: command, environment: environment,
            extraShares: shares, workingDirectory: "/work/it's here", guestSetup: "/b/debug/p2plab-guest-setup")
        return try GuestInit.load(vmDirectory: TestPaths.vm).render(plan: plan, definition: definition)
    }

    @Test("the command is filled in shell-quoted, and every field is replaced")
    func command() throws {
        let text = try render(command: "echo 'a b' && exit 3")
        #expect(text.contains(#"P2PLAB_COMMAND='echo '\''a b'\'' && exit 3'"#))
        #expect(text.contains(#"cd '/work/it'\''s here' 2>/dev/null || cd /"#))
        #expect(text.range(of: "@[A-Z]+@", options: .regularExpression) == nil)
        #expect(text.contains("say \"ready, kernel $release\""))
        // The setup program where it was built; mount and rdma where it was not.
        #expect(text.contains("if [ -x /b/debug/p2plab-guest-setup ]; then\n    /b/debug/p2plab-guest-setup /cache/runs/r1/fstab rxe0 eth0\nelse"))
        #expect(text.contains("rdma link add rxe0 type rxe netdev eth0"))
        #expect(text.contains("mount -a -T /cache/runs/r1/fstab"))
    }

    @Test("without a command, init starts a shell on the serial line")
    func interactive() throws {
        let text = try render(command: nil)
        #expect(text.contains("P2PLAB_COMMAND=''"))
        #expect(text.contains("setsid -c /bin/bash -i </dev/ttyS0"))
    }

    @Test("extra environment is exported quoted; bad names are refused")
    func environment() throws {
        let text = try render(command: "true", environment: ["B": "x y", "A_1": "$HOME"])
        #expect(text.contains("export A_1='$HOME'\nexport B='x y'"))
        #expect(throws: MachineError.self) { try render(command: "true", environment: ["1A": "x"]) }
        #expect(throws: MachineError.self) { try render(command: "true", environment: ["A-B": "x"]) }
    }

    @Test("extra shares are mounted read-only at their host path through the fstab")
    func shares() throws {
        let plan = BootPlan(
            kernel: URL(fileURLWithPath: "/k/bzImage"), accel: .tcg, run: run, command: "true",
            extraShares: [GuestShare(tag: "p2plab-x0", hostPath: "/tmp/my obj", guestPath: "/tmp/my obj")])
        let text = try GuestInit.load(vmDirectory: TestPaths.vm).renderFstab(plan: plan)
        #expect(text.hasSuffix("p2plab-results  /run/p2plab/results  9p        trans=virtio,version=9p2000.L,msize=262144,X-mount.mkdir 0 0\n" + #"p2plab-x0  /tmp/my\040obj  9p  trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro,X-mount.mkdir 0 0"# + "\n"))
        #expect(text.contains(#"p2plab-x0  /tmp/my\040obj  9p  trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro,X-mount.mkdir 0 0"#))
    }

    @Test("a machine without rxe gets no rdma call and no device for the setup program")
    func noRxe() throws {
        let text = try render(command: "true", rxe: false)
        #expect(!text.contains("rdma link add"))
        #expect(text.contains("    /b/debug/p2plab-guest-setup /cache/runs/r1/fstab\nelse"))
    }

    @Test("the template's tmpfs mounts are the directories GuestShare treats as hidden")
    func tmpfsInStep() throws {
        let template = try GuestInit.load(vmDirectory: TestPaths.vm).fstabTemplate
        var tmpfs: [String] = []
        for line in template.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count == 6, fields[0] == "tmpfs" { tmpfs.append(String(fields[1])) }
        }
        #expect(Set(tmpfs) == Set(GuestInit.hiddenDirectories))
    }

    @Test("the rendered init is valid sh")
    func syntax() async throws {
        let dir = try TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("init")
        try render(command: "exit 3", environment: ["X": "'"]).write(to: file, atomically: true, encoding: .utf8)
        let result = try await Runner().capture(Command(["/bin/sh", "-n", file.path]))
        #expect(result.succeeded, "\(result.standardError)")
    }

    @Test("hidden host paths get a share; visible ones and nested ones do not")
    func neededShares() {
        let shares = GuestShare.needed(
            for: ["/usr/lib/x", "/tmp/obj", "/tmp/obj/sub/file.ko", "/run/p/file.txt", "/tmpfoo/x"],
            isDirectory: { !$0.hasSuffix(".ko") && !$0.hasSuffix(".txt") })
        #expect(shares == [
            GuestShare(tag: "p2plab-x0", hostPath: "/run/p", guestPath: "/run/p"),
            GuestShare(tag: "p2plab-x1", hostPath: "/tmp/obj", guestPath: "/tmp/obj"),
        ])
    }
}
