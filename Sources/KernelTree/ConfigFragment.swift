import Foundation
import LabSupport

/// A Kconfig fragment: `CONFIG_X=value` lines and `# CONFIG_X is not set` lines.
public struct ConfigFragment: Sendable, Equatable {
    /// Where it came from, for messages.
    public var origin: String
    /// Option → value (`y`, `m`, `n`, a number or a quoted string), in file order.
    public var options: [(name: String, value: String)]

    public static func == (a: ConfigFragment, b: ConfigFragment) -> Bool {
        a.origin == b.origin && a.options.map(\.name) == b.options.map(\.name) && a.options.map(\.value) == b.options.map(\.value)
    }

    public init(origin: String, text: String) {
        self.origin = origin
        self.options = ConfigFragment.parse(text)
    }

    public static func load(_ url: URL) throws -> ConfigFragment {
        guard let text = try? String(contentsOf: url, encoding: .utf8) else {
            throw BuildError.missingFragment(url.path)
        }
        return ConfigFragment(origin: url.path, text: text)
    }

    /// Parses `.config` syntax into ordered (name, value) pairs; later lines win.
    public static func parse(_ text: String) -> [(name: String, value: String)] {
        var order: [String] = []
        var values: [String: String] = [:]
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            var name: String?
            var value: String?
            if line.hasPrefix("CONFIG_"), let eq = line.firstIndex(of: "=") {
                name = String(line[..<eq])
                value = String(line[line.index(after: eq)...])
            } else if line.hasPrefix("# CONFIG_"), line.hasSuffix(" is not set") {
                name = String(line.dropFirst(2).dropLast(" is not set".count))
                value = "n"
            }
            guard let name, let value else { continue }
            if values[name] == nil { order.append(name) }
            values[name] = value
        }
        return order.map { ($0, values[$0]!) }
    }

    /// The options whose value in `config` (a full `.config`) differs from what this fragment asks,
    /// as kunit.py's validate_config does. An absent option counts as `n`.
    public func dropped(in config: String) -> [(name: String, asked: String, got: String)] {
        var actual: [String: String] = [:]
        for (name, value) in ConfigFragment.parse(config) { actual[name] = value }
        return options.compactMap { option in
            let got = actual[option.name] ?? "n"
            return got == option.value ? nil : (option.name, option.value, got)
        }
    }
}
