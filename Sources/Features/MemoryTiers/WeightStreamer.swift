import Cluster
import DataPlane
import Foundation
import Logging
import Protocol
import Scheduling
import Wire

/// Feature "tiers", GPU-agent side: the offloaded layers of replicas whose model does not fit
/// their GPUs (FlexGen's setting). For each such replica:
/// - **placing**: its layers beyond the resident ones go to a memory host (the first live one by
///   name), into the tier the offload policy picks (the fastest it allows: they are read every
///   step), keyed by (model, tensor parallel, layer) so replicas of one model share one copy.
///   Each shard is real bytes at the replica's bytes scale, a function of its key.
/// - **streaming**: the engine's steps take at least the modelled stream time (the layers' model
///   bytes over the tier's measured bandwidth and the link, plus latencies), and every engine step
///   fetches the layers' real bytes again from the host (no promotion: they stay in their tier),
///   every byte checked. A shard the tier evicted is put again.
/// - **stalled**: the host died or went from the list: no step starts (requests wait, none is
///   lost) until the layers are placed on a live host again.
final class WeightStreamer: WeightSource {
    enum State: String { case stalled, placing, streaming }

    struct Stream {
        var model: InferenceModel
        var plan: WeightOffloadPlan
        var scale: Double
        var state = State.stalled
        var host: MemoryHostAddress?
        var tier = ""
        var reason = ""
        /// Bumped on every placement: callbacks of an older one are ignored.
        var generation = 0
        var roundInFlight = false
        var roundStartedAt: Int64 = 0
        var lastRoundStep = -1
        var stats = WeightStreamStats()

        var keys: [String] {
            (plan.residentLayers..<plan.layers).map {
                WeightOffloadPlan.shardKey(model: model.arch.name, tensorParallel: model.tensorParallel, layer: $0)
            }
        }
        /// Real bytes held per shard (at least a word, so a shard is never empty).
        var shardBytes: Int { max(8, Int((plan.layerBytes * scale).rounded())) }
    }

    private let replicas: EmulatedReplicas
    private let client: TierClient
    var clock: Clock = SystemClock.shared
    var logger = Logger(label: "strato.tiers.weights")
    private(set) var streams: [String: Stream] = [:]
    private var hosts: [MemoryHostAddress] = []
    private var policy: OffloadPolicy = TieredOffload()
    private var linkBytesPerSecond = 0.0
    private var linkLatencySeconds = 0.0

    init(replicas: EmulatedReplicas, client: TierClient) {
        self.replicas = replicas
        self.client = client
        replicas.weightSource = self
    }

    // MARK: WeightSource

    func replicaStarted(_ replica: String, model: InferenceModel, plan: WeightOffloadPlan, bytesScale: Double) {
        var s = Stream(model: model, plan: plan, scale: bytesScale > 0 ? bytesScale : 1.0 / 4096)
        s.stats.replicaID = replica
        s.stats.model = model.arch.name
        s.stats.residentLayers = UInt32(plan.residentLayers)
        s.stats.offloadedLayers = UInt32(plan.offloadedLayers)
        s.stats.bytesPerStep = plan.streamedBytesPerStep
        s.stats.bytesScale = s.scale
        streams[replica] = s
        place(replica)
    }

    func replicaStopped(_ replica: String) { streams[replica] = nil }

    // MARK: Configuration

    /// The coordinator's memory hosts and policy. A replica whose host is no longer listed (it
    /// died) stalls and is placed again on a live one.
    func configure(_ cfg: TierConfig, policy: OffloadPolicy) {
        hosts = cfg.hosts.sorted { $0.node < $1.node }
        self.policy = policy
        linkBytesPerSecond = cfg.linkBytesPerSecond
        linkLatencySeconds = cfg.linkLatencySeconds
        for (id, s) in streams {
            let hostGone = s.host.map { h in !hosts.contains { $0.node == h.node && $0.endpoint == h.endpoint } } ?? true
            if hostGone || s.state == .stalled { lost(id, why: s.host.map { "memory host \($0.node) is gone" } ?? "no memory host yet") ; place(id) }
        }
    }

    private func lost(_ id: String, why: String) {
        guard var s = streams[id] else { return }
        if s.state != .stalled {
            replicas.weightsLost(replica: id, wallNanos: clock.wallNanos())
            logger.warning("tiers: weights of \(id) stalled: \(why)")
        }
        s.state = .stalled
        s.host = nil
        s.tier = ""
        s.generation += 1
        s.roundInFlight = false
        streams[id] = s
    }

    // MARK: Placing

    /// Puts the replica's offloaded shards on the first live host, in the policy's tier.
    private func place(_ id: String) {
        guard var s = streams[id], s.state == .stalled, let host = hosts.first else { return }
        let (tier, reason) = policy.weightTier(host.tierFigures)
        guard let tier else {
            s.reason = reason
            streams[id] = s
            logger.warning("tiers: weights of \(id) stay unplaced: \(reason)")
            return
        }
        s.generation += 1
        s.state = .placing
        s.host = host
        s.tier = tier
        s.reason = reason
        streams[id] = s
        put(id, keys: s.keys, generation: s.generation)
    }

    private func put(_ id: String, keys: [String], generation: Int) {
        guard let s = streams[id], let host = s.host else { return }
        let blocks = keys.map { (key: $0, bytes: Self.shard($0, bytes: s.shardBytes)) }
        do {
            try client.put(blocks, to: host.peer, tier: TierKind(rawValue: s.tier)) { [weak self] r in
                self?.placed(id, keys: keys, generation: generation, result: r)
            }
        } catch {
            placed(id, keys: keys, generation: generation, result: .failure(.cancelled("\(error)")))
        }
    }

    private func placed(_ id: String, keys: [String], generation: Int, result: Result<Int, DataPlaneError>) {
        guard var s = streams[id], s.generation == generation, let host = s.host else { return }
        switch result {
        case .failure(let e):
            s.stats.failures += 1
            streams[id] = s
            lost(id, why: "putting \(keys.count) shards on \(host.node) failed: \(e)")
        case .success:
            if s.state == .placing {
                s.state = .streaming
                let fig = host.tierFigures.first { $0.kind == s.tier } ?? TierFigures(kind: s.tier, bandwidthBytesPerSecond: 0, latencySeconds: 0)
                s.stats.streamSeconds = s.plan.streamSeconds(tier: fig, linkBytesPerSecond: linkBytesPerSecond, linkLatencySeconds: linkLatencySeconds)
                streams[id] = s
                replicas.weightsReady(replica: id, streamSeconds: s.stats.streamSeconds, wallNanos: clock.wallNanos())
                logger.info("tiers: \(s.plan.offloadedLayers) layers of \(id) on \(host.node) \(s.tier) (\(s.reason)); a step streams \(String(format: "%.1f GB in %.3f s", s.plan.streamedBytesPerStep / 1e9, s.stats.streamSeconds))")
            } else {
                s.stats.reputs += UInt64(keys.count)
                streams[id] = s
            }
        }
    }

    // MARK: Streaming

    /// One round of real bytes per engine step, at most one in flight per replica.
    func pump(wallNanos: Int64) {
        for id in streams.keys.sorted() {
            guard let s = streams[id] else { continue }
            if s.state == .stalled { place(id); continue }
            guard s.state == .streaming, !s.roundInFlight, let host = s.host,
                  let progress = replicas.weightProgress(replica: id, wallNanos: wallNanos), progress.steps > s.lastRoundStep else { continue }
            let keys = s.keys
            let generation = s.generation
            streams[id]!.roundInFlight = true
            streams[id]!.lastRoundStep = progress.steps
            streams[id]!.roundStartedAt = clock.monotonicNanos()
            do {
                try client.get(keys, from: host.peer, promote: false) { [weak self] r in self?.streamed(id, generation: generation, result: r) }
            } catch {
                streamed(id, generation: generation, result: .failure(.refused(host.node, "\(error)")))
            }
        }
    }

    private func streamed(_ id: String, generation: Int, result: Result<TierClient.Fetched, TierClient.ClientError>) {
        guard var s = streams[id], s.generation == generation else { return }
        s.roundInFlight = false
        switch result {
        case .failure(let e):
            s.stats.failures += 1
            streams[id] = s
            // A host that does not answer is treated as gone; the coordinator's list confirms it.
            lost(id, why: "streaming from \(s.host?.node ?? "?") failed: \(e)")
        case .success(let f):
            var bad: [String] = []
            for (i, b) in f.header.blocks.enumerated() where !Self.matches(f.bytes(i), key: b.key) { bad.append(b.key) }
            s.stats.rounds += 1
            s.stats.bytesStreamed += UInt64(f.data.count)
            s.stats.roundSeconds += Double(clock.monotonicNanos() - s.roundStartedAt) / 1e9
            streams[id] = s
            // Evicted from the tier, or came back different: put again.
            let again = f.header.missing + bad
            if !again.isEmpty {
                if !bad.isEmpty { logger.warning("tiers: \(bad.count) weight shards of \(id) came back different; putting them again") }
                put(id, keys: again, generation: generation)
            }
        }
    }

    /// Every replica's stream as reported (`KVCacheStats.weights`).
    func report(wallNanos: Int64) -> [WeightStreamStats] {
        streams.keys.sorted().map { id in
            var st = streams[id]!.stats
            st.state = streams[id]!.state.rawValue
            st.host = streams[id]!.host?.node ?? ""
            st.tier = streams[id]!.tier
            st.reason = streams[id]!.reason
            if let p = replicas.weightProgress(replica: id, wallNanos: wallNanos) { st.steps = UInt64(p.steps); st.stalledSeconds = p.stalledSeconds }
            return st
        }
    }

    // MARK: Shard bytes

    /// A shard's bytes: little-endian words (seed + j) × φ, from its key, so the reader checks every byte.
    static func shard(_ key: String, bytes n: Int) -> [UInt8] {
        let seed = KVTierCache.seed(key)
        var out = [UInt8](repeating: 0, count: n)
        out.withUnsafeMutableBytes { raw in
            var j = 0
            while j * 8 + 8 <= n { raw.storeBytes(of: ((seed &+ UInt64(j)) &* 0x9E37_79B9_7F4A_7C15).littleEndian, toByteOffset: j * 8, as: UInt64.self); j += 1 }
            for i in (j * 8)..<n { raw[i] = KVTierCache.chunkByte(seed, i) }
        }
        return out
    }

    static func matches(_ bytes: ArraySlice<UInt8>, key: String) -> Bool {
        let seed = KVTierCache.seed(key)
        return bytes.withUnsafeBytes { raw in
            let n = raw.count
            var j = 0
            while j * 8 + 8 <= n {
                if UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: j * 8, as: UInt64.self)) != (seed &+ UInt64(j)) &* 0x9E37_79B9_7F4A_7C15 { return false }
                j += 1
            }
            for i in (j * 8)..<n where raw[i] != KVTierCache.chunkByte(seed, i) { return false }
            return true
        }
    }
}
