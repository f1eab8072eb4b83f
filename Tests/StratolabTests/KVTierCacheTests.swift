import Cluster
import DataPlane
import Foundation
import Protocol
import Scheduling
import Testing
import Wire
@testable import Features

/// A memory host and two GPU nodes in one process, each on its own real data plane: GPU nodes'
/// replicas store finished prompts' chunks on the host and load cached prefixes from it.
private final class Rig {
    let hostPlane: DataPlane
    let host: TierStoreHandler
    let gpuPlanes: [DataPlane]
    let replicas: [EmulatedReplicas]
    let caches: [KVTierCache]
    let dir: String
    var hostUp = true

    init(policy: String, linkBytesPerSecond: Double) throws {
        dir = NSTemporaryDirectory() + "strato-kvcache-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        hostPlane = try DataPlane(config: DataPlaneConfig(nodeID: "mem-0"))
        let store = try TieredBlockStore(tiers: [(DRAMTier(), 64 << 20), (try FileTier(directory: dir), 256 << 20)])
        host = TierStoreHandler(store: store, plane: hostPlane)
        gpuPlanes = try (0..<2).map { try DataPlane(config: DataPlaneConfig(nodeID: "gpu-\($0)")) }
        let reps = (0..<2).map { _ in EmulatedReplicas(kb: llamaA100KB) }
        let planes = gpuPlanes
        replicas = reps
        caches = (0..<2).map { KVTierCache(replicas: reps[$0], plane: planes[$0]) }
        let wall = SystemClock.shared.wallNanos()
        for (i, r) in replicas.enumerated() {
            var s = StartReplica()
            s.replicaID = "r-\(i)"; s.serviceID = "svc"; s.model = "Llama-2-7b"; s.gpuModel = "A100-80GB"; s.gpus = [0]; s.batch = 8; s.timeScale = 1
            s.kvBytesScale = 1.0 / 4096
            precondition(r.start(s, nodeGPUModel: "A100-80GB", nodeGPUs: 1, busy: [], wallNanos: wall).ok)
        }
        var cfg = TierConfig()
        cfg.policy = policy; cfg.linkBytesPerSecond = linkBytesPerSecond; cfg.linkLatencySeconds = 10e-6; cfg.version = 1
        var h = MemoryHostAddress(); h.node = "mem-0"; h.endpoint = hostPlane.endpoint
        for (k, bw, lat) in [("dram", 50.0, 100.0), ("nvme", 2.0, 80_000.0)] {
            var f = TierFigure(); f.kind = k; f.bandwidthGbps = bw; f.latencyNs = lat; h.tiers.append(f)
        }
        cfg.hosts = [h]
        var c = TierCommand(); c.config = cfg
        let body = Array(try c.serializedData())
        for cache in caches { precondition(cache.execute(body, commandID: 1, wallNanos: wall).ok) }
    }

    deinit { hostPlane.close(); gpuPlanes.forEach { $0.close() }; try? FileManager.default.removeItem(atPath: dir) }

    func request(_ id: String, prompt: Int, decode: Int = 4, chunks: [Int]) -> InferenceRequest {
        var q = InferenceRequest(); q.requestID = id; q.serviceID = "svc"; q.prefillTokens = UInt32(prompt); q.decodeTokens = UInt32(decode)
        q.prefixKeys = PrefixKeys.chain(chunks, model: "Llama-2-7b"); q.prefixChunkTokens = 512
        return q
    }

    func serve(_ q: InferenceRequest, on i: Int) {
        var sr = ServeRequests(); sr.replicaID = "r-\(i)"; sr.requests = [q]
        precondition(replicas[i].serve(sr, wallNanos: SystemClock.shared.wallNanos()).ok)
    }

    /// One turn of every plane and handler.
    func pumpOnce() throws {
        _ = try ZMQPoller.readable((hostUp ? hostPlane.sockets : []) + gpuPlanes.flatMap(\.sockets), timeoutMs: 2)
        if hostUp { try hostPlane.pump() }
        for p in gpuPlanes { try p.pump() }
        let wall = SystemClock.shared.wallNanos()
        host.pump(wallNanos: wall)
        caches.forEach { $0.pump(wallNanos: wall) }
    }

    /// Pumps everything until request `id` has a result on node `i`; its result.
    func result(_ id: String, on i: Int, seconds: Double = 20) throws -> RequestResult {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            try pumpOnce()
            if let r = replicas[i].results(wallNanos: SystemClock.shared.wallNanos()).first(where: { $0.requestID == id }) { return r }
        }
        throw DataPlaneError.cancelled("no result for \(id) within \(seconds) s")
    }

    /// Pumps a little longer (stores after a prefill go out asynchronously).
    func settle(_ seconds: Double = 0.3) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline { try pumpOnce() }
    }
}

@Suite("KV prefixes on a memory host, between two GPU agents")
struct KVTierCacheTests {
    @Test("a prefix one agent computed is loaded by the other: every byte checked, its time to first token drops")
    func sharedPrefixLowersTTFT() throws {
        // A link as fast as the host's DRAM path (25 GB/s): loading 8 chunks beats prefilling 4,096 tokens.
        let rig = try Rig(policy: "tiered", linkBytesPerSecond: 25e9)
        rig.serve(rig.request("a", prompt: 4200, chunks: Array(0..<9)), on: 0)
        _ = try rig.result("a", on: 0)
        try rig.settle()
        #expect(rig.caches[0].stats.storedChunks == 8, "8 whole 512-token chunks of a 4,200-token prompt")
        #expect(rig.host.store.count == 8)
        // The same first 8 chunks, a different 9th: served on the other GPU node.
        rig.serve(rig.request("b", prompt: 4200, chunks: Array(0..<8) + [99]), on: 1)
        let b = try rig.result("b", on: 1)
        // A prompt with nothing cached, for comparison, on the same node.
        rig.serve(rig.request("c", prompt: 4200, chunks: Array(200..<209)), on: 1)
        let c = try rig.result("c", on: 1)
        let s = rig.caches[1].stats
        #expect(s.hits == 1 && s.hitTokens == 4096 && s.fallbacks == 0)
        #expect(s.loadedBytes == 8 * UInt64(512 * (512 * 1024) / 4096))
        #expect(s.decisions["load-faster"] == 1)
        // At time scale 1 the lookup's and load's round trips count as they are (a few ms); the
        // load's modelled time (2 GiB at 25 GB/s, 86 ms) and 104 tokens of prefill against 4,200.
        #expect(b.ttftSeconds < c.ttftSeconds * 0.8, "TTFT with the prefix loaded \(b.ttftSeconds) s vs prefilled \(c.ttftSeconds) s")
    }

    @Test("after the memory hosts change (one came back empty), an agent stores its chunks again")
    func hostsChangedStoresAgain() throws {
        let rig = try Rig(policy: "dram", linkBytesPerSecond: 25e9)
        rig.serve(rig.request("a", prompt: 2100, chunks: Array(0..<5)), on: 0)
        _ = try rig.result("a", on: 0)
        try rig.settle()
        #expect(rig.caches[0].stats.storedChunks == 4)
        // The host lost its DRAM (a restart); the coordinator's next config lists it anew, with
        // the figures it probed when it started again.
        for k in PrefixKeys.chain(Array(0..<5), model: "Llama-2-7b") { rig.host.store.delete(k) }
        var cfg = rig.caches[0].config
        cfg.hosts[0].tiers[0].bandwidthGbps += 1
        cfg.version = 2
        var c = TierCommand(); c.config = cfg
        #expect(rig.caches[0].execute(Array(try c.serializedData()), commandID: 2, wallNanos: 0).ok)
        rig.serve(rig.request("a2", prompt: 2100, chunks: Array(0..<5)), on: 0)
        _ = try rig.result("a2", on: 0)
        try rig.settle()
        #expect(rig.caches[0].stats.storedChunks == 8, "the same 4 chunks stored again")
        #expect(rig.host.store.count == 4)
    }

    @Test("tiered: over a slow link recomputing beats loading, so the agent prefills and says why")
    func slowLinkRecomputes() throws {
        let rig = try Rig(policy: "tiered", linkBytesPerSecond: 1e9)
        // Over this link no tier beats recompute: tiered stores nothing.
        rig.serve(rig.request("z", prompt: 1100, chunks: Array(300..<303)), on: 0)
        _ = try rig.result("z", on: 0)
        try rig.settle()
        #expect(rig.caches[0].stats.storedChunks == 0 && rig.caches[0].stats.decisions["store: no tier beats recompute"] == 2)
        // Node 0 switched to a policy that stores everything in DRAM.
        var cfg = rig.caches[0].config
        cfg.policy = "dram"; cfg.version = 2
        var c = TierCommand(); c.config = cfg
        #expect(rig.caches[0].execute(Array(try c.serializedData()), commandID: 2, wallNanos: 0).ok)
        rig.serve(rig.request("a", prompt: 4200, chunks: Array(0..<9)), on: 0)
        _ = try rig.result("a", on: 0)
        try rig.settle()
        #expect(rig.caches[0].stats.storedChunks == 8)
        rig.serve(rig.request("b", prompt: 4200, chunks: Array(0..<9)), on: 1)
        _ = try rig.result("b", on: 1)
        let s = rig.caches[1].stats
        #expect(s.hits == 0 && s.decisions["recompute-faster"] == 1 && s.loadedBytes == 0)
    }

    @Test("the memory host is gone: the request is prefilled as usual and the fallback counted; nothing is lost")
    func hostGoneFallsBack() throws {
        let rig = try Rig(policy: "dram", linkBytesPerSecond: 25e9)
        rig.serve(rig.request("a", prompt: 2100, chunks: Array(0..<5)), on: 0)
        _ = try rig.result("a", on: 0)
        try rig.settle()
        rig.hostPlane.close(); rig.hostUp = false
        rig.caches[1].timeoutNanos = 300_000_000
        rig.serve(rig.request("b", prompt: 2100, chunks: Array(0..<5)), on: 1)
        let b = try rig.result("b", on: 1)
        #expect(b.requestID == "b")
        #expect(rig.caches[1].stats.fallbacks == 1 && rig.caches[1].stats.hits == 0)
    }

    @Test("offload policies: placement by popularity and cost, loading by cost")
    func policies() {
        let t = TieredOffload()
        let tiers = [TierFigures(kind: "dram", bandwidthBytesPerSecond: 20e9, latencySeconds: 1e-7),
                     TierFigures(kind: "cxl", bandwidthBytesPerSecond: 14e9, latencySeconds: 2.5e-7),
                     TierFigures(kind: "nvme", bandwidthBytesPerSecond: 2e9, latencySeconds: 8e-5)]
        // 256 MiB of KV that takes 60 ms to prefill: DRAM and CXL beat that over a 25 GB/s link, NVMe does not.
        var p = ChunkPlacement(bytes: 268_435_456, tiers: tiers, linkBytesPerSecond: 25e9, linkLatencySeconds: 1e-5, recomputeSeconds: 0.06, seen: 1)
        #expect(t.storeTier(p).tier == "cxl")
        p.seen = 3
        #expect(t.storeTier(p).tier == "dram")
        p.recomputeSeconds = 0.001
        #expect(t.storeTier(p).tier == nil && t.storeTier(p).reason == "no tier beats recompute")
        let tier = tiers[0]
        var c = PrefixChoice(tokens: 4096, bytes: 2e9, tier: tier, linkBytesPerSecond: 10e9, linkLatencySeconds: 1e-5, recomputeSeconds: 0.4)
        #expect(abs(c.loadSeconds - (0.2 + 1e-7 + 1e-5)) < 1e-12)
        #expect(t.load(c).load)
        c.linkBytesPerSecond = 4e9
        #expect(!t.load(c).load && t.load(c).reason == "recompute-faster")
        // Slower than recompute, but others wait for that GPU: loading frees it for them.
        c.gpuBacklog = 3
        #expect(t.load(c).load && t.load(c).reason == "load-frees-busy-gpu")
        c.gpuBacklog = 0
        #expect(SingleTierOffload(tier: "cxl").load(c).load)
        #expect(SingleTierOffload(tier: "cxl").storeTier(p).tier == "cxl")
        p.tiers = [tiers[0], tiers[2]]
        #expect(SingleTierOffload(tier: "cxl").storeTier(p).tier == "dram")
        #expect(OffloadPolicies.named("none")?.storeTier(p).tier == nil)
        #expect(OffloadPolicies.named("lru") == nil)
    }
}
