import ArgumentParser
import Foundation
import LabSupport

/// The one place errors become exit codes and messages, for every command of both executables.
///
/// A usage or validation error exits 2 (ArgumentParser's own would be 64); a `LabError` exits its
/// own code with its one-line message; an `ExitCode` a command threw has already said why; anything
/// else is p2plab failing to do its job, which is never a verdict on a kernel: 125.
public enum ExitPolicy {
    /// What to print (nil: nothing) and the status to exit with.
    public static func outcome(of error: any Error, command: any ParsableCommand.Type) -> (message: String?, status: Int32) {
        switch error {
        case let exit as ExitCode:
            return (nil, exit.rawValue)
        case let lab as any LabError:
            return ("p2plab: \(lab.description)", lab.exitCode.rawValue)
        default:
            break
        }
        let status = command.exitCode(for: error)
        let message = command.fullMessage(for: error)
        // --help, --version: ArgumentParser's text, on stdout.
        if status == .success { return (message, 0) }
        if error is ValidationError || status == .validationFailure || String(reflecting: type(of: error)).hasPrefix("ArgumentParser.") {
            return (message, LabExit.usage.rawValue)
        }
        return ("p2plab: \(message.isEmpty ? "\(error)" : message)", LabExit.couldNotTest.rawValue)
    }

    /// Parses `arguments` (nil: the process's), runs the command and exits through `outcome`.
    public static func main(_ root: any ParsableCommand.Type, arguments: [String]? = nil) async -> Never {
        await main(root) {
            var command = try root.parseAsRoot(arguments)
            if var async = command as? any AsyncParsableCommand {
                try await async.run()
            } else {
                try command.run()
            }
        }
    }

    /// Runs `body` (a command of `root` the caller parsed itself) and exits through `outcome`.
    public static func main(_ root: any ParsableCommand.Type, running body: () async throws -> Void) async -> Never {
        var status: Int32 = 0
        do {
            try await body()
        } catch {
            let (message, code) = outcome(of: error, command: root)
            if let message, !message.isEmpty {
                let stream = code == 0 ? FileHandle.standardOutput : FileHandle.standardError
                stream.write(Data((message.hasSuffix("\n") ? message : message + "\n").utf8))
            }
            status = code
        }
        exit(status)
    }
}
