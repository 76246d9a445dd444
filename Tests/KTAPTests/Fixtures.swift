import Foundation
import Testing

/// Loads the hand-written logs under Fixtures/ and compares renderings against golden files there.
enum Fixture {
    static func url(_ name: String) throws -> URL {
        let url = Bundle.module.resourceURL!.appendingPathComponent("Fixtures").appendingPathComponent(name)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw FixtureError.missing(name)
        }
        return url
    }

    /// A fixture as text; invalid UTF-8 is replaced, as serial captures contain stray bytes.
    static func text(_ name: String) throws -> String {
        String(decoding: try Data(contentsOf: url(name)), as: UTF8.self)
    }

    /// Compares `actual` with `Fixtures/golden/<name>`. With `P2PLAB_UPDATE_GOLDEN=1` in the environment
    /// it rewrites the golden file in the source tree instead, for a deliberate format change.
    static func expectGolden(_ actual: String, _ name: String, sourceLocation: SourceLocation = #_sourceLocation)
        throws
    {
        if ProcessInfo.processInfo.environment["P2PLAB_UPDATE_GOLDEN"] == "1" {
            let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .appendingPathComponent("Fixtures/golden").appendingPathComponent(name)
            try FileManager.default.createDirectory(
                at: source.deletingLastPathComponent(), withIntermediateDirectories: true)
            try actual.write(to: source, atomically: true, encoding: .utf8)
            return
        }
        let expected = try text("golden/\(name)")
        #expect(actual == expected, "rendering differs from Fixtures/golden/\(name)", sourceLocation: sourceLocation)
    }
}

enum FixtureError: Error, CustomStringConvertible {
    case missing(String)
    var description: String { "fixture \(missing) is not in the test bundle; add it under Tests/KTAPTests/Fixtures" }
    private var missing: String { if case .missing(let name) = self { name } else { "" } }
}
