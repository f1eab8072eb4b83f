import Cluster
import Features
import Foundation
import Testing

extension MultiProcess {
@Suite("NVMe tier: a process killed mid-put")
struct TierCrashTests {
    @Test("kill -9 while blocks are being put: recovery finds only whole blocks (each read back with its checksum) and no half-written file")
    func killedMidPut() throws {
        try killMidPut(overSpares: false)
    }

    @Test("kill -9 while blocks are written over spare files (removed blocks' files): the same, and a torn spare is kept as a spare, never served")
    func killedMidPutOverSpares() throws {
        try killMidPut(overSpares: true)
    }

    /// The tiers benchmark puts 1 MiB blocks into an NVMe tier (fsync each), deletes them (their
    /// files become spares) and puts them again, over the spares. It is killed once 20 blocks are
    /// down in the first pass, or (`overSpares`) in the second, most likely in the middle of one.
    func killMidPut(overSpares: Bool) throws {
        let dir = NSTemporaryDirectory() + "strato-crash-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = dir + "/store-nvme"
        let pid = try ProcessLauncher.spawn(TestCluster.stratoBinary, ["bench", "tiers", "--mib", "512", "--dir", dir], logFile: dir + ".log")
        defer { try? FileManager.default.removeItem(atPath: dir + ".log") }
        let start = Date()
        var files: [String] = []
        while Date().timeIntervalSince(start) < 120 {
            files = (try? FileManager.default.contentsOfDirectory(atPath: store)) ?? []
            // The second pass's blocks are "b/<n>" (the first's "w/<n>"): file names are the key in hex, "b/" is 622f.
            let second = files.filter { $0.hasSuffix(".blk") && $0.hasPrefix("622f") }.count
            if overSpares ? second >= 20 && files.contains { $0.hasSuffix(".spr") } : files.filter({ $0.hasSuffix(".blk") }).count >= 20 { break }
            usleep(2_000)
        }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        #expect(files.filter { $0.hasSuffix(".blk") }.count >= 20, "the benchmark reached its NVMe puts within 120 s")
        if overSpares { #expect(files.contains { $0.hasSuffix(".spr") }, "it was killed while spares were being written over") }
        let tier = try FileTier(directory: store)
        let found = tier.recovered()
        #expect(!found.isEmpty)
        for (key, size) in found {
            let bytes = try tier.read(key)   // throws `corrupt` on a torn or damaged block
            #expect(bytes.count == size)
        }
        let left = (try FileManager.default.contentsOfDirectory(atPath: store)).filter { $0.hasSuffix(".tmp") }
        #expect(left.isEmpty, "recovery removed half-written files: \(left)")
        if overSpares { #expect(tier.spareFiles.count > 0, "the spares left were adopted") }
        print("tier crash\(overSpares ? " (over spares)" : ""): \(found.count) whole blocks recovered after kill -9, every one read back with its checksum; \(tier.spareFiles.count) spares adopted")
    }
}
}
