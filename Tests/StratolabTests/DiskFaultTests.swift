import Cluster
import DataPlane
import Foundation
import Protocol
import Testing
@testable import Features

@Suite("fill_disk: a memory host's NVMe disk full")
struct DiskFaultTests {
    @Test("with its disk full a put to NVMe is refused as tier-full, a block demoted there is dropped, nothing crashes; freed, NVMe takes blocks again")
    func diskFullAndFreed() throws {
        let dir = NSTemporaryDirectory() + "strato-diskfull-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let plane = try DataPlane(config: DataPlaneConfig(nodeID: "mem-0"))
        defer { plane.close() }
        let store = try TieredBlockStore(tiers: [(DRAMTier(), 2048), (try FileTier(directory: dir), 1 << 20)])
        let handler = TierStoreHandler(store: store, plane: plane)
        func fault(_ full: Bool) throws -> FeatureOutcome {
            var c = TierCommand(); c.diskFault.full = full
            return handler.execute(Array(try c.serializedData()), commandID: 1, wallNanos: 0)
        }
        #expect(try fault(true).ok)
        #expect(throws: BlockStoreError.self) { try store.put("n", [UInt8](repeating: 1, count: 100), tier: .nvme) }
        #expect(store.errors[.tierFull] == 1)
        // DRAM holds two 1 KiB blocks; a third pushes the oldest down, where the disk is full: dropped.
        for k in ["a", "b", "c"] { try store.put(k, [UInt8](repeating: 2, count: 1024)) }
        #expect(store.tier(of: "a") == nil && store.tier(of: "c") == .dram && store.tiers[0].counters.dropped == 1)
        #expect(try fault(false).ok)
        try store.put("d", [UInt8](repeating: 3, count: 1024))
        #expect(store.tier(of: "b") == .nvme, "demoted to NVMe again")
        try store.put("n", [UInt8](repeating: 1, count: 100), tier: .nvme)
        #expect(try store.get("n", promote: false).bytes == [UInt8](repeating: 1, count: 100))

        // A host without NVMe refuses the fault, naming why; a config is not for it.
        let dramOnly = TierStoreHandler(store: try TieredBlockStore(tiers: [(DRAMTier(), 1 << 20)]), plane: plane)
        var c = TierCommand(); c.diskFault.full = true
        #expect(dramOnly.execute(Array(try c.serializedData()), commandID: 1, wallNanos: 0).detail.contains("no NVMe tier"))
        var cfg = TierCommand(); cfg.config = TierConfig()
        #expect(!handler.execute(Array(try cfg.serializedData()), commandID: 2, wallNanos: 0).ok)
    }
}
