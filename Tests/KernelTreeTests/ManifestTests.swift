import Foundation
import Testing
@testable import KernelTree

@Suite("Build manifest")
struct ManifestTests {
    @Test("round-trips through JSON with the fields boot and test read")
    func roundTrip() throws {
        let m = BuildManifest(
            source: "Debian linux-source-6.12 6.12.117-1~deb12u1", sourceId: "debian-6.12.117-1_deb12u1", baseCommit: "abc",
            variant: "series", branch: "p2plab/series-1", head: "def",
            patches: [AppliedPatch(index: 1, name: "0001-x.patch", subject: "x", author: "A <a@b>", contentHash: "00", state: .applied, commit: "c1",
                                   messageID: "p1@example.org", sha256: String(repeating: "a", count: 64))],
            configHash: "h", fragments: ["/f"], compiler: "gcc 12", kernelRelease: "6.12.117", buildSeconds: 1, cacheHit: false,
            bzImage: "/b/bzImage", config: "/b/config", objectDir: "/o", sourceDir: "/s", log: "/b/build.log", createdAt: "now",
            seriesID: "cover@example.org", patchsetHash: String(repeating: "b", count: 64))
        let data = try JSONEncoder().encode(m)
        #expect(try JSONDecoder().decode(BuildManifest.self, from: data) == m)
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(object["bzImage"] as? String == "/b/bzImage")
        #expect(object["objectDir"] as? String == "/o")
        #expect(object["kernelRelease"] as? String == "6.12.117")
        #expect((object["patches"] as? [[String: Any]])?.first?["state"] as? String == "applied")
        #expect((object["patches"] as? [[String: Any]])?.first?["messageID"] as? String == "p1@example.org")
        #expect(object["seriesID"] as? String == "cover@example.org")
        #expect(object["patchsetHash"] as? String == String(repeating: "b", count: 64))
    }

    @Test("a manifest written before Message-IDs and the patchset hash were recorded still reads (the cache stays warm)")
    func older() throws {
        let json = """
            {"source":"s","sourceId":"i","baseCommit":"b","variant":"series","branch":"p2plab/series-1","head":"h",
             "patches":[{"index":1,"name":"0001-x.patch","subject":"x","author":"A <a@b>","contentHash":"00","state":"applied","commit":"c"}],
             "configHash":"c","fragments":[],"compiler":"gcc","kernelRelease":"6.12.117","buildSeconds":1,"cacheHit":false,
             "bzImage":"/b","config":"/c","objectDir":"/o","sourceDir":"/s","log":"/l","createdAt":"now"}
            """
        let m = try JSONDecoder().decode(BuildManifest.self, from: Data(json.utf8))
        #expect(m.patchsetHash == nil)
        #expect(m.patches[0].messageID == nil)
    }
}
