import Cluster
import DataPlane
import Foundation
import Protocol
import Testing
import Wire
@testable import Features

private func content(_ key: String, _ n: Int) -> [UInt8] {
    var h = UInt64(1469598103934665603)
    for b in key.utf8 { h = (h ^ UInt64(b)) &* 1099511628211 }
    return (0..<n).map { UInt8(truncatingIfNeeded: (h >> UInt64($0 % 56)) &+ UInt64($0)) }
}

/// A memory host (DRAM 64 KiB, emulated CXL 64 KiB, NVMe 1 MiB) and two GPU-side clients, each on
/// its own real data plane.
private final class Rig {
    let hostPlane: DataPlane
    let planes: [DataPlane]
    let handler: TierStoreHandler
    let clients: [TierClient]
    let dir: String
    var host: PeerAddress { PeerAddress(endpoint: hostPlane.endpoint) }
    var hostUp = true

    init(detachedReads: Bool = false) throws {
        dir = NSTemporaryDirectory() + "strato-tierhandler-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        hostPlane = try DataPlane(config: DataPlaneConfig(nodeID: "mem-0"))
        planes = [try DataPlane(config: DataPlaneConfig(nodeID: "gpu-0")), try DataPlane(config: DataPlaneConfig(nodeID: "gpu-1"))]
        let cxl = EmulatedCXLTier(dramBandwidthBytesPerSecond: 5e9, dramLatencySeconds: 100e-9, numaNode: nil)
        let nvme = try FileTier(directory: dir)
        if detachedReads { nvme.enableDetachedReads() }
        let store = try TieredBlockStore(tiers: [(DRAMTier(), 64 << 10), (cxl, 64 << 10), (nvme, 1 << 20)])
        handler = TierStoreHandler(store: store, plane: hostPlane)
        clients = planes.map { TierClient(plane: $0) }
    }

    deinit { hostPlane.close(); planes.forEach { $0.close() }; try? FileManager.default.removeItem(atPath: dir) }

    @discardableResult
    func run(seconds: Double = 10, until done: () -> Bool) throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if done() { return true }
            _ = try ZMQPoller.readable((hostUp ? hostPlane.sockets : []) + planes.flatMap(\.sockets), timeoutMs: 2)
            if hostUp { try hostPlane.pump() }
            for p in planes { try p.pump() }
            handler.pump(wallNanos: SystemClock.shared.wallNanos())
            clients.forEach { $0.expire() }
        }
        return done()
    }

    func put(_ client: Int, _ blocks: [(key: String, bytes: [UInt8])], tier: TierKind? = nil) throws -> Result<Int, DataPlaneError> {
        var out: Result<Int, DataPlaneError>?
        try clients[client].put(blocks, to: host, tier: tier) { out = $0 }
        try run { out != nil }
        return try #require(out)
    }

    func get(_ client: Int, _ keys: [String], prefixOnly: Bool = false, existsOnly: Bool = false) throws -> Result<TierClient.Fetched, TierClient.ClientError> {
        var out: Result<TierClient.Fetched, TierClient.ClientError>?
        try clients[client].get(keys, from: host, prefixOnly: prefixOnly, existsOnly: existsOnly) { out = $0 }
        try run { out != nil }
        return try #require(out)
    }
}

@Suite("Memory host's block store over a real data plane")
struct TierStoreHandlerTests {
    @Test("one GPU agent puts a prefix's chunks, another finds the longest cached prefix and gets every byte back")
    func sharedPrefix() throws {
        let rig = try Rig()
        let chain = (0..<6).map { "kv/llama/\($0)" }
        let blocks = chain.prefix(4).map { (key: $0, bytes: content($0, 20_000)) }
        guard case .success(let n) = try rig.put(0, Array(blocks)) else { Issue.record("put failed"); return }
        #expect(n == 80_000)
        // 80 000 bytes over a 64 KiB DRAM tier: the first chunk went down to CXL.
        #expect(rig.handler.store.tier(of: "kv/llama/0") == .cxl)
        guard case .success(let f) = try rig.get(1, chain, prefixOnly: true) else { Issue.record("get failed"); return }
        #expect(f.header.blocks.map(\.key) == Array(chain.prefix(4)))
        #expect(f.header.missing == ["kv/llama/4"])
        for (i, k) in chain.prefix(4).enumerated() { #expect(Array(f.bytes(i)) == content(k, 20_000)) }
        #expect(f.header.blocks[0].tier == "cxl")
        // The CXL read carried its emulated access time.
        #expect(f.header.readSeconds > 20_000 / (5e9 * 51 / 70))
        let stats = rig.handler.stats()
        #expect(stats.tiers.map(\.kind) == ["dram", "cxl", "nvme"])
        #expect(stats.tiers[1].emulated && stats.tiers[1].label.contains("emulated"))
        #expect(stats.gets == 1 && stats.puts == 4)
    }

    @Test("blocks of 64 KiB go chunk by chunk from the blocks themselves (no copy into libzmq) both ways, every byte right")
    func blockSizedChunks() throws {
        let rig = try Rig()
        let keys = (0..<3).map { "kv/big/\($0)" }
        let blocks = keys.map { (key: $0, bytes: content($0, 64 << 10)) }
        #expect(BlockBatch.chunkBytes(blocks.map(\.bytes)) == 64 << 10, "one chunk per block: each is shared, not assembled")
        guard case .success(let n) = try rig.put(0, blocks) else { Issue.record("put failed"); return }
        #expect(n == 3 * (64 << 10))
        guard case .success(let f) = try rig.get(1, keys) else { Issue.record("get failed"); return }
        #expect(f.header.blocks.map(\.key) == keys)
        for (i, k) in keys.enumerated() { #expect(Array(f.bytes(i)) == content(k, 64 << 10)) }
    }

    @Test("NVMe blocks are read on the tier's reader thread: the answer comes once they are in, in order, every byte right, the prefix ending at the first missing key")
    func detachedNVMeReads() throws {
        let rig = try Rig(detachedReads: true)
        let chain = (0..<8).map { "kv/long/\($0)" }
        // 6 × 40 000 bytes over 64 KiB of DRAM and 64 KiB of CXL: the first four went to NVMe.
        guard case .success = try rig.put(0, chain.prefix(6).map { (key: $0, bytes: content($0, 40_000)) }) else { Issue.record("put failed"); return }
        #expect(rig.handler.store.tier(of: chain[0]) == .nvme && rig.handler.store.tier(of: chain[5]) == .dram)
        rig.handler.store.delete(chain[4])   // a hole: the prefix ends there
        guard case .success(let f) = try rig.get(1, chain, prefixOnly: true) else { Issue.record("get failed"); return }
        #expect(f.header.blocks.map(\.key) == Array(chain.prefix(4)) && f.header.missing == [chain[4]])
        #expect(f.header.blocks.filter { $0.tier == "nvme" }.count >= 3, "\(f.header.blocks.map(\.tier))")
        for (i, k) in chain.prefix(4).enumerated() { #expect(Array(f.bytes(i)) == content(k, 40_000)) }
        let nvme = try #require(rig.handler.stats().tiers.first { $0.kind == "nvme" })
        #expect(nvme.hits >= 3 && nvme.label.contains("reader thread"))
        // Promoted by the get: read again, from memory this time.
        guard case .success(let again) = try rig.get(0, [chain[3]]) else { Issue.record("second get failed"); return }
        #expect(again.header.blocks.first?.tier == "dram" && Array(again.bytes(0)) == content(chain[3], 40_000))
    }

    @Test("bad input: unknown keys are reported missing, a block larger than every tier and a malformed put are refused with reasons, the host keeps serving")
    func badInput() throws {
        let rig = try Rig()
        guard case .success(let f) = try rig.get(0, ["kv/none/0", "kv/none/1"]) else { Issue.record("get failed"); return }
        #expect(f.header.blocks.isEmpty && f.header.missing == ["kv/none/0", "kv/none/1"])
        guard case .failure(let e) = try rig.put(0, [(key: "huge", bytes: content("huge", 2 << 20))]) else { Issue.record("a 2 MiB block was taken"); return }
        #expect("\(e)".contains("1 to 1048576 bytes"))
        // A put header that does not match its payload.
        var h = TierPutHeader(); h.keys = ["a", "b"]; h.sizes = [10]
        var out: Result<Int, DataPlaneError>?
        try rig.planes[0].send(to: rig.host, kind: TierStoreHandler.putKind, meta: ["header": try h.serializedData().base64EncodedString()],
                               totalBytes: 10, source: { _, n, emit in try [UInt8](repeating: 1, count: n).withUnsafeBytes { try emit($0) } }) { out = $0 }
        try rig.run { out != nil }
        guard case .failure(let e2)? = out else { Issue.record("a malformed put was taken"); return }
        #expect("\(e2)".contains("one size per key"))
        #expect(rig.handler.problems["malformed"] == 1 && rig.handler.problems["too-large"] == 1)
        #expect(try rig.put(1, [(key: "ok", bytes: content("ok", 100))]).isSuccess)
        #expect(rig.handler.stats().misses == 2)
    }

    @Test("a memory host that is gone: the get fails after the timeout, so the GPU agent can recompute")
    func hostGone() throws {
        let rig = try Rig()
        rig.clients[0].timeoutNanos = 300_000_000
        let host = rig.host
        rig.hostPlane.close(); rig.hostUp = false
        var out: Result<TierClient.Fetched, TierClient.ClientError>?
        try rig.clients[0].get(["kv/x/0"], from: host) { out = $0 }
        try rig.run { out != nil }
        let r = try #require(out)
        guard case .failure(let e) = r else { Issue.record("a get from a closed host succeeded"); return }
        #expect("\(e)".contains("did not answer") || "\(e)".contains("failed"))
        #expect(rig.clients[0].inFlight == 0)
    }
}

extension Result {
    var isSuccess: Bool { if case .success = self { return true } else { return false } }
}
