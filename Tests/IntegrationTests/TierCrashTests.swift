import Cluster
import Features
import Foundation
import Testing

extension MultiProcess {
@Suite("NVMe tier: a process killed mid-put")
struct TierCrashTests {
    @Test("kill -9 while blocks are being put: recovery finds only whole blocks (each read back with its checksum) and no half-written file")
    func killedMidPut() throws {
        let dir = NSTemporaryDirectory() + "strato-crash-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = dir + "/store-nvme"
        // The tiers benchmark puts 1 MiB blocks into an NVMe tier there (fsync each); it is killed
        // once some are down, most likely in the middle of one.
        let pid = try ProcessLauncher.spawn(TestCluster.stratoBinary, ["bench", "tiers", "--mib", "512", "--dir", dir], logFile: dir + ".log")
        defer { try? FileManager.default.removeItem(atPath: dir + ".log") }
        let start = Date()
        var files: [String] = []
        while Date().timeIntervalSince(start) < 120 {
            files = (try? FileManager.default.contentsOfDirectory(atPath: store)) ?? []
            if files.filter({ $0.hasSuffix(".blk") }).count >= 20 { break }
            usleep(2_000)
        }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        #expect(files.filter { $0.hasSuffix(".blk") }.count >= 20, "the benchmark reached its NVMe puts within 120 s")
        let tier = try FileTier(directory: store)
        let found = tier.recovered()
        #expect(!found.isEmpty)
        for (key, size) in found {
            let bytes = try tier.read(key)   // throws `corrupt` on a torn or damaged block
            #expect(bytes.count == size)
        }
        let left = (try FileManager.default.contentsOfDirectory(atPath: store)).filter { $0.hasSuffix(".tmp") }
        #expect(left.isEmpty, "recovery removed half-written files: \(left)")
        print("tier crash: \(found.count) whole blocks recovered after kill -9, every one read back with its checksum")
    }
}
}
