import Cluster
import DataPlane
import Foundation
import Protocol
import Scheduling
import Testing
import Wire
@testable import Features

/// A memory host and a GPU node in one process on real data planes; the replica has 10 KV blocks,
/// so one of two requests is preempted and its KV swapped out to the host.
private final class SwapRig {
    let hostPlane: DataPlane
    let host: TierStoreHandler
    let gpuPlane: DataPlane
    let replicas = EmulatedReplicas(kb: llamaA100KB)
    let cache: KVTierCache

    init(policy: String) throws {
        hostPlane = try DataPlane(config: DataPlaneConfig(nodeID: "mem-0"))
        host = TierStoreHandler(store: try TieredBlockStore(tiers: [(DRAMTier(), 64 << 20)]), plane: hostPlane)
        gpuPlane = try DataPlane(config: DataPlaneConfig(nodeID: "gpu-0"))
        replicas.kvBlocksOverride = 10
        cache = KVTierCache(replicas: replicas, plane: gpuPlane)
        var s = StartReplica()
        s.replicaID = "r-0"; s.serviceID = "svc"; s.model = "Llama-2-7b"; s.gpuModel = "A100-80GB"; s.gpus = [0]; s.batch = 8; s.timeScale = 10
        s.kvBytesScale = 1.0 / 4096
        precondition(replicas.start(s, nodeGPUModel: "A100-80GB", nodeGPUs: 1, busy: [], wallNanos: SystemClock.shared.wallNanos()).ok)
        var cfg = TierConfig()
        cfg.policy = policy; cfg.linkBytesPerSecond = 12.5e9; cfg.linkLatencySeconds = 10e-6; cfg.version = 1
        var h = MemoryHostAddress(); h.node = "mem-0"; h.endpoint = hostPlane.endpoint
        var f = TierFigure(); f.kind = "dram"; f.bandwidthGbps = 20; f.latencyNs = 100; h.tiers = [f]
        cfg.hosts = [h]
        var c = TierCommand(); c.config = cfg
        let body = Array(try c.serializedData())
        precondition(cache.execute(body, commandID: 1, wallNanos: 0).ok)
    }

    deinit { hostPlane.close(); gpuPlane.close() }

    func serve(_ ids: [String]) {
        var sr = ServeRequests(); sr.replicaID = "r-0"
        sr.requests = ids.map { var q = InferenceRequest(); q.requestID = $0; q.serviceID = "svc"; q.prefillTokens = 64; q.decodeTokens = 60; return q }
        precondition(replicas.serve(sr, wallNanos: SystemClock.shared.wallNanos()).ok)
    }

    /// Pumps until every id has a result (or the time is up), calling `each` on every turn.
    func results(_ ids: [String], seconds: Double = 20, each: () -> Void = {}) throws -> [String: RequestResult] {
        var out: [String: RequestResult] = [:]
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline && out.count < ids.count {
            _ = try ZMQPoller.readable(hostPlane.sockets + gpuPlane.sockets, timeoutMs: 2)
            try hostPlane.pump(); try gpuPlane.pump()
            let wall = SystemClock.shared.wallNanos()
            host.pump(wallNanos: wall)
            cache.pump(wallNanos: wall)
            each()
            for r in replicas.results(wallNanos: wall) where ids.contains(r.requestID) { out[r.requestID] = r }
        }
        return out
    }
}

@Suite("KV swap to a memory host")
struct KVSwapTests {
    @Test("a preempted request's KV goes to the memory host as real bytes and comes back checked; it is not prefilled again")
    func swapsOutAndBack() throws {
        let rig = try SwapRig(policy: "dram")
        rig.serve(["old", "new"])
        let out = try rig.results(["old", "new"])
        #expect(out.count == 2)
        let s = rig.cache.stats
        #expect(s.swapOuts == 1 && s.swapIns == 1 && s.swapFallbacks == 0)
        // 5 blocks of 2 KiB (an 8 MiB Llama-2-7B block at 1/4096) each way; taken back off the host.
        #expect(s.swapBytesOut == 5 * 2048 && s.swapBytesIn == 5 * 2048 && s.swapSeconds > 0)
        #expect(out.values.reduce(0) { $0 + $1.preemptions } == 1 && rig.host.store.count == 0)
        #expect(rig.replicas.preemptionCounts == (1, 1))
    }

    @Test("swapped KV the host no longer has: the request is recomputed, counted, and finishes")
    func lostSwapIsRecomputed() throws {
        let rig = try SwapRig(policy: "dram")
        rig.serve(["old", "new"])
        // The host loses what it holds (a restart) while "new" is swapped out.
        let out = try rig.results(["old", "new"]) {
            for k in rig.host.store.keys where k.hasPrefix("swap/") { rig.host.store.delete(k) }
        }
        #expect(out.count == 2)
        #expect(rig.cache.stats.swapOuts == 1 && rig.cache.stats.swapFallbacks == 1 && rig.cache.stats.swapIns == 0)
    }

    @Test("policy none never swaps: the preempted request is recomputed")
    func noneRecomputes() throws {
        let rig = try SwapRig(policy: "none")
        rig.serve(["old", "new"])
        let out = try rig.results(["old", "new"])
        #expect(out.count == 2 && out.values.reduce(0) { $0 + $1.preemptions } == 1 && rig.cache.stats.swapOuts == 0)
        #expect(rig.replicas.preemptionCounts == (1, 0))
    }
}
