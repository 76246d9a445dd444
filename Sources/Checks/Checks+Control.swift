import CP2PLabUAPI
import Catalog
import Foundation
import KernelConsole

/// The lab's positive controls: each crashes or hangs the kernel on purpose, so a run shows that the
/// lab boots again and goes on. Opt-in (named with `--check`), never in the default suite.
extension Suite {
    static let controlChecks: [CheckDefinition] = [
        CheckDefinition("control.oops") { ctx, rec in
            let module = try ctx.requireModule()
            try allowCrash(true)
            defer { try? allowCrash(false) }
            rec.note("BUG() in p2plab_control_oops(): the kernel should not come back from this ioctl")
            let result = module.control(Int32(P2PLAB_CONTROL_OOPS))
            // Still here: the module refused, or the kernel survived its own BUG() (no oops=panic).
            throw CheckFailure("the CONTROL ioctl returned (\(result.errnoName)) instead of oopsing: the control did not crash the kernel")
        },
        CheckDefinition("control.hang") { ctx, rec in
            let module = try ctx.requireModule()
            try allowCrash(true)
            defer { try? allowCrash(false) }
            // The detector's own settings, with panic on: the report ends the boot, as a real hang would.
            for (name, value) in [("hung_task_panic", "1"), ("hung_task_warnings", "-1"), ("hung_task_check_interval_secs", "1"),
                                  ("hung_task_timeout_secs", "1")]
            {
                if case .failure(let errno) = writeSysfs(HungTaskTunables.path(name), value) {
                    throw CheckSkip("cannot set \(HungTaskTunables.path(name)) to \(value): \(errno) (no CONFIG_DETECT_HUNG_TASK?)")
                }
            }
            var pid: Int32 = 0
            let rc = p2plab_spawn_control(module.path, UInt32(P2PLAB_CONTROL_HANG), &pid)
            guard rc == 0 else { throw CheckFailure("fork for the hanging child failed: \(Errno(rawValue: -rc))") }
            let state = waitForDState(pid)
            guard state == "D" else {
                throw CheckFailure("the child \(pid) is not blocked in D state (state \(state)): the module did not hang it")
            }
            rec.note("child \(pid) blocked in D state in p2plab_control_hang(); the hung-task detector (1 s, panic on) reports it during a later check")
            rec.settle(seconds: CheckMarkers.hungTaskReportWithin, because: "control.hang's child is reported 1-2 s after it blocked, and the report ends the boot")
        },
        CheckDefinition("control.hang_brief") { ctx, rec in
            let module = try ctx.requireModule()
            try allowCrash(true)
            defer { try? allowCrash(false) }
            let tunables = try HungTaskTunables.read(ctx.sysfs)
            // Panic off: the report is printed and the kernel goes on, as on a machine whose admin
            // left hung_task_panic at 0. Put back once the child is done (after this check returned).
            try tunables.arm(timeout: 1)
            var pid: Int32 = 0
            let rc = p2plab_spawn_control(module.path, UInt32(P2PLAB_CONTROL_HANG_BRIEF), &pid)
            guard rc == 0 else {
                tunables.restore(rec)
                throw CheckFailure("fork for the hanging child failed: \(Errno(rawValue: -rc))")
            }
            let child = pid
            rec.expectSplat(containing: ":\(child) blocked for more than",
                            because: "this control's child waits \(P2PLAB_CONTROL_HANG_BRIEF_SECONDS) s in D state on purpose")
            let state = waitForDState(child)
            // Reap the child and restore the detector's settings when it is done, whichever check runs then.
            let restore = Thread {
                var status: Int32 = 0
                let end = monotonicSeconds() + Double(P2PLAB_CONTROL_HANG_BRIEF_SECONDS) + 30
                while monotonicSeconds() < end, p2plab_poll_child(child, &status) == 0 { pause(seconds: 0.2) }
                tunables.restore(nil)
            }
            restore.start()
            guard state == "D" else {
                throw CheckFailure("the child \(child) is not blocked in D state (state \(state)): the module did not hang it")
            }
            rec.note("child \(child) blocked in D state in p2plab_control_hang_brief() for \(P2PLAB_CONTROL_HANG_BRIEF_SECONDS) s; the hung-task detector (1 s, panic off) reports it during a later check")
            rec.settle(seconds: CheckMarkers.hungTaskReportWithin, because: "control.hang_brief's child is reported 1-2 s after it blocked")
        },
    ]

    /// Sets the test module's `allow_crash` parameter.
    static func allowCrash(_ on: Bool) throws {
        if case .failure(let errno) = writeSysfs(TestModule.allowCrashParameter, on ? "Y" : "N") {
            throw CheckFailure("cannot set \(TestModule.allowCrashParameter): \(errno) (a test module without the CONTROL ioctl?)")
        }
    }

    /// Waits up to 10 s for the control's child `pid` to block in D state; returns its last state
    /// (`D` when it did, `gone` when it ended first).
    static func waitForDState(_ pid: Int32) -> String {
        var state = "?"
        _ = waitUntil(seconds: 10) {
            state = processState(pid)
            return state == "D" || state == "gone"
        }
        return state
    }

    /// The state letter of /proc/PID/stat (`R`, `S`, `D`, …), or `gone`.
    static func processState(_ pid: Int32) -> String {
        TaskState("/proc/\(pid)")?.state ?? "gone"
    }
}

extension Result where Failure == Errno {
    /// `ok` or the errno's name.
    var errnoName: String {
        switch self {
        case .success: "ok"
        case .failure(let errno): errno.name
        }
    }
}
