import ArgumentParser
import Foundation
import LabSupport

/// The one place errors become exit codes and messages, for every command.
///
/// A usage or validation error exits 2 (ArgumentParser's own would be 64); a `LabError` exits its
/// own code with its one-line message; an `ExitCode` a command threw has already said why; anything
/// else is p2plab failing to do its job, which is never a verdict on a kernel: 125.
enum ExitPolicy {
    /// What to print on stderr (nil: nothing) and the status to exit with.
    static func outcome(of error: any Error, command: any ParsableCommand.Type = P2PLabCommand.self) -> (message: String?, status: Int32) {
        switch error {
        case let exit as ExitCode:
            return (nil, exit.rawValue)
        case let lab as any LabError:
            return ("p2plab: \(lab.description)", lab.exitCode.rawValue)
        default:
            break
        }
        let status = command.exitCode(for: error)
        if status == .success {
            // --help, --version: ArgumentParser's text, on stdout.
            return (command.fullMessage(for: error), 0)
        }
        let message = command.fullMessage(for: error)
        if isArgumentError(error) || status == .validationFailure {
            return (message, LabExit.usage.rawValue)
        }
        return ("p2plab: \(message.isEmpty ? "\(error)" : message)", LabExit.couldNotTest.rawValue)
    }

    /// Errors ArgumentParser raises for a bad command line (unknown option, missing value, …) and
    /// `ValidationError`s from the commands' `validate()`.
    static func isArgumentError(_ error: any Error) -> Bool {
        if error is ValidationError { return true }
        let type = String(reflecting: Swift.type(of: error))
        return type.hasPrefix("ArgumentParser.")
    }
}

extension P2PLabCommand {
    /// Parses, runs, and exits through `ExitPolicy`.
    public static func main() async {
        let status: Int32
        do {
            var command = try parseAsRoot()
            if var async = command as? any AsyncParsableCommand {
                try await async.run()
            } else {
                try command.run()
            }
            status = 0
        } catch {
            let (message, code) = ExitPolicy.outcome(of: error)
            if let message, !message.isEmpty {
                let stream = code == 0 ? FileHandle.standardOutput : FileHandle.standardError
                stream.write(Data((message.hasSuffix("\n") ? message : message + "\n").utf8))
            }
            status = code
        }
        Foundation.exit(status)
    }
}
