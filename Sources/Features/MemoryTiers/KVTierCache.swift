import Cluster
import DataPlane
import Foundation
import Logging
import Protocol
import Scheduling
import Wire

/// Feature "tiers", GPU-agent side: the replicas' KV prefixes on the memory hosts.
/// - A request with prefix keys asks the host that owns its first chunk which leading chunks it
///   holds (one lookup: each key names its whole prefix); the offload policy decides whether
///   loading them beats prefilling them; loaded chunks come over the data plane as real bytes (at
///   `kv_bytes_scale`), every byte checked, and the request joins its engine with that much of its
///   prompt already computed, once the load's modelled time (real bytes over the tier and the
///   emulated link, plus latencies) has passed. A host that is gone or answers wrong: the request
///   is prefilled as usual and the fallback is counted.
/// - Once a request's prompt is prefilled, its whole chunks not stored yet go to that host, in the
///   tier the policy picks (as LMCache stores after prefill).
///
/// The coordinator sends the policy and the memory hosts (`TierConfig`) whenever they change.
public final class KVTierCache: FeatureHandler, KVPrefixCache {
    public var feature: String { TierStoreHandler.feature }
    let replicas: EmulatedReplicas
    let client: TierClient
    private var clock: Clock = SystemClock.shared
    var logger = Logger(label: "strato.tiers.gpu")
    public internal(set) var config = TierConfig()
    var policy: OffloadPolicy = NoOffload()
    public internal(set) var stats = KVCacheStats()
    /// Preempted requests' KV on a memory host, by request.
    var swaps: [String: SwapRecord] = [:]
    var swapSerial = 0
    /// Tokens of a loading request's prompt already in its GPU's prefix cache.
    private var localTokens: [String: Int] = [:]
    /// Chunks this agent stored (or saw held), so it does not send them again; bounded.
    private var stored = Set<String>()
    private var storedOrder: [String] = []
    /// How many requests have carried each chunk key (prefix popularity).
    private var seen: [String: Int] = [:]
    private var statsSentAt: Int64 = 0

    public init(replicas: EmulatedReplicas, plane: DataPlane) {
        self.replicas = replicas
        self.client = TierClient(plane: plane)
        self.weights = WeightStreamer(replicas: replicas, client: client)
        replicas.prefixCache = self
    }

    /// Offloaded weights of replicas whose model does not fit their GPUs.
    let weights: WeightStreamer

    public func attach(_ context: NodeContext) { clock = context.clock; logger = context.logger; weights.clock = context.clock; weights.logger = context.logger }

    /// How long a lookup or load may take before the request is prefilled instead.
    public var timeoutNanos: Int64 {
        get { client.timeoutNanos }
        set { client.timeoutNanos = newValue }
    }

    // MARK: Commands and reports

    public func execute(_ body: [UInt8], commandID: UInt64, wallNanos: Int64) -> FeatureOutcome {
        guard let c = try? TierCommand(serializedBytes: body) else { return .refused("not a TierCommand") }
        switch c.action {
        case .config(let cfg)?:
            guard let p = OffloadPolicies.named(cfg.policy) else { return .refused("unknown offload policy '\(cfg.policy)' (known: \(OffloadPolicies.names.joined(separator: ", ")))") }
            if cfg.version < config.version { return FeatureOutcome(ok: true, detail: "config \(cfg.version) is older than \(config.version): kept") }
            // Hosts that changed (one died, or came back with DRAM and CXL empty): what this agent
            // stored may be gone, so chunks are offered again (the host keeps one copy per key).
            if cfg.hosts != config.hosts { stored.removeAll(); storedOrder.removeAll() }
            config = cfg
            policy = p
            stats.policy = p.name
            weights.configure(cfg, policy: p)
            configureSwap()
            return FeatureOutcome(ok: true, detail: "offload policy \(p.name), \(cfg.hosts.count) memory hosts")
        case .diskFault?:
            return .refused("a disk fault is for memory hosts, not a GPU agent")
        case nil:
            return .refused("a TierCommand with no action")
        }
    }

    public func reports(wallNanos: Int64) -> [FeatureReport] {
        let now = clock.monotonicNanos()
        let g = replicas.gpuPrefix
        stats.gpuHits = UInt64(g.hits); stats.gpuHitTokens = UInt64(g.hitTokens); stats.gpuPromptTokens = UInt64(g.promptTokens)
        guard stats.lookups > 0 || stats.storedChunks > 0 || !weights.streams.isEmpty || stats.swapOuts > 0 || stats.swapFallbacks > 0 || stats.stagedOuts + stats.stagedIns > 0 || g.hits > 0, now - statsSentAt >= 1_000_000_000 else { return [] }
        statsSentAt = now
        stats.weights = weights.report(wallNanos: wallNanos)
        let (preempted, swapped) = replicas.preemptionCounts
        if replicas.remoteSwap != nil { stats.swapDeclined = UInt64(max(0, preempted - swapped)) }
        return [report(key: "kv", stats)]
    }

    public var isPumped: Bool { true }
    public func pump(wallNanos: Int64) {
        client.expire()
        let done = finishedQueue
        finishedQueue.removeAll()
        for (q, replica) in done { store(q, replica: replica) }
        weights.pump(wallNanos: wallNanos)
        pumpSwaps(wallNanos: wallNanos)
    }
    public var nextPumpDue: Int64? {
        if !finishedQueue.isEmpty { return clock.monotonicNanos() }
        // Streamed weights: a round follows each engine step.
        if !weights.streams.isEmpty { return min(client.nextExpiry ?? .max, clock.monotonicNanos() + 5_000_000) }
        // Swaps: preemptions and room coming back are noticed within 10 ms.
        if replicas.remoteSwap != nil || !swaps.isEmpty { return min(client.nextExpiry ?? .max, clock.monotonicNanos() + 10_000_000) }
        return client.nextExpiry
    }
    /// Prefilled requests whose chunks are still to store (the replicas tell of them while they
    /// step their engines; storing waits for the next pump).
    private var finishedQueue: [(InferenceRequest, String)] = []

    // MARK: Where a prefix lives

    /// The host that owns a prefix: by its first chunk's key, so every agent asks the same one.
    func host(for keys: [String]) -> MemoryHostAddress? {
        guard let first = keys.first, !config.hosts.isEmpty else { return nil }
        let hosts = config.hosts.sorted { $0.node < $1.node }
        return hosts[PrefixKeys.owner(of: first, among: hosts.count)]
    }

    /// A chunk's bytes: a function of its key and position, so whoever reads it checks every byte.
    static func chunkByte(_ seed: UInt64, _ i: Int) -> UInt8 {
        UInt8(truncatingIfNeeded: ((seed &+ UInt64(i >> 3)) &* 0x9E37_79B9_7F4A_7C15) >> (UInt64(i & 7) * 8))
    }
    static func seed(_ key: String) -> UInt64 {
        var h: UInt64 = 0x84222325cbf29ce4
        for b in key.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
        return h
    }
    static func chunk(_ key: String, bytes n: Int) -> [UInt8] {
        let s = seed(key)
        return (0..<n).map { chunkByte(s, $0) }
    }

    // MARK: Requests

    public func arrived(_ q: InferenceRequest, replica: String, arrival: Double, localChunks: Int) -> Bool {
        let chunkTokens = Int(q.prefixChunkTokens)
        guard chunkTokens > 0 else { return false }
        stats.lookups += 1
        stats.promptTokens += UInt64(q.prefillTokens)
        for k in q.prefixKeys { seen[k, default: 0] += 1 }
        guard policy.name != "none", let host = host(for: q.prefixKeys) else { return false }
        // Only whole chunks are stored, and at least one prompt token is always computed.
        let usable = min(q.prefixKeys.count, (Int(q.prefillTokens) - 1) / chunkTokens)
        // The chunks after those in the GPU's own cache (each key names its whole prefix).
        guard usable > localChunks else { return false }
        let keys = Array(q.prefixKeys[localChunks..<usable])
        do {
            try client.get(keys, from: host.peer, prefixOnly: true, existsOnly: true) { [weak self] r in
                self?.lookedUp(q, replica: replica, arrival: arrival, host: host, result: r)
            }
            localTokens[q.requestID] = localChunks * chunkTokens
            return true
        } catch {
            stats.fallbacks += 1
            logger.warning("tiers: lookup of \(q.requestID) on \(host.node) could not start: \(error)")
            return false
        }
    }

    func traceNow(_ replica: String) -> Double? { replicas.clock(of: replica)?.trace(wall: clock.wallNanos()) }

    /// Admits the request with what was loaded (0: prefilled as usual).
    private func admit(_ q: InferenceRequest, replica: String, cached: Int, readyAt: Double?, arrival: Double) {
        let now = traceNow(replica) ?? arrival
        let cached = cached + (localTokens.removeValue(forKey: q.requestID) ?? 0)
        if let why = replicas.admitLoaded(q, replica: replica, cached: cached, readyAt: max(now, readyAt ?? now), arrival: arrival) {
            logger.warning("tiers: \(why)")
        }
    }

    private func lookedUp(_ q: InferenceRequest, replica: String, arrival: Double, host: MemoryHostAddress, result: Result<TierClient.Fetched, TierClient.ClientError>) {
        guard case .success(let f) = result else {
            if case .failure(let e) = result { logger.warning("tiers: lookup for \(q.requestID) failed, prefilling instead: \(e)") }
            stats.fallbacks += 1
            admit(q, replica: replica, cached: 0, readyAt: nil, arrival: arrival)
            return
        }
        let chunks = f.header.blocks.count
        // What the host holds need not be stored again from here.
        for b in f.header.blocks { remember(b.key) }
        guard chunks > 0, let per = replicas.kvBytesPerToken(replica: replica),
              let recompute = replicas.prefillSeconds(chunks * Int(q.prefixChunkTokens), replica: replica) else {
            admit(q, replica: replica, cached: 0, readyAt: nil, arrival: arrival)
            return
        }
        let tokens = chunks * Int(q.prefixChunkTokens)
        let tierName = f.header.blocks[0].tier
        let fig = host.tiers.first { $0.kind == tierName }
        let choice = PrefixChoice(tokens: tokens, bytes: Double(tokens) * per.real,
                                  tier: TierFigures(kind: tierName, bandwidthBytesPerSecond: (fig?.bandwidthGbps ?? 0) * 1e9, latencySeconds: (fig?.latencyNs ?? 0) * 1e-9),
                                  linkBytesPerSecond: config.linkBytesPerSecond, linkLatencySeconds: config.linkLatencySeconds, recomputeSeconds: recompute)
        var c = choice
        // This request is counted among those loading: the others wait for the GPU.
        c.gpuBacklog = max(0, (replicas.backlog(replica: replica) ?? 0) - 1)
        let (load, reason) = policy.load(c)
        stats.decisions[reason, default: 0] += 1
        guard load else {
            admit(q, replica: replica, cached: 0, readyAt: nil, arrival: arrival)
            return
        }
        let keys = f.header.blocks.map(\.key)
        do {
            try client.get(keys, from: host.peer, prefixOnly: true) { [weak self] r in
                self?.loaded(q, replica: replica, arrival: arrival, choice: choice, result: r)
            }
        } catch {
            stats.fallbacks += 1
            admit(q, replica: replica, cached: 0, readyAt: nil, arrival: arrival)
        }
    }

    private func loaded(_ q: InferenceRequest, replica: String, arrival: Double, choice: PrefixChoice, result: Result<TierClient.Fetched, TierClient.ClientError>) {
        guard case .success(let f) = result, !f.header.blocks.isEmpty else {
            if case .failure(let e) = result { logger.warning("tiers: load for \(q.requestID) failed, prefilling instead: \(e)") }
            stats.fallbacks += 1
            admit(q, replica: replica, cached: 0, readyAt: nil, arrival: arrival)
            return
        }
        // Every byte as it was stored; a chunk that differs ends the usable prefix there.
        var good = 0
        for (i, b) in f.header.blocks.enumerated() {
            let s = Self.seed(b.key)
            let bytes = f.bytes(i)
            var same = true
            var j = 0
            for v in bytes { if v != Self.chunkByte(s, j) { same = false; break }; j += 1 }
            guard same else { stats.fallbacks += 1; logger.warning("tiers: chunk \(b.key) for \(q.requestID) came back different; the prefix ends before it"); break }
            good += 1
            stats.loadedBytes += b.bytes
            stats.loadedByTier[b.tier, default: 0] += b.bytes
        }
        let tokens = good * Int(q.prefixChunkTokens)
        guard good > 0 else { admit(q, replica: replica, cached: 0, readyAt: nil, arrival: arrival); return }
        var c = choice
        c.bytes = choice.bytes * Double(good) / Double(max(1, choice.tokens / Int(q.prefixChunkTokens)))
        stats.hits += 1
        stats.hitTokens += UInt64(tokens)
        stats.loadSeconds += c.loadSeconds
        admit(q, replica: replica, cached: tokens, readyAt: arrival + c.loadSeconds, arrival: arrival)
    }

    public func prefilled(_ q: InferenceRequest, replica: String) { finishedQueue.append((q, replica)) }

    private func store(_ q: InferenceRequest, replica: String) {
        let chunkTokens = Int(q.prefixChunkTokens)
        guard chunkTokens > 0, policy.name != "none", let host = host(for: q.prefixKeys),
              let per = replicas.kvBytesPerToken(replica: replica), per.held > 0 else { return }
        let full = min(q.prefixKeys.count, Int(q.prefillTokens) / chunkTokens)
        let bytes = max(8, Int((Double(chunkTokens) * per.held).rounded()))
        let figures = host.tierFigures
        let recompute = replicas.prefillSeconds(chunkTokens, replica: replica) ?? 0
        var byTier: [String: [(key: String, bytes: [UInt8])]] = [:]
        for k in q.prefixKeys.prefix(full) where !stored.contains(k) {
            let placement = ChunkPlacement(bytes: Double(chunkTokens) * per.real, tiers: figures, linkBytesPerSecond: config.linkBytesPerSecond,
                                           linkLatencySeconds: config.linkLatencySeconds, recomputeSeconds: recompute, seen: seen[k] ?? 1)
            let (tier, reason) = policy.storeTier(placement)
            stats.decisions["store: " + reason, default: 0] += 1
            guard let tier else { continue }
            byTier[tier, default: []].append((k, Self.chunk(k, bytes: bytes)))
            remember(k)
        }
        for (tier, blocks) in byTier.sorted(by: { $0.key < $1.key }) {
            do {
                try client.put(blocks, to: host.peer, tier: TierKind(rawValue: tier)) { [weak self] r in
                    guard let self else { return }
                    switch r {
                    case .success(let n):
                        self.stats.storedChunks += UInt64(blocks.count)
                        self.stats.storedBytes += UInt64(n)
                        self.stats.storedByTier[tier, default: 0] += UInt64(n)
                    case .failure(let e):
                        // Not stored: a later request may try again.
                        for b in blocks { self.stored.remove(b.key) }
                        self.logger.warning("tiers: storing \(blocks.count) chunks on \(host.node) failed: \(e)")
                    }
                }
            } catch { for b in blocks { stored.remove(b.key) } }
        }
    }

    private func remember(_ key: String) {
        if stored.insert(key).inserted { storedOrder.append(key) }
        if storedOrder.count > 200_000 {
            for k in storedOrder.prefix(100_000) { stored.remove(k) }
            storedOrder.removeFirst(100_000)
        }
    }
}
