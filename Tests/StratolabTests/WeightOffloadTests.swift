import Cluster
import DataPlane
import Foundation
import Protocol
import Scheduling
import Testing
import Wire
@testable import Features

let llama70A40KB: KnowledgeBase = {
    let r = KnowledgeImporter.importFile(dataDir + "/profiles/vidur/a40_Llama-2-70b-hf_mlp.csv")
    return KnowledgeBase(rows: r.rows)
}()

@Suite("Weight offload: a model larger than its GPU streams its layers from a memory tier")
struct WeightOffloadTests {
    let arch = ModelCatalog.model(named: "Llama-2-70b")!
    let a40 = GPUCatalog.model(named: "A40")!

    @Test("Llama-2-70B on one A40: 18 layers stay, 62 stream; a model that fits needs no plan")
    func planKnownAnswer() throws {
        let p = try #require(WeightOffloadPlan.plan(arch: arch, gpu: a40, tensorParallel: 1))
        // 138 GB of weights, 1.725 GB a layer; 70 % of 90 % of 48 GiB (32.5 GB) holds 18 layers.
        #expect(p.layers == 80 && p.residentLayers == 18 && p.offloadedLayers == 62)
        #expect(abs(p.layerBytes - 1.725e9) < 1e6)
        #expect(abs(p.streamedBytesPerStep - 62 * 1.725e9) < 1e7)
        #expect(abs(p.kvBytes - (48 * 1_073_741_824 * 0.9 - 18 * 1.725e9)) < 1e6)
        // 107 GB through the slower of a 10 GB/s tier and a 12.5 GB/s link, plus 62 × (1 µs + 10 µs).
        let dram = TierFigures(kind: "dram", bandwidthBytesPerSecond: 10e9, latencySeconds: 1e-6)
        #expect(abs(p.streamSeconds(tier: dram, linkBytesPerSecond: 12.5e9, linkLatencySeconds: 10e-6) - (p.streamedBytesPerStep / 10e9 + 62 * 11e-6)) < 1e-9)
        // Over two GPUs it still does not fit (69 GB each), over four it does (34.5 GB each).
        #expect(WeightOffloadPlan.plan(arch: arch, gpu: a40, tensorParallel: 2)?.residentLayers == 37)
        #expect(WeightOffloadPlan.plan(arch: arch, gpu: a40, tensorParallel: 4) == nil)
        #expect(WeightOffloadPlan.plan(arch: ModelCatalog.model(named: "Llama-2-7b")!, gpu: GPUCatalog.model(named: "A100-80GB")!, tensorParallel: 1) == nil)
    }

    @Test("the policy's tier for weights: none keeps them on the GPU, one tier is that tier, tiered the fastest")
    func weightTier() {
        let tiers = [TierFigures(kind: "dram", bandwidthBytesPerSecond: 10e9, latencySeconds: 1e-7),
                     TierFigures(kind: "cxl", bandwidthBytesPerSecond: 7e9, latencySeconds: 2.5e-7),
                     TierFigures(kind: "nvme", bandwidthBytesPerSecond: 1e9, latencySeconds: 1e-4)]
        #expect(NoOffload().weightTier(tiers).tier == nil)
        #expect(SingleTierOffload(tier: "cxl").weightTier(tiers).tier == "cxl")
        #expect(SingleTierOffload(tier: "cxl").weightTier([tiers[0], tiers[2]]).tier == "dram")
        #expect(TieredOffload().weightTier([tiers[2], tiers[1], tiers[0]]).tier == "dram")
    }

    @Test("a step takes the longer of its compute and the stream; a stalled engine starts no step and loses nothing")
    func engineStepsAtTheStreamAndStalls() throws {
        let base = try #require(InferenceModel(kb: llama70A40KB, model: "Llama-2-70b", gpuModel: "A40", tensorParallel: 1))
        let plan = try #require(WeightOffloadPlan.plan(arch: arch, gpu: a40, tensorParallel: 1))
        let model = base.offloadingWeights(plan, streamSeconds: 5)
        var e = ServingEngine(model: model, config: ServingEngine.Config(maxRunning: 8))
        // KV from what the resident layers leave: 15.3 GB at 320 KiB a token.
        #expect(e.gpuBlocks == Int((48 * 1_073_741_824 * 0.9 - plan.residentWeightBytes) / (arch.kvBytesPerToken * 16)))
        #expect(e.add(id: "a", prompt: 256, decode: 4, at: 0) == nil)
        let a = try #require(e.takeFinished(by: 1000).first)
        // Four steps (one prefill, three decodes), each 5 s of streaming: compute is far less.
        #expect(abs(a.firstToken - 5) < 1e-9 && abs(a.finished - 20) < 1e-9 && abs(a.meanTBT - 5) < 1e-9)

        // Stalled (no host holds the layers): a request waits; nothing runs until it ends.
        e.stall(at: 100)
        #expect(e.add(id: "b", prompt: 256, decode: 2, at: 101) == nil)
        #expect(e.takeFinished(by: 500).isEmpty && e.nextStepAt == nil && e.load == 1)
        e.unstall(at: 500, streamSeconds: 8)
        let b = try #require(e.takeFinished(by: 1000).first)
        #expect(abs(b.firstToken - 508) < 1e-9 && abs(b.finished - 516) < 1e-9 && abs(b.ttft - 407) < 1e-9)
        #expect(abs(e.stalledSeconds - 400) < 1e-9)
    }

    @Test("planning: a model larger than its GPU is refused unless it offloads its weights; offloaded, its capacity follows the link")
    func schedulerPlansOffload() throws {
        var spec = ServiceSpec(id: "big", model: "Llama-2-70b", gpuModel: "A40", gpusPerReplica: 1, rateCurve: [RatePoint(time: 0, rps: 0.01)],
                               meanPrefillTokens: 512, meanDecodeTokens: 32, sloSeconds: 3600)
        var s = Scheduler(policy: Policies.named("fifo")!, kb: llama70A40KB, services: [spec])
        #expect(s.services.isEmpty && s.skippedServices.first?.reason.contains("weights: offload") == true)
        spec.offloadWeights = true
        s = Scheduler(policy: Policies.named("fifo")!, kb: llama70A40KB)
        s.weightLinkBytesPerSecond = 12.5e9
        s.addService(spec)
        let planned = try #require(s.plannedModel(spec))
        #expect(s.services.count == 1 && (s.batchPerReplica["big"] ?? 0) > 1)
        #expect(abs(planned.weightStreamSeconds - 62 * 1.725e9 / 12.5e9) < 0.01)
        let slower = { () -> Double in
            var t = Scheduler(policy: Policies.named("fifo")!, kb: llama70A40KB)
            t.weightLinkBytesPerSecond = 1e9
            t.addService(spec)
            return t.capacityPerReplica["big"] ?? 0
        }()
        #expect(slower < (s.capacityPerReplica["big"] ?? 0) * 0.2, "a link 12.5× slower serves far fewer requests")
    }
}

/// A memory host and a GPU node in one process, each on its own real data plane: a Llama-2-70B
/// replica on an A40 streams its 62 offloaded layers from the host's NVMe tier.
private final class WeightRig {
    let hostPlane: DataPlane
    let host: TierStoreHandler
    let gpuPlane: DataPlane
    let replicas = EmulatedReplicas(kb: llama70A40KB)
    let cache: KVTierCache
    let dir: String
    var version: UInt64 = 1

    init() throws {
        dir = NSTemporaryDirectory() + "strato-weights-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        hostPlane = try DataPlane(config: DataPlaneConfig(nodeID: "mem-0"))
        let store = try TieredBlockStore(tiers: [(DRAMTier(), 64 << 20), (try FileTier(directory: dir), 64 << 20)])
        host = TierStoreHandler(store: store, plane: hostPlane)
        gpuPlane = try DataPlane(config: DataPlaneConfig(nodeID: "gpu-0"))
        cache = KVTierCache(replicas: replicas, plane: gpuPlane)
        try configure(hosts: true)
        var s = StartReplica()
        s.replicaID = "r-0"; s.serviceID = "big"; s.model = "Llama-2-70b"; s.gpuModel = "A40"; s.gpus = [0]; s.batch = 8
        s.timeScale = 500; s.kvBytesScale = 1.0 / 65536; s.offloadWeights = true
        let started = replicas.start(s, nodeGPUModel: "A40", nodeGPUs: 1, busy: [], wallNanos: SystemClock.shared.wallNanos())
        precondition(started.ok, started.detail)
    }

    deinit { hostPlane.close(); gpuPlane.close(); try? FileManager.default.removeItem(atPath: dir) }

    /// The coordinator's config: the host listed, or none (it died).
    func configure(hosts: Bool) throws {
        var cfg = TierConfig()
        cfg.policy = "nvme"; cfg.linkBytesPerSecond = 12.5e9; cfg.linkLatencySeconds = 10e-6; cfg.version = version
        version += 1
        if hosts {
            var h = MemoryHostAddress(); h.node = "mem-0"; h.endpoint = hostPlane.endpoint
            for (k, bw, lat) in [("dram", 20.0, 100.0), ("nvme", 2.0, 80_000.0)] {
                var f = TierFigure(); f.kind = k; f.bandwidthGbps = bw; f.latencyNs = lat; h.tiers.append(f)
            }
            cfg.hosts = [h]
        }
        var c = TierCommand(); c.config = cfg
        let out = cache.execute(Array(try c.serializedData()), commandID: version, wallNanos: SystemClock.shared.wallNanos())
        precondition(out.ok)
    }

    func serve(_ id: String) {
        var q = InferenceRequest(); q.requestID = id; q.serviceID = "big"; q.prefillTokens = 256; q.decodeTokens = 3
        var sr = ServeRequests(); sr.replicaID = "r-0"; sr.requests = [q]
        precondition(replicas.serve(sr, wallNanos: SystemClock.shared.wallNanos()).ok)
    }

    func pump(seconds: Double, until done: () -> Bool = { false }) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline && !done() {
            _ = try ZMQPoller.readable(hostPlane.sockets + gpuPlane.sockets, timeoutMs: 2)
            try hostPlane.pump(); try gpuPlane.pump()
            let wall = SystemClock.shared.wallNanos()
            host.pump(wallNanos: wall)
            cache.pump(wallNanos: wall)
        }
    }

    func result(_ id: String, seconds: Double = 20) throws -> RequestResult? {
        var r: RequestResult?
        try pump(seconds: seconds) {
            r = replicas.results(wallNanos: SystemClock.shared.wallNanos()).first { $0.requestID == id }
            return r != nil
        }
        return r
    }

    var stream: WeightStreamStats { cache.weights.report(wallNanos: SystemClock.shared.wallNanos())[0] }
}

@Suite("Weight offload between a GPU agent and a memory host")
struct WeightStreamerTests {
    @Test("the layers go to the policy's tier, every step fetches their real bytes without promoting them, and a lost host stalls the replica until they are placed again")
    func streamsFromTheTierAndStallsWithoutAHost() throws {
        let rig = try WeightRig()
        rig.serve("a")
        let a = try #require(try rig.result("a"), "served once the layers are on the host")
        var st = rig.stream
        #expect(st.state == "streaming" && st.host == "mem-0" && st.tier == "nvme" && st.offloadedLayers == 62)
        // 107 GB at the NVMe tier's 2 GB/s (the link is faster), plus 62 × (80 + 10) µs.
        #expect(abs(st.streamSeconds - (62 * 1.725e9 / 2e9 + 62 * 90e-6)) < 0.05)
        #expect(a.ttftSeconds >= st.streamSeconds && a.meanTbtSeconds >= st.streamSeconds * 0.999)
        try rig.pump(seconds: 0.3)
        st = rig.stream
        let shard = 1.725e9 / 65536
        #expect(st.rounds >= 1 && st.bytesStreamed == st.rounds * 62 * UInt64(shard.rounded()))
        // Fetched every step, and still in NVMe: weights are not promoted.
        let last = WeightOffloadPlan.shardKey(model: "Llama-2-70b", tensorParallel: 1, layer: 79)
        #expect(rig.host.store.tier(of: last) == .nvme && rig.host.store.count == 62)

        // The host is gone from the coordinator's list: no step starts, the request waits.
        try rig.configure(hosts: false)
        rig.serve("b")
        #expect(try rig.result("b", seconds: 0.5) == nil)
        #expect(rig.stream.state == "stalled")
        try rig.configure(hosts: true)
        let b = try #require(try rig.result("b"), "served once the layers are placed again")
        #expect(rig.stream.state == "streaming" && rig.stream.stalledSeconds > 0)
        #expect(b.ttftSeconds > rig.stream.stalledSeconds * 0.5)
    }
}
