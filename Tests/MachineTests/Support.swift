import Foundation
import LabSupport
import Testing

@testable import Machine

/// Test helpers: the checkout's vm/ directory and fixture files.
enum TestPaths {
    /// The checkout's `vm/`, found from this file's location.
    static var vm: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("vm")
    }

    /// The fixtures in the checkout (not the copy in the test bundle).
    static var sourceFixtures: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
    }

    static func fixture(_ name: String) throws -> URL {
        let url = try #require(Bundle.module.url(forResource: "Fixtures/\(name)", withExtension: nil))
        return url
    }

    static func fixtureText(_ name: String) throws -> String {
        try String(contentsOf: try fixture(name), encoding: .utf8)
    }

    /// A fresh temporary directory, removed by the caller.
    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("p2plab-machine-tests-\(UUID().uuidString)")
        try FileManager.default.ensureDirectory(url)
        return url
    }
}
