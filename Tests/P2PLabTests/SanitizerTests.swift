import Foundation
import Testing
@testable import P2PLab

@Suite("--sanitize")
struct SanitizerTests {
    @Test("names parse in any order and case; the fragments come in one fixed order after the common one")
    func fragments() throws {
        let list = try Sanitizer.parseList("lockdep, KASAN,lockdep")
        #expect(list == [.kasan, .lockdep])
        let root = URL(fileURLWithPath: "/src/p2plab")
        #expect(Sanitizer.fragments(list, root: root).map(\.lastPathComponent) == [
            "sanitize-common.config", "sanitize-kasan.config", "sanitize-lockdep.config",
        ])
        #expect(Sanitizer.fragments([], root: root).isEmpty)
    }

    @Test("every sanitizer has its fragment in the checkout")
    func fragmentFilesExist() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        for url in Sanitizer.fragments(Sanitizer.allCases, root: root) {
            #expect(FileManager.default.fileExists(atPath: url.path), "\(url.path)")
        }
    }

    @Test("an unknown name is refused with the list of known ones")
    func unknown() {
        #expect(throws: (any Error).self) { try Sanitizer.parseList("kasan,msan") }
        #expect(throws: (any Error).self) { try Sanitizer.parseList(",") }
    }
}
