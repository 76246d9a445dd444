/// Exit codes of p2plab, one per outcome, so scripts and `git bisect run` can tell them apart.
///
/// 0/1/4 follow kselftest (pass, fail, skip); 2 is a usage error; 125 is what
/// `git bisect run` treats as "cannot test this commit".
public enum LabExit: Int32, Sendable, CaseIterable {
    case success = 0
    case failed = 1
    case usage = 2
    case missingDependency = 3
    case skipped = 4
    case notRoot = 5
    case noProvider = 6
    /// A check crashed or hung the kernel (CRASHED or TIMEOUT); the lab booted again for the rest.
    case crashed = 7
    case badSource = 10
    case dirtyTree = 11
    case badSeries = 12
    case patchDoesNotApply = 13
    case configDropped = 14
    case buildFailed = 15
    case noSpace = 16
    case moduleBuildFailed = 17
    case qemuFailed = 120
    case bootTimeout = 121
    case kernelPanic = 122
    case qemuDied = 123
    case commandTimeout = 124
    case couldNotTest = 125
}

/// An error that knows the exit code it maps to and how to explain itself in one line.
public protocol LabError: Error, CustomStringConvertible {
    var exitCode: LabExit { get }
}
