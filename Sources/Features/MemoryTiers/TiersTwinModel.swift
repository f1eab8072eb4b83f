import Foundation
import Scheduling

/// Feature "tiers" in the digital twin: the memory hosts' block stores (the same `TieredBlockStore`
/// over `VirtualTier`s: capacity, LRU eviction, demotion, promotion, on sizes at kv_bytes_scale)
/// and what the GPU agents' `KVTierCache` and `WeightStreamer` do with them, on virtual time,
/// with the same offload policy:
/// - a request with prefix keys looks its longest cached prefix up on the host that owns its first
///   chunk; the policy decides whether loading beats prefill; loaded, it joins its engine with
///   those tokens computed once the modelled load time has passed;
/// - once prefilled, its whole chunks go to that host in the tier the policy picks;
/// - offloaded weights stream at the chosen tier's figures; preempted requests swap out and back
///   when the policy says so.
/// A host that crashed answers nothing: until the failure detector notices, a lookup waits out
/// the agent's timeout and the request is prefilled; after, the host is gone from the agents'
/// list. When it comes back its DRAM and CXL are empty and its NVMe is as it was.
public final class TiersTwinModel {
    public struct Tier: Sendable {
        public var kind: String
        /// Bytes held (at kv_bytes_scale), as the topology gives them.
        public var capacityBytes: Int
        public var figures: TierFigures
        public init(kind: String, capacityBytes: Int, figures: TierFigures) { self.kind = kind; self.capacityBytes = capacityBytes; self.figures = figures }
    }
    public struct Host: Sendable {
        public var node: String
        public var tiers: [Tier]
        public init(node: String, tiers: [Tier]) { self.node = node; self.tiers = tiers }
    }
    public struct Settings: Sendable {
        public var policy: String
        public var hosts: [Host]
        public var linkBytesPerSecond: Double
        public var linkLatencySeconds = 10e-6
        public var kvBytesScale: Double
        /// Trace seconds a GPU agent waits for a host that does not answer (its timeout × time scale).
        public var lookupTimeout: Double
        /// Where the tier figures come from ("measured on the testbed", "nominal").
        public var figuresSource: String
        public init(policy: String, hosts: [Host], linkBytesPerSecond: Double, kvBytesScale: Double, lookupTimeout: Double, figuresSource: String) {
            self.policy = policy; self.hosts = hosts; self.linkBytesPerSecond = linkBytesPerSecond; self.kvBytesScale = kvBytesScale
            self.lookupTimeout = lookupTimeout; self.figuresSource = figuresSource
        }

        /// Figures for a tier when none were measured: D2.1's DRAM and CXL (DRAM 10 GB/s and 100 ns
        /// as a reference, CXL at 51/70 of its bandwidth and +154 % latency) and a datacenter
        /// NVMe drive (1 GB/s, 100 µs). Labelled nominal wherever they are used.
        public static func nominal(_ kind: String) -> TierFigures {
            switch kind {
            case "dram": return TierFigures(kind: kind, bandwidthBytesPerSecond: 10e9, latencySeconds: 100e-9)
            case "cxl": return TierFigures(kind: kind, bandwidthBytesPerSecond: 10e9 * 51 / 70, latencySeconds: 254e-9)
            default: return TierFigures(kind: kind, bandwidthBytesPerSecond: 1e9, latencySeconds: 100e-6)
            }
        }
    }

    public let settings: Settings
    public let policy: OffloadPolicy
    private var stores: [String: TieredBlockStore] = [:]
    /// Hosts crashed (nil: up); and whether the agents were told (detected).
    private var crashed: [String: Bool] = [:]
    private var seen: [String: Int] = [:]
    /// What the agents counted, as `KVCacheStats` names them.
    public private(set) var counters: [String: Int] = [:]

    public init(_ settings: Settings) throws {
        guard let p = OffloadPolicies.named(settings.policy) else {
            throw BlockStoreError(.tierUnavailable, "unknown offload policy '\(settings.policy)' (known: \(OffloadPolicies.names.joined(separator: ", ")))")
        }
        self.settings = settings
        self.policy = p
        for h in settings.hosts { stores[h.node] = try Self.store(h, keepNVMeOf: nil) }
    }

    private static func store(_ h: Host, keepNVMeOf old: TieredBlockStore?) throws -> TieredBlockStore {
        let tiers = h.tiers.compactMap { t in TierKind(rawValue: t.kind).map { (VirtualTier($0) as TierBackend, capacity: t.capacityBytes) } }
        let s = try TieredBlockStore(tiers: tiers)
        s.pace = { _ in }
        // NVMe survives a restart: what was there is there again.
        if let old { for k in old.keys where old.tier(of: k) == .nvme { if let n = old.size(of: k) { _ = try? s.put(k, [UInt8](repeating: 0, count: n), tier: .nvme) } } }
        return s
    }

    private var liveHosts: [Host] { settings.hosts.filter { crashed[$0.node] != true }.sorted { $0.node < $1.node } }

    /// The host the agents ask for a prefix (as `KVTierCache.host(for:)`): among those they know of.
    private func host(for keys: [String]) -> Host? {
        let known = settings.hosts.filter { crashed[$0.node] == nil || crashed[$0.node] == false }.sorted { $0.node < $1.node }
        guard let first = keys.first, !known.isEmpty else { return nil }
        return known[PrefixKeys.owner(of: first, among: known.count)]
    }

    public func hostCrashed(_ node: String) { if stores[node] != nil { crashed[node] = false } }
    /// The failure detector noticed: the agents drop the host from their list.
    public func hostDetected(_ node: String) { if crashed[node] == false { crashed[node] = true } }
    public func hostUp(_ node: String) {
        guard let h = settings.hosts.first(where: { $0.node == node }), crashed[node] != nil else { return }
        crashed[node] = nil
        stores[node] = try? Self.store(h, keepNVMeOf: stores[node])
    }

    private func figures(_ h: Host) -> [TierFigures] { h.tiers.map(\.figures) }
    private func bump(_ k: String, _ n: Int = 1) { counters[k, default: 0] += n }

    // MARK: prefixes

    /// A request with prefix keys reaches a replica at `t`: the prompt tokens it may skip and when
    /// it may run.
    public func arrived(_ q: ServiceRequest, model: InferenceModel, backlog: Int, maxBatchedTokens: Int, at t: Double, localChunks: Int = 0) -> (cached: Int, readyAt: Double) {
        let local = localChunks * q.prefixChunkTokens
        let chunk = q.prefixChunkTokens
        guard chunk > 0, !q.prefixKeys.isEmpty else { return (local, t) }
        bump("lookups"); bump("prompt_tokens", q.prefill)
        for k in q.prefixKeys { seen[k, default: 0] += 1 }
        guard policy.name != "none", let h = host(for: q.prefixKeys) else { return (local, t) }
        let usable = min(q.prefixKeys.count, (q.prefill - 1) / chunk)
        guard usable > localChunks else { return (local, t) }
        // A crashed host not yet noticed: the lookup times out, then the prompt is prefilled.
        if crashed[h.node] == false { bump("fallbacks"); return (local, t + settings.lookupTimeout) }
        guard let store = stores[h.node] else { return (local, t) }
        let keys = Array(q.prefixKeys[localChunks..<usable])
        let n = store.longestPrefix(keys)
        guard n > 0, let tierKind = store.tier(of: keys[0]) else { return (local, t) }
        let tokens = n * chunk
        let per = model.arch.kvBytesPerToken / Double(model.tensorParallel)
        let fig = h.tiers.first { $0.kind == tierKind.rawValue }?.figures ?? Settings.nominal(tierKind.rawValue)
        var c = PrefixChoice(tokens: tokens, bytes: Double(tokens) * per, tier: fig, linkBytesPerSecond: settings.linkBytesPerSecond,
                             linkLatencySeconds: settings.linkLatencySeconds, recomputeSeconds: model.prefillSeconds(tokens: tokens, budget: maxBatchedTokens))
        c.gpuBacklog = max(0, backlog)
        let (load, reason) = policy.load(c)
        bump("decision/" + reason)
        guard load else { return (local, t) }
        for k in keys.prefix(n) { _ = try? store.get(k) }   // a hit promotes, as on the host
        bump("hits"); bump("hit_tokens", tokens)
        return (local + tokens, t + c.loadSeconds)
    }

    /// A request's prompt is prefilled: its whole chunks not held yet go to the owning host.
    public func prefilled(_ q: ServiceRequest, model: InferenceModel, maxBatchedTokens: Int) {
        let chunk = q.prefixChunkTokens
        guard chunk > 0, policy.name != "none", let h = host(for: q.prefixKeys), crashed[h.node] == nil, let store = stores[h.node] else { return }
        let full = min(q.prefixKeys.count, q.prefill / chunk)
        let per = model.arch.kvBytesPerToken / Double(model.tensorParallel)
        let held = max(8, Int((Double(chunk) * per * settings.kvBytesScale).rounded()))
        let recompute = model.prefillSeconds(tokens: chunk, budget: maxBatchedTokens)
        for k in q.prefixKeys.prefix(full) where !store.exists(k) {
            let placement = ChunkPlacement(bytes: Double(chunk) * per, tiers: figures(h), linkBytesPerSecond: settings.linkBytesPerSecond,
                                           linkLatencySeconds: settings.linkLatencySeconds, recomputeSeconds: recompute, seen: seen[k] ?? 1)
            let (tier, reason) = policy.storeTier(placement)
            bump("decision/store: " + reason)
            guard let tier, let kind = TierKind(rawValue: tier) else { continue }
            if (try? store.put(k, [UInt8](repeating: 0, count: held), tier: kind)) != nil { bump("stored_chunks") }
        }
    }

    // MARK: weights and swaps

    /// Seconds to stream a replica's offloaded layers once, from the first live host's tier the
    /// policy picks; nil when there is none (the replica stalls).
    public func weightStreamSeconds(_ plan: WeightOffloadPlan) -> Double? {
        guard let h = liveHosts.first, let tier = policy.weightTier(figures(h)).tier, let fig = h.tiers.first(where: { $0.kind == tier })?.figures else { return nil }
        return plan.streamSeconds(tier: fig, linkBytesPerSecond: settings.linkBytesPerSecond, linkLatencySeconds: settings.linkLatencySeconds)
    }

    /// The engines' swap decision (nil: preempted requests are recomputed), and the modelled
    /// seconds of one way of a swap of `blocks` blocks.
    public func swapDecision(blockTokens: Int) -> (@Sendable (InferenceModel, Int, Int) -> Bool)? {
        guard policy.name != "none", let h = liveHosts.first, let name = policy.swapTier(figures(h)).tier,
              let tier = h.tiers.first(where: { $0.kind == name })?.figures else { return nil }
        let policy = self.policy, link = settings.linkBytesPerSecond, lat = settings.linkLatencySeconds
        return { @Sendable model, blocks, tokens in
            let bytes = Double(blocks * blockTokens) * model.arch.kvBytesPerToken / Double(model.tensorParallel)
            let c = PrefixChoice(tokens: tokens, bytes: bytes, tier: tier, linkBytesPerSecond: link, linkLatencySeconds: lat,
                                 recomputeSeconds: model.prefillSeconds(tokens: tokens, budget: 2048))
            return policy.swaps(c).swap
        }
    }

    public func swapSeconds(model: InferenceModel, blocks: Int, blockTokens: Int) -> Double? {
        guard let h = liveHosts.first, let name = policy.swapTier(figures(h)).tier, let tier = h.tiers.first(where: { $0.kind == name })?.figures else { return nil }
        let bytes = Double(blocks * blockTokens) * model.arch.kvBytesPerToken / Double(model.tensorParallel)
        return PrefixChoice(tokens: 0, bytes: bytes, tier: tier, linkBytesPerSecond: settings.linkBytesPerSecond,
                            linkLatencySeconds: settings.linkLatencySeconds, recomputeSeconds: 0).loadSeconds
    }

    /// Modelled seconds one way for a migration's KV staged on a memory host (`KVTierCache+Staging`):
    /// the tier the policy swaps to, or the host's fastest.
    public func stageSeconds(model: InferenceModel, blocks: Int, blockTokens: Int) -> Double? {
        guard let h = liveHosts.first else { return nil }
        let all = h.tiers.map(\.figures)
        guard let tier = policy.swapTier(figures(h)).tier.flatMap({ n in all.first { $0.kind == n } })
                ?? all.max(by: { ($0.bandwidthBytesPerSecond, $1.kind) < ($1.bandwidthBytesPerSecond, $0.kind) }) else { return nil }
        let bytes = Double(blocks * blockTokens) * model.arch.kvBytesPerToken / Double(model.tensorParallel)
        return PrefixChoice(tokens: 0, bytes: bytes, tier: tier, linkBytesPerSecond: settings.linkBytesPerSecond,
                            linkLatencySeconds: settings.linkLatencySeconds, recomputeSeconds: 0).loadSeconds
    }

    public func countSwap(_ what: String, _ n: Int = 1) { bump(what, n) }

    /// Share of prompt tokens whose KV came from a tier.
    public var hitRatio: Double {
        let p = counters["prompt_tokens"] ?? 0
        return p > 0 ? Double(counters["hit_tokens"] ?? 0) / Double(p) : 0
    }
}
