import DataPlane
import Foundation
import Testing
@testable import Features

/// Bytes that are a function of the key, so a reader can tell a block from any other.
private func content(_ key: String, _ n: Int) -> [UInt8] {
    var h = UInt64(5381)
    for b in key.utf8 { h = (h << 5) &+ h &+ UInt64(b) }
    return (0..<n).map { UInt8(truncatingIfNeeded: h &+ UInt64($0) &* 31) }
}

private func tempDir(_ name: String) -> String {
    let d = NSTemporaryDirectory() + "strato-blockstore-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    try? FileManager.default.removeItem(atPath: d)
    return d
}

/// Three tiers holding 3, 2 and 2 blocks of 100 bytes; the CXL throttle recorded, not waited.
private func threeTiers(_ dir: String, policy: EvictionPolicy = LRUEviction()) throws -> (TieredBlockStore, [Double]) {
    let cxl = EmulatedCXLTier(dramBandwidthBytesPerSecond: 10e9, dramLatencySeconds: 100e-9, numaNode: nil)
    let s = try TieredBlockStore(tiers: [(DRAMTier(), 300), (cxl, 200), (try FileTier(directory: dir), 200)], policy: policy)
    var waits: [Double] = []
    s.pace = { waits.append($0) }
    return (s, waits)
}

@Suite("Block store")
struct BlockStoreTests {
    @Test("NVMe's aligned buffers are reused by size; at most `keep` and `keepBytes` wait; blocks of every size read back whole through reused buffers")
    func alignedBuffersAreReused() throws {
        let pool = FileTier.AlignedBufferPool(keep: 2, keepBytes: 3 * 8192)
        let (a, sa) = pool.take(5000)
        #expect(sa == 8192 && Int(bitPattern: a) % FileTier.alignment == 0)
        pool.give(a, sa)
        let (b, sb) = pool.take(8000)
        #expect(b == a && sb == 8192, "the same aligned size is reused")
        let (c, sc) = pool.take(100)
        #expect(c != a && sc == 4096, "another size gets a buffer of its own")
        pool.give(b, sb); pool.give(c, sc)
        #expect(pool.waiting == (2, 12288))
        let (d, sd) = pool.take(12000)   // 12288: a third buffer, over `keep`
        pool.give(d, sd)
        #expect(pool.waiting == (2, 16384), "the oldest (8192) went: \(pool.waiting)")
        let (e, se) = pool.take(20000)   // 20480: with the two waiting, over keepBytes
        pool.give(e, se)
        #expect(pool.waiting == (1, 20480), "the oldest went until within keepBytes: \(pool.waiting)")
        // Through the tier: sizes that share and do not share an aligned size, each read twice.
        let dir = NSTemporaryDirectory() + "filetier-reuse-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let tier = try FileTier(directory: dir)
        let sizes = [1, 4000, 4064, 4065, 70_000, 1 << 20, 4000]
        for (i, n) in sizes.enumerated() {
            let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i) }
            try bytes.withUnsafeBytes { try tier.write("k\(i)", $0) }
        }
        for _ in 0..<2 {
            for (i, n) in sizes.enumerated() {
                #expect(try tier.read("k\(i)") == (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i) }, "block \(i) of \(n) bytes")
            }
        }
    }

    @Test func leastRecentlyUsedIsDemotedDownTheHierarchyThenDropped() throws {
        let dir = tempDir("lru"); defer { try? FileManager.default.removeItem(atPath: dir) }
        let (s, _) = try threeTiers(dir)
        for k in ["a", "b", "c"] { #expect(try s.put(k, content(k, 100)) == .dram) }
        _ = try s.get("a")                       // a is now the most recent: b goes first
        try s.put("d", content("d", 100))
        #expect(s.tier(of: "b") == .cxl)
        #expect(s.tier(of: "a") == .dram && s.tier(of: "d") == .dram)
        try s.put("e", content("e", 100))        // c down
        try s.put("f", content("f", 100))        // a down; CXL full (b, c): b to NVMe
        #expect(s.tier(of: "c") == .cxl && s.tier(of: "a") == .cxl)
        #expect(s.tier(of: "b") == .nvme)
        for k in ["g", "h", "i", "j"] { try s.put(k, content(k, 100)) }
        // 10 blocks, room for 7: the three least recently used (b, c, a) fell off the end.
        #expect(s.count == 7)
        for k in ["a", "b", "c"] { #expect(!s.exists(k)) }
        #expect(s.tiers[0].used == 300 && s.tiers[1].used == 200 && s.tiers[2].used == 200)
        #expect(s.tiers[0].counters.demotions == 7 && s.tiers[1].counters.demotions == 5)
        #expect(s.tiers[2].counters.dropped == 3)
        // Every block still held reads back as what was put, wherever it went.
        for k in ["d", "e", "f", "g", "h", "i", "j"] { #expect(try s.get(k, promote: false).bytes == content(k, 100)) }
    }

    @Test func aHitBelowTheTopIsPromotedWithItsBytes() throws {
        let dir = tempDir("promote"); defer { try? FileManager.default.removeItem(atPath: dir) }
        let (s, _) = try threeTiers(dir)
        for k in ["a", "b", "c", "d", "e", "f"] { try s.put(k, content(k, 100)) }
        #expect(s.tier(of: "a") == .nvme)
        let (bytes, from) = try s.get("a")
        #expect(from == .nvme && bytes == content("a", 100))
        #expect(s.tier(of: "a") == .dram)
        #expect(s.tiers[2].counters.promotions == 1 && s.tiers[2].counters.hits == 1)
        // Promotion made room at the top: d (least recent there) went down to CXL.
        #expect(s.tier(of: "d") == .cxl)
        #expect(s.tiers.map(\.used) == [300, 200, 100])
    }

    @Test func firstInFirstOutIgnoresUses() throws {
        let dir = tempDir("fifo"); defer { try? FileManager.default.removeItem(atPath: dir) }
        let (s, _) = try threeTiers(dir, policy: LRUEviction(reorderOnUse: false))
        for k in ["a", "b", "c"] { try s.put(k, content(k, 100)) }
        _ = try s.get("a")
        try s.put("d", content("d", 100))
        #expect(s.policyName == "fifo")
        #expect(s.tier(of: "a") == .cxl && s.tier(of: "b") == .dram)
    }

    @Test func badRequestsAreNamedAndCounted() throws {
        let dir = tempDir("bad"); defer { try? FileManager.default.removeItem(atPath: dir) }
        let (s, _) = try threeTiers(dir)
        #expect(throws: BlockStoreError.self) { try s.put("big", content("big", 301 + 200)) }
        do { try s.put("big", content("big", 400)) } catch let e as BlockStoreError { #expect(e.code == .tooLarge) }
        // A block larger than DRAM but not than CXL starts in CXL.
        #expect(throws: Never.self) { try s.put("mid", content("mid", 150)) }
        do { _ = try s.get("nope"); Issue.record("an unknown key was served") } catch let e as BlockStoreError { #expect(e.code == .unknownKey) }
        do { try s.put("", [1]); Issue.record("an empty key was taken") } catch let e as BlockStoreError { #expect(e.code == .badKey) }
        #expect(s.errors[.unknownKey] == 1 && s.errors[.badKey] == 1 && s.errors[.tooLarge] == 2)
        #expect(s.misses == 1)
        // A file where the NVMe directory should be, and sizes that cannot be.
        let file = dir + "-file"
        FileManager.default.createFile(atPath: file, contents: Data([1]))
        defer { unlink(file) }
        do { _ = try FileTier(directory: file); Issue.record("a file was taken as a tier directory") } catch let e as BlockStoreError { #expect(e.code == .tierUnavailable) }
        do { _ = try TieredBlockStore(tiers: [(DRAMTier(), 0)]); Issue.record("a tier of 0 bytes was taken") } catch let e as BlockStoreError { #expect(e.code == .tierUnavailable) }
        do {
            _ = try TieredBlockStore(tiers: [(try FileTier(directory: dir), 100), (DRAMTier(), 100)])
            Issue.record("NVMe above DRAM was taken")
        } catch let e as BlockStoreError { #expect(e.message.contains("fastest first")) }
    }

    @Test func theLongestCachedPrefixEndsAtTheFirstMissingChunk() throws {
        let s = try TieredBlockStore(tiers: [(DRAMTier(), 10_000)])
        for k in ["p1", "p2", "p3", "q4"] { try s.put(k, content(k, 10)) }
        #expect(s.longestPrefix(["p1", "p2", "p3", "p4", "q4"]) == 3)
        #expect(s.longestPrefix(["x", "p1"]) == 0)
        #expect(s.longestPrefix([]) == 0)
    }

    @Test func emulatedCXLTakesThePublishedLatencyAndBandwidth() throws {
        let cxl = EmulatedCXLTier(dramBandwidthBytesPerSecond: 10e9, dramLatencySeconds: 100e-9, numaNode: nil)
        // An access that took 1 ms in DRAM takes 70/51 as long, plus 154.3 % of DRAM's latency.
        let want = 1e-3 * (70.0 / 51 - 1) + 154.3e-9
        #expect(abs(cxl.emulatedDelay(bytes: 1_048_576, realSeconds: 1e-3) - want) < 1e-12)
        // One that took no time (a block handed over, copied out by the reader) is charged a copy
        // at the probed DRAM bandwidth (which counts read and write).
        let copy = 2.0 * 1_048_576 / 10e9
        #expect(abs(cxl.emulatedDelay(bytes: 1_048_576, realSeconds: 0) - (copy * (70.0 / 51 - 1) + 154.3e-9)) < 1e-12)
        #expect(cxl.label.contains("emulated"))
        // A slow DRAM figure (1 MB/s), so the charge dwarfs the real copy; recorded, not waited.
        let slow = EmulatedCXLTier(dramBandwidthBytesPerSecond: 1e6, dramLatencySeconds: 100e-9, numaNode: nil)
        let slowWant = 2.0 * 1_048_576 / 1e6 * (70.0 / 51 - 1)
        let s = try TieredBlockStore(tiers: [(DRAMTier(), 100), (slow, 10_000_000)])
        var waited = 0.0
        s.pace = { waited += $0 }
        try s.put("w", content("w", 1_048_576))
        #expect(s.tier(of: "w") == .cxl)
        #expect(waited > slowWant && waited < slowWant * 1.2)
        #expect(s.tiers[1].counters.throttleSeconds == waited)
        // Reading it back is charged the same way.
        _ = try s.get("w", promote: false)
        #expect(waited > 2 * slowWant)
    }

    @Test func aCPULessNUMANodeIsFoundFromSys() throws {
        let root = tempDir("numa"); defer { try? FileManager.default.removeItem(atPath: root) }
        for (n, cpus) in [(0, "0-7\n"), (1, "\n")] {
            try FileManager.default.createDirectory(atPath: "\(root)/node\(n)", withIntermediateDirectories: true)
            try cpus.write(toFile: "\(root)/node\(n)/cpulist", atomically: true, encoding: .utf8)
        }
        #expect(EmulatedCXLTier.cpulessNUMANode(root: root) == 1)
        try "8-9\n".write(toFile: "\(root)/node1/cpulist", atomically: true, encoding: .utf8)
        #expect(EmulatedCXLTier.cpulessNUMANode(root: root) == nil)
    }

    @Test("NVMe write-behind: reads see queued blocks, a remove cancels a queued write, a rewrite wins, and after a flush the disk holds exactly what the store holds")
    func nvmeWriteBehind() throws {
        let dir = tempDir("behind"); defer { try? FileManager.default.removeItem(atPath: dir) }
        let tier = try FileTier(directory: dir)
        tier.enableWriteBehind()
        #expect(tier.label.contains("writer thread"))
        let s = try TieredBlockStore(tiers: [(DRAMTier(), 4096), (tier, 1 << 20)])
        // 200 blocks of 1 KiB: DRAM keeps four, the rest are demoted to NVMe through the queue.
        for i in 0..<200 { try s.put("kv/\(i)", content("kv/\(i)", 1024)) }
        for i in stride(from: 0, to: 200, by: 7) {   // served at once, queued or written
            #expect(try s.get("kv/\(i)", promote: false).bytes == content("kv/\(i)", 1024))
        }
        // Removed while (perhaps) queued: never on disk. Rewritten: the newer bytes win.
        for i in 0..<20 { s.delete("kv/\(i)") }
        try s.put("kv/50", content("other", 1024), tier: .nvme)
        tier.flush()
        #expect(tier.queuedWrites.blocks == 0 && tier.queuedWrites.bytes == 0 && tier.writeBehindFailures == 0)
        let onDisk = Set(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".blk") }
            .compactMap { FileTier.key(fromFileName: String($0.dropLast(4))) })
        let inNVMe = Set(s.keys.filter { s.tier(of: $0) == .nvme })
        #expect(onDisk == inNVMe, "disk \(onDisk.count) blocks, store's NVMe tier \(inNVMe.count)")
        #expect(onDisk.isDisjoint(with: (0..<20).map { "kv/\($0)" }))
        #expect(try s.get("kv/50", promote: false).bytes == content("other", 1024))
        // A block already on disk, removed: the writer unlinks its file (not the caller's thread).
        let file = dir + "/" + FileTier.fileName("kv/60") + ".blk"
        #expect(s.tier(of: "kv/60") == .nvme && FileManager.default.fileExists(atPath: file))
        s.delete("kv/60")
        tier.flush()
        #expect(!FileManager.default.fileExists(atPath: file))
        // What was written is what a restarted host recovers, each block checked against its CRC.
        let again = try FileTier(directory: dir)
        for (key, size) in again.recovered() { #expect(try again.read(key).count == size && size == 1024) }
    }

    @Test("NVMe spares: a removed block's file is written over by the next put of its length (same inode, new bytes), kept within the budget, never served, adopted after a restart")
    func nvmeSpareFilesAreWrittenOver() throws {
        let dir = tempDir("spares"); defer { try? FileManager.default.removeItem(atPath: dir) }
        func inode(_ key: String) -> UInt64? {
            var st = stat()
            return stat(dir + "/" + FileTier.fileName(key) + ".blk", &st) == 0 ? UInt64(st.st_ino) : nil
        }
        func names(_ ext: String) throws -> [String] { try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(ext) } }
        // Budget for two 10 000-byte files (aligned: 12 288 bytes each with direct I/O).
        let tier = try FileTier(directory: dir, spareBudgetBytes: 2 * 12_288 + 100)
        for k in ["a", "b", "c"] { try content(k, 10_000).withUnsafeBytes { try tier.write(k, $0) } }
        let (ia, ib) = (inode("a"), inode("b"))
        for k in ["a", "b", "c"] { tier.remove(k) }
        #expect(tier.spareFiles.count == 2, "two within the budget, the third unlinked: \(tier.spareFiles)")
        #expect(try names(".spr").count == 2 && names(".blk").isEmpty)
        for k in ["a", "b"] {
            do { _ = try tier.read(k); Issue.record("a spare was served as \(k)") } catch let e as BlockStoreError { #expect(e.code == .unknownKey) }
        }
        // The same length: written over; another length: a fresh file, the spare stays.
        try content("d", 10_000).withUnsafeBytes { try tier.write("d", $0) }
        try content("e", 500).withUnsafeBytes { try tier.write("e", $0) }
        #expect(inode("d") == ib || inode("d") == ia, "d written over a spare")
        #expect(try tier.read("d") == content("d", 10_000) && tier.read("e") == content("e", 500))
        #expect(tier.spareFiles.count == 1)
        // A restart adopts the spare (not a block) and writes over it.
        let again = try FileTier(directory: dir, spareBudgetBytes: 1 << 20)
        #expect(Set(again.recovered().map(\.key)) == ["d", "e"])
        #expect(again.spareFiles.count == 1)
        try content("f", 10_000).withUnsafeBytes { try again.write("f", $0) }
        #expect(try again.spareFiles.count == 0 && names(".spr").isEmpty)
        #expect(try again.read("f") == content("f", 10_000))
        // A file holding another key's block under this key's name (a power loss undid the
        // renames of a spare written over) is refused by name and dropped at recovery.
        try FileManager.default.copyItem(atPath: dir + "/" + FileTier.fileName("f") + ".blk", toPath: dir + "/" + FileTier.fileName("g") + ".blk")
        do { _ = try again.read("g"); Issue.record("f's block was served as g") } catch let e as BlockStoreError { #expect(e.code == .corrupt) }
        let third = try FileTier(directory: dir, spareBudgetBytes: 1 << 20)
        #expect(!third.recovered().map(\.key).contains("g"))
        #expect(inode("g") == nil)
        // No budget: removed files are unlinked.
        let none = try FileTier(directory: dir, spareBudgetBytes: 0)
        _ = none.recovered()
        none.remove("f")
        #expect(try none.spareFiles.count == 0 && names(".spr").isEmpty && inode("f") == nil)
        #expect(none.dropSpares() == 0)
    }

    @Test("NVMe spares: a process killed while a put wrote over a spare leaves a torn spare; a restart keeps it as a spare, serves neither key from it, and the next put of its length writes over it whole")
    func tornSpareIsNeverServed() throws {
        let dir = tempDir("torn-spare"), other = tempDir("torn-spare-image")
        defer { for d in [dir, other] { try? FileManager.default.removeItem(atPath: d) } }
        let tier = try FileTier(directory: dir, spareBudgetBytes: 1 << 20)
        try content("old", 10_000).withUnsafeBytes { try tier.write("old", $0) }
        tier.remove("old")
        let spares = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".spr") }
        #expect(spares.count == 1)
        // The put of "new" over that spare, killed half-way: the first half of new's image (as
        // another tier wrote it) over old's bytes, no rename.
        let imageTier = try FileTier(directory: other)
        try content("new", 10_000).withUnsafeBytes { try imageTier.write("new", $0) }
        let image = try #require(FileManager.default.contents(atPath: other + "/" + FileTier.fileName("new") + ".blk"))
        let spare = try #require(FileHandle(forWritingAtPath: dir + "/" + spares[0]))
        spare.write(image.prefix(image.count / 2))
        try spare.close()

        let restarted = try FileTier(directory: dir, spareBudgetBytes: 1 << 20)
        #expect(restarted.recovered().isEmpty, "a spare is no block, torn or not")
        #expect(restarted.spareFiles.count == 1, "kept as a spare")
        for k in ["old", "new"] {
            do { _ = try restarted.read(k); Issue.record("the torn spare was served as \(k)") } catch let e as BlockStoreError { #expect(e.code == .unknownKey) }
        }
        try content("new", 10_000).withUnsafeBytes { try restarted.write("new", $0) }
        #expect(restarted.spareFiles.count == 0, "written over")
        #expect(try restarted.read("new") == content("new", 10_000))
        #expect(try FileTier(directory: dir).recovered().map(\.key) == ["new"])
    }

    @Test("NVMe reads on the reader thread: finished by the store as a get is (counted, promoted), a rotted block is named and forgotten, a block gone meanwhile misses")
    func nvmeDetachedReads() throws {
        let dir = tempDir("reader"); defer { try? FileManager.default.removeItem(atPath: dir) }
        let tier = try FileTier(directory: dir)
        tier.enableDetachedReads()
        let s = try TieredBlockStore(tiers: [(DRAMTier(), 4096), (tier, 1 << 20)])
        for i in 0..<20 { try s.put("kv/\(i)", content("kv/\(i)", 1024)) }
        let onDisk = (0..<20).map { "kv/\($0)" }.filter { s.detachedReader(for: $0) != nil }
        #expect(onDisk.count == 16)
        // Rot one block's bytes on disk; delete another after its read is queued.
        let rotted = dir + "/" + FileTier.fileName(onDisk[1]) + ".blk"
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: rotted)))
        bytes[FileTier.headerBytes + 3] ^= 0x01
        try Data(bytes).write(to: URL(fileURLWithPath: rotted))
        let id = try #require(tier.submitReads(onDisk))
        s.delete(onDisk[2])
        var batches: [(id: UInt64, reads: [FileTier.DetachedRead])] = []
        let deadline = Date().addingTimeInterval(20)
        while batches.isEmpty && Date() < deadline { batches = tier.finishedReads(); usleep(1000) }
        #expect(batches.count == 1 && batches.first?.id == id && tier.readsOutstanding == 0)
        let reads = try #require(batches.first?.reads)
        #expect(reads.map(\.key) == onDisk)
        for r in reads {
            switch r.key {
            case onDisk[1]:
                #expect(throws: BlockStoreError.self) { try s.finishGet(r.key, read: r.result, seconds: r.seconds) }
                #expect(!s.exists(r.key) && s.errors[.corrupt] == 1)
            case onDisk[2]:
                do { _ = try s.finishGet(r.key, read: r.result, seconds: r.seconds); Issue.record("a deleted block was served") } catch let e as BlockStoreError { #expect(e.code == .unknownKey) }
            default:
                let (b, from) = try s.finishGet(r.key, read: r.result, seconds: r.seconds, promote: r.key == onDisk[0])
                #expect(b == content(r.key, 1024) && from == .nvme)
            }
        }
        #expect(s.tier(of: onDisk[0]) == .dram, "promoted as get promotes")
        #expect(s.tiers[1].counters.hits == 14 && s.misses == 2)
    }

    @Test func nvmeContentsSurviveARestartAndTornOrCorruptBlocksAreNeverServed() throws {
        let dir = tempDir("restart"); defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let s = try TieredBlockStore(tiers: [(DRAMTier(), 100), (try FileTier(directory: dir), 10_000)])
            for k in ["kv/a", "kv/b", "kv/c", "w/llama/7"] { try s.put(k, content(k, 100)) }
            #expect(s.tier(of: "kv/a") == .nvme)
        }
        // A put killed before its rename leaves a .tmp; a block whose bytes rotted fails its checksum.
        let tmp = dir + "/" + FileTier.fileName("kv/torn") + ".tmp"
        FileManager.default.createFile(atPath: tmp, contents: Data(content("kv/torn", 50)))
        let rotted = dir + "/" + FileTier.fileName("kv/b") + ".blk"
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: rotted)))
        bytes[FileTier.headerBytes + 10] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: rotted))

        let s = try TieredBlockStore(tiers: [(DRAMTier(), 100), (try FileTier(directory: dir), 10_000)])
        // DRAM held w/llama/7 and is gone; NVMe's three are back.
        #expect(Set(s.keys) == ["kv/a", "kv/b", "kv/c"])
        #expect(!FileManager.default.fileExists(atPath: tmp))
        #expect(try s.get("kv/a", promote: false).bytes == content("kv/a", 100))
        do { _ = try s.get("kv/b"); Issue.record("a corrupt block was served") } catch let e as BlockStoreError { #expect(e.code == .corrupt) }
        #expect(!s.exists("kv/b") && s.errors[.corrupt] == 1)
        // A recovered block promoted to DRAM keeps its bytes.
        #expect(try s.get("kv/c").tier == .nvme)
        #expect(try s.get("kv/c").bytes == content("kv/c", 100) && s.tier(of: "kv/c") == .dram)
    }

    @Test func fileNamesGiveTheKeyBack() {
        for k in ["kv/llama-2-7b/00ff", "w/Llama-2-70B/79", "ä/../x"] {
            #expect(FileTier.key(fromFileName: FileTier.fileName(k)) == k)
        }
        #expect(FileTier.key(fromFileName: "zz") == nil)
    }
}
